"""The hub's database backup: `python3 cablab_backup.py backup-db SRC DST`, run by backup.sh inside
the running hub container (the hub keeps writing meanwhile).

Standard library only, and kept apart from cablab_hub.py on purpose: that module imports
JupyterHub, dockerspawner and oauthenticator, which took ~10 s of a lab VM's emulated CPU before the
copy began (measured: `docker exec` of cablab_hub.py's backup 10.96 s, of `python3 -c "import sqlite3"`
1.32 s). Delivered to the hub as a docker swarm config beside it.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import Sequence


def backup_db(src: str, dst: str) -> None:
    """A consistent copy of the sqlite database `src` while the hub keeps writing (sqlite's online
    backup), written next to `dst` and renamed into place, mode 0600."""
    tmp = f"{dst}.part"
    Path(tmp).unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(tmp)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    os.chmod(tmp, 0o600)
    os.replace(tmp, dst)


def main(argv: Sequence[str]) -> int:
    if len(argv) == 3 and argv[0] == "backup-db":
        backup_db(argv[1], argv[2])
        return 0
    print("usage: cablab_backup.py backup-db SRC DST", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
