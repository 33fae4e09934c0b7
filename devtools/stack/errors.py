"""What can go wrong with the local stack.

StackError            something the user has to act on; the CLI prints it, exit 1
 └── MissingToolError a program the stack needs is not on PATH; exit 3
"""

from __future__ import annotations

__all__ = ["MissingToolError", "StackError"]


class StackError(Exception):
    """Something the user has to act on; the CLI prints it and exits non-zero."""


class MissingToolError(StackError):
    """A program the stack needs (java, mvn, go) is not on PATH."""
