"""Errors of the processor.

ProcessorError
 ├── ConfigError          a setting is invalid (the service refuses to start)
 └── StoreUnavailable     MongoDB did not answer or failed a write: pause, keep offsets, retry
"""

from __future__ import annotations

__all__ = ["ConfigError", "ProcessorError", "StoreUnavailable"]


class ProcessorError(Exception):
    """Root of every error the processor raises on purpose."""


class ConfigError(ProcessorError):
    """A setting is invalid; the message names it."""


class StoreUnavailable(ProcessorError):
    """MongoDB is unreachable or a write failed for a reason other than a duplicate key."""
