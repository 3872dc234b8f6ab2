"""The seed's `userlist` format: who may log in, who is admin.

One user per line, `name` or `name admin`. Unlike the seed's parser (which
crashed on a blank line and sent the hub into a restart loop), blank lines and
`#` comments are allowed and everything else is an error naming its line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# GitHub logins: alphanumerics and single hyphens, no leading/trailing hyphen, <= 39.
GITHUB_LOGIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")


@dataclass(frozen=True)
class User:
    name: str
    admin: bool = False


@dataclass(frozen=True)
class Userlist:
    users: tuple[User, ...]

    @property
    def allowed(self) -> tuple[str, ...]:
        return tuple(sorted(u.name for u in self.users))

    @property
    def admins(self) -> tuple[str, ...]:
        return tuple(sorted(u.name for u in self.users if u.admin))

    @property
    def first_user(self) -> str:
        """The first user who is not an admin (else the first): whom the lab's checks and drills log
        in as where a check has no user of its own."""
        return next((u for u in self.users if not u.admin), self.users[0]).name

    def render(self) -> str:
        return "".join(f"{u.name}{' admin' if u.admin else ''}\n" for u in self.users)


MAX_REPORTED = 5  # problems listed per file; the rest are counted
EXCERPT = 24  # characters of a bad line echoed back (the file may not be a userlist at all)


def _excerpt(text: str) -> str:
    """A short, escaped excerpt of a line: never more of the file than that."""
    cut = text[:EXCERPT]
    return repr(cut)[:-1] + "…" + repr(cut)[-1] if len(text) > EXCERPT else repr(cut)


class UserlistError(ValueError):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


def parse_userlist(text: str, source: str = "userlist") -> Userlist:
    users: dict[str, User] = {}
    errors: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        where = f"{source} line {number}"
        if len(fields) > 2 or (len(fields) == 2 and fields[1] != "admin"):
            errors.append(f"{where}: {_excerpt(line)} is not `name` or `name admin`")
            continue
        if not GITHUB_LOGIN.match(fields[0]):
            errors.append(f"{where}: {_excerpt(fields[0])} is not a GitHub login (letters, digits, single '-')")
            continue
        # JupyterHub lower-cases usernames; keep them as it will see them.
        name = fields[0].lower()
        if name in users:
            errors.append(f"{where}: {name!r} is listed twice")
            continue
        users[name] = User(name=name, admin=len(fields) == 2)
    if errors:
        more = len(errors) - MAX_REPORTED
        raise UserlistError(errors[:MAX_REPORTED] + ([f"{source}: … and {more} more"] if more > 0 else []))
    return Userlist(users=tuple(sorted(users.values(), key=lambda u: u.name)))
