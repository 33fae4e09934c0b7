"""Render the settings tables of docs/configuration.md from the settings classes.

    python scripts/config_doc.py           # rewrite the generated part of the doc
    python scripts/config_doc.py --check   # exit 1 if the doc and the code disagree

The tables are generated so the doc cannot drift from the code; tests/unit run --check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

DOC = REPO / "docs" / "configuration.md"
BEGIN = "<!-- BEGIN GENERATED: scripts/config_doc.py -->"
END = "<!-- END GENERATED -->"


def _services() -> list[tuple[str, type[BaseSettings]]]:
    from processor.settings import ProcessorSettings
    from producers.settings import ProducerSettings

    return [("processor", ProcessorSettings), ("producers", ProducerSettings)]


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return "(computed at start)"
    value = field.default
    if value is None or value == "":
        return "(unset)"
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return f"`{value}`"


def _type(field: Any) -> str:
    text = str(field.annotation).replace("typing.", "").replace("pathlib.", "")
    text = text.replace("<class '", "").replace("'>", "").replace("pydantic.types.", "")
    return text.replace("|", "\\|")  # a bare | would split the Markdown table cell


def env_name(cls: type[BaseSettings], name: str) -> str:
    prefix = str(cls.model_config.get("env_prefix", "") or "")
    field = cls.model_fields[name]
    return str(field.validation_alias or field.alias or f"{prefix}{name}").upper()


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
