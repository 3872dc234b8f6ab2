"""The README's spec reference, generated from the model: one row per key with its
type, default and the description written beside the field (an attribute docstring).

    python -m cablab_cluster.spec.reference            # print the table
    python -m cablab_cluster.spec.reference --write README.md   # replace the block between the markers
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import types
import typing
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Annotated, Iterator, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from . import model
from .model import Cluster

START = "<!-- spec-reference:start -->"
END = "<!-- spec-reference:end -->"
NOTE = "<!-- generated from cablab_cluster/spec/model.py: python -m cablab_cluster.spec.reference --write README.md -->"

# Validators that name a type of their own.
_VALIDATED = {
    model._safe_path: "path",
    model._block_device: "block device",
    model._requirement: "pip requirement",
    model._cpus: "number",
}


def _one_line(text: str) -> str:
    return " ".join(text.split()).rstrip(".").replace("|", "\\|")


def _named(metadata: typing.Iterable[object]) -> str | None:
    for m in metadata:
        name = _VALIDATED.get(getattr(m, "func", None))  # type: ignore[arg-type]
        if name:
            return name
    return None


def _type(tp: object, metadata: typing.Iterable[object] = ()) -> str:
    named = _named(metadata)
    if named:
        return named
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _type(args[0], args[1:])
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if set(rest) == {ipaddress.IPv4Address, ipaddress.IPv6Address}:
            return "IP address"
        return " or ".join(_type(a) for a in rest)
    if origin is tuple:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"mapping of {_type(args[0])} to {_type(args[1])}"
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return " \\| ".join(f"`{m.value}`" for m in tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "mapping"
    return {bool: "bool", int: "int", float: "number", str: "string", PurePosixPath: "path",
            Path: "file (beside the spec)"}.get(tp, str(tp))  # type: ignore[call-overload]


def _value(v: object) -> str:
    if isinstance(v, Enum):
        return str(v.value)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, BaseModel):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.model_dump(exclude_defaults=True).items()) + "}"
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default is None:
        return ""
    if isinstance(field.default, BaseModel) and not field.default.model_fields_set:
        return ""
    return f"`{_value(field.default)}`"


def _inner_model(tp: object) -> tuple[type[BaseModel] | None, str]:
    """The model a field holds, and how its keys continue the path ('', '[]' or '.<key>')."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _inner_model(args[0])
    if origin is tuple and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0], "[]"
    if origin is dict and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return args[1], ".<user>"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp, ""
    return None, ""


def rows(cls: type[BaseModel] = Cluster, prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(key, type, default, description) for every key of `cls`, nested keys after their parent."""
    for name, field in cls.model_fields.items():
        key = f"{prefix}{name}"
        inner, more = _inner_model(field.annotation)
        description = field.description or (inner.__doc__ if inner and inner.__doc__ else "")
        kind = _type(field.annotation, field.metadata)
        if inner and more == "[]":
            kind = "list of mappings"
        yield f"`{key}{more}`", kind, _default(field), _one_line(description)
        if inner:
            yield from rows(inner, f"{key}{more}.")


def markdown() -> str:
    """The spec reference table (without the markers)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| {key} | {kind} | {default} | {description} |" for key, kind, default, description in rows()]
    return "\n".join(lines) + "\n"


def block() -> str:
    """The markers with the generated table between them."""
    return f"{START}\n{NOTE}\n\n{markdown()}\n{END}"


def replace_block(text: str) -> str:
    """`text` (the README) with its spec reference block regenerated."""
    start, end = text.index(START), text.index(END) + len(END)
    return text[:start] + block() + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cablab_cluster.spec.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, metavar="README", help="replace the block between the markers in this file")
    args = parser.parse_args(argv)
    if args.write is None:
        sys.stdout.write(markdown())
        return 0
    text = args.write.read_text(encoding="utf-8")
    new = replace_block(text)
    if new != text:
        args.write.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
