"""Build-time edit of JupyterHub inside the single-user image: its database layer is imported
where the hub uses it, not when a user's server starts.

jupyterhub-singleuser is jupyter-server plus JupyterHub's extension, and that extension's imports
(`jupyterhub.log`, `jupyterhub.services.auth`) pulled in the hub's own database layer at module
level: SQLAlchemy, alembic, `jupyterhub.orm`, the hub's web handlers, `cryptography`. None of it
runs in a user's server. It was most of the difference between a hub spawn and the same image
started as plain jupyter-server (issue 12's floor): natively, on this project's image, importing the
extension took 0.92-0.94 s with it and 0.54-0.58 s without (297 modules fewer); a lab VM under
emulation pays ~14 times that at every start.

Four module-level imports move to where they are used (each edit names the exact upstream text it
replaces; the hub's own image is not edited):
- `log.py`: `HealthCheckHandler` (a hub handler: `log_request` asks for it only if the hub's pages
  module is loaded; no single-user handler can be one);
- `metrics.py`: `orm` (used by the hub's active-users count only);
- `utils.py`: `SQLAlchemyError` (used by `catch_db_error`, a decorator of the hub's app);
- `scopes.py`: `sqlalchemy`, `orm`, `roles` (used inside the functions that take database objects).

Run in the single-user Dockerfile's build stage, on the locked JupyterHub:
    python3 lazy_hub_imports.py /opt/jupyter/lib/python3.11/site-packages/jupyterhub
    python3 lazy_hub_imports.py --verify
It edits all four files or none: text that is not there exactly once (another JupyterHub than the
lock's) fails the build with the file named, so a lock update cannot silently drop or misapply an
edit. `--verify` (after compileall) fails the build if the extension still imports HUB_ONLY.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

# The lock's JupyterHub (bundle/singleuser-constraints.txt); the edits were written against it.
FOR_VERSION = "6.1.1"

# The modules a user's server must not import at its start.
HUB_ONLY = ("sqlalchemy", "alembic", "jupyterhub.orm", "jupyterhub.handlers")

_LAZY = '''import importlib as _importlib


class _Lazy:
    """A module imported at its first use (cablab: a single-user server never uses it)."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        return getattr(_importlib.import_module(self._name), attr)


'''

# file -> [(upstream text, replacement)]: each upstream text must occur exactly once.
EDITS: dict[str, list[tuple[str, str]]] = {
    "log.py": [
        ("from .handlers.pages import HealthCheckHandler\n", "import sys\n"),
        ("        status < 300 and isinstance(handler, StaticFileHandler | HealthCheckHandler)\n",
         "        status < 300 and isinstance(handler, StaticFileHandler | _health_check_handler())\n"),
        ("def log_request(handler):\n",
         "def _health_check_handler():\n"
         '    """The hub\'s HealthCheckHandler if the hub\'s pages are loaded (cablab: not imported for it)."""\n'
         '    pages = sys.modules.get("jupyterhub.handlers.pages")\n'
         "    return pages.HealthCheckHandler if pages is not None else StaticFileHandler\n"
         "\n\n"
         "def log_request(handler):\n"),
    ],
    "metrics.py": [
        ("from . import orm\nfrom .utils import utcnow\n", "from .utils import utcnow\n"),
        ("        now = utcnow()\n        cutoffs = {\n",
         "        from . import orm  # cablab: here, not at the top (single-user servers import this module)\n"
         "\n"
         "        now = utcnow()\n        cutoffs = {\n"),
    ],
    "utils.py": [
        ("from sqlalchemy.exc import SQLAlchemyError\n", ""),
        ('    """Catch and rollback database errors"""\n\n    @functools.wraps(f)\n',
         '    """Catch and rollback database errors"""\n'
         "    from sqlalchemy.exc import SQLAlchemyError  # cablab: when a hub handler is decorated\n"
         "\n    @functools.wraps(f)\n"),
    ],
    "scopes.py": [
        ("import sqlalchemy as sa\n", _LAZY + 'sa = _Lazy("sqlalchemy")\n'),
        ("from . import orm, roles\n", 'orm = _Lazy("jupyterhub.orm")\nroles = _Lazy("jupyterhub.roles")\n'),
    ],
}


class NotApplicable(Exception):
    """The JupyterHub found is not the one the edits were written for."""


def edited(name: str, text: str) -> str:
    """`text` (jupyterhub/<name>) with its edits; NotApplicable if one's upstream text is not there once."""
    for old, new in EDITS[name]:
        count = text.count(old)
        if count != 1:
            raise NotApplicable(f"jupyterhub/{name}: {old.strip()!r} found {count} times, not once "
                                f"(these edits are for JupyterHub {FOR_VERSION})")
        text = text.replace(old, new)
    return text


def apply(package: Path) -> list[str]:
    """Edit the four files of the JupyterHub package at `package`, all or none; the names edited."""
    new = {name: edited(name, (package / name).read_text(encoding="utf-8")) for name in EDITS}
    for name, text in new.items():
        (package / name).write_text(text, encoding="utf-8")
    return sorted(new)


def imported_hub_only(modules: Sequence[str] = ("jupyterhub.singleuser.extension",)) -> list[str]:
    """The HUB_ONLY modules loaded once `modules` are imported (here; by default JupyterHub's
    single-user extension, which needs jupyter-server)."""
    import importlib

    for name in modules:
        importlib.import_module(name)
    return sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in HUB_ONLY))


def main(argv: Sequence[str]) -> int:
    if list(argv) == ["--verify"]:  # after the edits, in a fresh interpreter
        loaded = imported_hub_only()
        if loaded:
            print(f"lazy_hub_imports: the single-user extension still imports {', '.join(loaded[:8])}",
                  file=sys.stderr)
            return 1
        print("lazy_hub_imports: the single-user extension imports none of " + ", ".join(HUB_ONLY))
        return 0
    if len(argv) != 1:
        print("usage: lazy_hub_imports.py SITE_PACKAGES/jupyterhub | --verify", file=sys.stderr)
        return 2
    try:
        done = apply(Path(argv[0]))
    except (NotApplicable, OSError) as exc:
        print(f"lazy_hub_imports: {exc}: update cablab_cluster/bundle/lazy_hub_imports.py with the lock",
              file=sys.stderr)
        return 1
    print(f"lazy_hub_imports: edited {', '.join(done)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
