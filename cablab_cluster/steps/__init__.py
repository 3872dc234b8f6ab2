"""Steps: each one a module here plus its template beside it (`<name>.py` + `<name>.sh.j2`).

A step module registers itself once with `register(...)`: its kind (the name in the log
line), its place in a host's script (`order`: ascending, with gaps), its title, when it
applies to a host (a function of cluster and host), its typed parameters (a frozen
dataclass, whose fields are the template's variables), extra render context, its packages
per OS family as data (`{"apt": (...), "dnf": (...)}`, installed by the prelude's
`ensure_packages`) and the files an operator must bring to the host (`Input`s).

Every module of this package is imported by `registry()`: adding a step is adding a
module and its template, nothing else. A step defined elsewhere (a test, a plugin) is
found once its module is imported.
"""

from __future__ import annotations

import importlib
import pkgutil
import shlex
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Generic, Mapping, TypeVar, Union

from ..spec import Cluster, Host

if TYPE_CHECKING:
    from ..render import Renderer

P = TypeVar("P")
Packages = Mapping[str, tuple[str, ...]]  # OS package family (apt, dnf) -> package names


class InputKind(str, Enum):
    JOIN_TOKEN = "join-token"  # the swarm join token, written by the first manager's run
    SECRET = "secret"  # a file of the spec's secrets directory
    IMAGE = "image"  # a saved image (`source: load`)
    CUBE = "cube"  # the synthetic cube's tarball (`cablab-cluster cube --tarball`)


@dataclass(frozen=True)
class Input:
    """A file the operator puts on a host before its script runs (the script names it when missing)."""

    kind: InputKind
    path: PurePosixPath  # where the script expects it on the host
    mode: str
    key: str  # which one: the secret's file name, the image key (hub, singleuser), the token's role, the cube
    origin: str  # where it comes from, in the operator's words
    from_host: str | None = None  # copied from the same path on this host (after that host's run)
    local: str | None = None  # else the file on the operator's machine, relative to the spec's directory
    unless: str | None = None  # a shell test on the host: when it succeeds the file is not needed

    @property
    def dir_mode(self) -> str:
        """The mode of the directory it goes in: root's only for a file only root may read."""
        return "0700" if self.mode == "0600" else "0755"

    def copy_command(self, host: str) -> str:
        """The operator's command, run on their machine in the spec's directory, that puts this
        file on `host` (ssh + sudo; no scp: nothing nests, modes are exact)."""
        put = (f"sudo install -d -m {self.dir_mode} {shlex.quote(str(self.path.parent))} && "
               f"sudo install -m {self.mode} /dev/stdin {shlex.quote(str(self.path))}")
        if self.from_host:
            get = shlex.join(["ssh", self.from_host, f"sudo cat {shlex.quote(str(self.path))}"])
            return f"{get} | {shlex.join(['ssh', host, put])}"
        return f"{shlex.join(['ssh', host, put])} < {shlex.quote(self.local or self.path.name)}"


def _always(c: Cluster, h: Host) -> bool:
    return True


def _no_inputs(c: Cluster, h: Host, params: Any) -> tuple[Input, ...]:
    return ()


def _no_context(r: Renderer, params: Any) -> Mapping[str, object]:
    return {}


@dataclass(frozen=True)
class StepType(Generic[P]):
    """What a step module registers (see the module docstring)."""

    kind: str
    order: int
    title: Union[str, Callable[[P], str]]
    params: Callable[[Cluster, Host], Union[P, list[P]]]  # a list: one step per item (the images)
    template: Path
    applies: Callable[[Cluster, Host], bool] = _always
    packages: Union[Packages, Callable[[P], Packages]] = field(default_factory=dict)
    inputs: Callable[[Cluster, Host, P], tuple[Input, ...]] = _no_inputs
    context: Callable[[Renderer, P], Mapping[str, object]] = _no_context

    def title_of(self, params: P) -> str:
        return self.title if isinstance(self.title, str) else self.title(params)

    def packages_of(self, params: P) -> Packages:
        return self.packages(params) if callable(self.packages) else self.packages


_REGISTRY: dict[str, StepType] = {}
_LOADED = False


def register(module: str, *, kind: str, order: int, title: Union[str, Callable[[P], str]],
             params: Callable[[Cluster, Host], Union[P, list[P]]], **more: Any) -> StepType[P]:
    """Register the step of `module` (pass `__name__`); its template is `<module file>.sh.j2`."""
    template = Path(sys.modules[module].__file__ or "").with_suffix(".sh.j2")
    if not template.is_file():
        raise ValueError(f"step {kind}: no template {template}")
    for other in _REGISTRY.values():
        if other.kind != kind and other.order == order:
            raise ValueError(f"step {kind}: order {order} is taken by {other.kind}")
    step: StepType[P] = StepType(kind=kind, order=order, title=title, params=params, template=template, **more)
    _REGISTRY[kind] = step
    return step


def unregister(kind: str) -> None:
    _REGISTRY.pop(kind, None)


def registry() -> tuple[StepType, ...]:
    """Every registered step, in the order they run on a host."""
    global _LOADED
    if not _LOADED:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True
    return tuple(sorted(_REGISTRY.values(), key=lambda s: s.order))


def template_dirs() -> list[Path]:
    """Where step templates (and the partials they include) are found: this package first."""
    dirs = [Path(__file__).parent]
    for step in registry():
        if step.template.parent not in dirs:
            dirs.append(step.template.parent)
    return dirs


def package_words(packages: Packages) -> str:
    """`ensure_packages`'s arguments: one shell word FAMILY=NAMES per family."""
    return " ".join(shlex.quote(f"{family}={' '.join(names)}") for family, names in packages.items())
