#!/usr/bin/env python3
"""The local stack: a real Apache Kafka broker (KRaft) and a real FerretDB, as processes, no Docker.

    .venv/bin/python scripts/stack.py [--state-dir .state] up|status|down
        [--kafka-listen HOST:PORT] [--mongo-listen HOST:PORT] [--only kafka|mongo]

The command line only: the stack itself is the package ``devtools.stack`` (install, servers,
supervision, topics). See docs/local-stack.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python scripts/stack.py` puts scripts/ first, not the repo
    sys.path.insert(0, str(REPO))

try:
    from devtools.stack import *  # noqa: F403 - `scripts.stack` keeps its public API for importers
    from devtools.stack.cli import main
except ImportError as exc:  # pragma: no cover - only without the virtualenv
    sys.exit(
        f"stack.py: {exc}. Run it with the project's virtualenv: "
        "`make install` then `.venv/bin/python scripts/stack.py ...`."
    )

if __name__ == "__main__":
    sys.exit(main())
