"""Errors of the processor.

ProcessorError
 └── StoreUnavailable     MongoDB did not answer or failed a write: pause, keep offsets, retry
"""

from __future__ import annotations

__all__ = ["ProcessorError", "StoreUnavailable"]


class ProcessorError(Exception):
    """Root of every error the processor raises on purpose."""


class StoreUnavailable(ProcessorError):
    """MongoDB is unreachable or a write failed for a reason other than a duplicate key."""
