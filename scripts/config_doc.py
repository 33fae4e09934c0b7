"""Render the settings tables of docs/configuration.md from the settings classes.

    python scripts/config_doc.py           # rewrite the generated part of the doc
    python scripts/config_doc.py --check   # exit 1 if the doc and the code disagree

The tables are generated so the doc cannot drift from the code; tests/unit run --check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from service_settings import env_name  # noqa: E402  (needs REPO on sys.path)

DOC = REPO / "docs" / "configuration.md"
BEGIN = "<!-- BEGIN GENERATED: scripts/config_doc.py -->"
END = "<!-- END GENERATED -->"


def _services() -> list[tuple[str, type[BaseSettings]]]:
    from processor.settings import ProcessorSettings
    from producers.settings import ProducerSettings

    return [("processor", ProcessorSettings), ("producers", ProducerSettings)]


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "(computed at start)"
    value = field.default
    if value is None or value == "" or value == {}:
        return "(unset)"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return f"`{value}`"


def _type_name(tp: Any) -> str:
    """A type as a reader writes it: ``dict[str, float]``, ``Path | None`` (no Annotated)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None):
        return "None"
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (Union, UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is Literal:
        return f"Literal[{', '.join(repr(arg) for arg in args)}]"
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(arg) for arg in args)}]"
    return str(getattr(tp, "__name__", tp))


# The Field constraints a reader needs (bounds, lengths); patterns are in the error messages.
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _constraints(field: FieldInfo) -> list[str]:
    found = []
    for item in field.metadata:
        for attr, symbol in _BOUNDS:
            if isinstance(getattr(item, attr, None), int | float):
                found.append(f"{symbol} {getattr(item, attr)}")
        if isinstance(getattr(item, "max_length", None), int):
            found.append(f"at most {item.max_length} chars")
    return found


def _type(field: FieldInfo) -> str:
    text = _type_name(field.annotation)
    bounds = _constraints(field)
    if bounds:
        text += f" ({', '.join(bounds)})"
    return text.replace("|", "\\|")  # a bare | would split the Markdown table cell


def render() -> str:
    parts = [BEGIN]
    for service, cls in _services():
        parts += [
            "",
            f"### {service} (`{cls.__module__}.{cls.__name__}`)",
            "",
            "| variable | type | default | meaning |",
            "| --- | --- | --- | --- |",
        ]
        for name, field in cls.model_fields.items():
            meaning = (field.description or "").replace("|", "\\|")
            parts.append(
                f"| `{env_name(cls, name)}` | {_type(field)} | {_default(field)} | {meaning} |"
            )
    parts += ["", END]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the settings tables of the docs.")
    parser.add_argument("--check", action="store_true", help="only compare, do not write")
    args = parser.parse_args(argv)
    text = DOC.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        print(f"{DOC}: markers {BEGIN!r} ... {END!r} missing", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    updated = head + render() + tail
    if args.check:
        if updated != text:
            print(f"{DOC} is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(updated, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
