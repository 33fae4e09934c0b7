"""The end of a process's log, for error messages that say why something failed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

__all__ = ["START_MARK", "last_line", "tail"]

# Written before each start of a server into its (appended) log: tail() shows the last run only.
START_MARK: Final = "===== "
_ERROR_RE: Final = re.compile(
    r"\b(ERROR|FATAL|Exception|panic)\b|BindException|address already in use"
)
# Logs grow for days; the end is what explains a failure, and reading it must stay cheap.
_TAIL_BYTES: Final = 256_000


def tail(path: Path | str, lines: int = 25) -> str:
    """The end of a log since its last START_MARK, led by the first error line if any."""
    try:
        text = Path(path).read_bytes()[-_TAIL_BYTES:].decode("utf-8", "replace")
    except OSError:
        return f"(no log at {path})"
    run = text.splitlines()
    starts = [i for i, line in enumerate(run) if line.startswith(START_MARK)]
    run = run[starts[-1] :] if starts else run
    shown = run[-lines:]
    first_error = next((line for line in run if _ERROR_RE.search(line)), None)
    if first_error is not None and first_error not in shown:
        shown = [f"(first error) {first_error}", "...", *shown]
    return "\n".join("    | " + line for line in shown)


def last_line(path: Path | str, width: int = 140) -> str:
    """The last non-blank line of a log (a progress heartbeat), cut to *width*."""
    try:
        text = Path(path).read_bytes()[-4096:].decode("utf-8", "replace")
    except OSError:
        return ""
    found = [line.strip() for line in text.splitlines() if line.strip()]
    return found[-1][:width] if found else ""
