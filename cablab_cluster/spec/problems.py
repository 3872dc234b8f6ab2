"""Problems: one thing wrong with a spec (key path, message, hint, line) and the
exception carrying them all; pydantic's errors mapped to Problems with their
spec line and a hint how to fix them.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Optional, Union

from pydantic import BaseModel

from .model import MEMORY_HINT, PATH_HINT, Cluster

# --------------------------------------------------------------------------
# Problems


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where, what, and how to fix it."""

    path: str
    message: str
    hint: str = ""
    line: Optional[int] = None  # 1-based line in the spec file

    def format(self, source: str = "") -> str:
        where = f"{source}:{self.line}: " if source and self.line else (f"{source}: " if source else "")
        text = f"{where}{self.path}: {self.message}"
        text = f"{text} (hint: {self.hint})" if self.hint else text
        # A last guard: a problem is one readable line, whatever the input held.
        return excerpt(text, MAX_LINE)


MAX_LINE = 1000  # characters of one problem line
MAX_ECHO = 60  # characters of a user's value echoed in a message


def excerpt(value: object, limit: int = MAX_ECHO) -> str:
    """`value` as one line of at most `limit` characters (+ '…'), control characters escaped."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= limit else text[:limit] + "…"


def quoted(value: object, limit: int = MAX_ECHO) -> str:
    """A user's value for a message: repr-quoted and cut to `limit` characters (quotes kept)."""
    text = repr(value)
    if len(text) <= limit + 2:
        return text
    close = text[-1] if text[-1] in "'\"" else ""
    return text[:limit + 1] + "…" + close


class SpecError(Exception):
    """The spec is invalid; carries every problem found."""

    def __init__(self, problems: list[Problem], source: str = ""):
        self.problems = problems
        self.source = source
        super().__init__("\n".join(p.format(source) for p in problems))

    def lines(self) -> list[str]:
        return [p.format(self.source) for p in self.problems]


# --------------------------------------------------------------------------
# Error locations → key paths, lines and hints


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"


def _parse_path(path: str) -> tuple:
    parts: list = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        parts.append(int(index) if index else name)
    return tuple(parts)


def _line(data: object, loc: tuple) -> Optional[int]:
    """1-based line of the deepest node of `loc` that exists in the YAML."""
    node, line = data, None
    for part in loc:
        try:
            if isinstance(node, dict) and part in node:
                line = node.lc.key(part)[0] + 1  # type: ignore[attr-defined]
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                line = node.lc.item(part)[0] + 1  # type: ignore[attr-defined]
                node = node[part]
            else:
                break
        except (AttributeError, KeyError, TypeError):
            break
    return line


def _with_line(p: Problem, data: object) -> Problem:
    return Problem(p.path, p.message, p.hint, _line(data, _parse_path(p.path)))


def _model_at(loc: tuple) -> Optional[type[BaseModel]]:
    """The model class that owns the mapping at `loc` (to suggest valid keys)."""
    model: object = Cluster
    keyed = False  # the previous part was a mapping of names (e.g. hub.users.overrides): skip the name
    for part in loc:
        if isinstance(part, int) or keyed:
            keyed = False
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        keyed = typing.get_origin(annotation) is dict
        model = _unwrap(typing.get_args(annotation)[1] if keyed else annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(tp: object) -> object:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType, tuple, list):
            args = [a for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else (args[0] if args else tp)
            if not models and len(args) != 1:
                return tp
        else:
            return tp


HINTS = {
    "missing": "add this key",
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "int_type": "write a whole number",
    "int_parsing": "write a whole number",
    "ip_address": "write an IP address, e.g. 192.168.56.11",
    "ip_any_address": "write an IP address, e.g. 192.168.56.11",
    "ipv4": "write an IP address, e.g. 192.168.56.11",
    "tuple_type": "write a YAML list, e.g. [a, b]",
    "list_type": "write a YAML list, e.g. [a, b]",
    "model_type": "write a mapping of keys",
    "model_attributes_type": "write a mapping of keys",
    "path_type": PATH_HINT,
    "path_chars": PATH_HINT,
    "block_device": "a block device path such as /dev/vdb",
    "version_number": 'quote it: `version: "20.10"`, `nfs_version: "4.2"` (unquoted, 20.10 is the number 20.1)',
    "requirement": "a pip requirement: name[extras] and version specifiers, no spaces, quotes, markers or URLs, "
                   "e.g. jupyterlab==4.2.5",
    "zone_id": "write the address without a zone id (%eth0): the cluster's addresses are global ones",
    "cpus_type": "write a number of CPUs, e.g. 1 or 0.5",
}


BOUNDS = {"less_than_equal": "write {} or less", "less_than": "write less than {}",
          "greater_than_equal": "write {} or more", "greater_than": "write more than {}"}
# Why a key's bound is what it is, where the number alone does not say.
BOUND_WHY = {
    ("heartbeat", "less_than_equal"): "three missed heartbeats mark a node down, and a server lost with its "
                                      "node must be noticed within 60 s",
}


def _from_pydantic(err: dict, data: object) -> Problem:
    loc = tuple(err["loc"])
    # Drop pydantic's union branch names (e.g. 'IPv4Address') from the location.
    loc = tuple(p for p in loc if not (isinstance(p, str) and p[:1].isupper()))
    kind = err["type"]
    message = err["msg"]
    hint = HINTS.get(kind, "")
    if kind == "extra_forbidden":
        key = loc[-1]
        model = _model_at(loc[:-1])
        allowed = list(model.model_fields) if model else []
        close = difflib.get_close_matches(str(key), allowed, n=1)
        message = f"unknown key {quoted(key)}"
        hint = (f"did you mean {close[0]!r}?" if close else "") + (f" valid keys: {', '.join(allowed)}" if allowed else "")
        hint = hint.strip()
    elif kind == "enum":
        message = f"{quoted(err.get('input'))} is not allowed"
        hint = f"use one of: {err['ctx']['expected']}"
    elif kind == "string_pattern_mismatch":
        message = f"{quoted(err.get('input'))} is not valid here"
        hint = _pattern_hint(loc)
    elif kind.startswith("ip_") or kind.startswith("ipv") or kind == "value_error" and "address" in str(loc[-1:]):
        message = f"{quoted(err.get('input'))} is not an IP address"
        hint = HINTS["ip_address"]
    elif kind == "literal_error":
        message = f"{quoted(err.get('input'))} is not allowed"
        hint = f"use one of: {err['ctx']['expected']}"
    elif kind in BOUNDS and "ctx" in err:
        hint = BOUNDS[kind].format(next(iter(err["ctx"].values())))
        why = BOUND_WHY.get((str(loc[-1]), kind))
        hint = f"{hint}: {why}" if why else hint
    elif kind == "value_error":
        message = str(err["ctx"]["error"]) if "ctx" in err else message
    return Problem(_path(loc), message, hint, _line(data, loc))


def _pattern_hint(loc: tuple) -> str:
    last = next((p for p in reversed(loc) if isinstance(p, str)), "")
    return {
        "name": "lower case letters, digits and '-' (a hostname or identifier)",
        "client_id": "the GitHub OAuth app's client id (letters, digits, '.', '_', '-')",
        "disks": "a block device path such as /dev/vdb",
        "version": "a version like 20.10 or 24.0.7",
        "owner": "numeric uid:gid, e.g. 1000:100",
        "mode": "an octal mode, e.g. 0755",
        "email": "an email address",
        "acme_directory": "an https:// URL of an ACME directory (A-Z a-z 0-9 . - _ ~ / + in the path)",
        "packages": "a pip requirement: name[extras] and version specifiers, no spaces, quotes, markers or URLs, "
                    "e.g. jupyterlab==4.2.5",
        "allowed_organizations": "a GitHub organisation, or org:team",
        "memory": MEMORY_HINT,
        "[key]": "a GitHub login (letters, digits, single '-' between them) of the userlist",
    }.get(str(last), "see the spec reference in the README")
