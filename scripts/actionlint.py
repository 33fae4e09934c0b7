#!/usr/bin/env python3
"""Lint .github/workflows with actionlint (built into the project cache on first use).

.venv/bin/python scripts/actionlint.py          # or: make actionlint
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python scripts/actionlint.py` puts scripts/ first
    sys.path.insert(0, str(REPO))

from devtools.actionlint import install_actionlint, lint_workflows  # noqa: E402
from devtools.stack.config import default_cache_dir  # noqa: E402
from devtools.stack.errors import StackError  # noqa: E402


def main() -> int:
    try:
        done = lint_workflows(install_actionlint(default_cache_dir()))
    except StackError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
