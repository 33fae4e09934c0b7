"""``python -m producers`` entry point."""

from producers.cli import main

raise SystemExit(main())
