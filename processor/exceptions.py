"""Errors of the processor.

ProcessorError
 ├── ConfigError            a setting is invalid (the service refuses to start)
 ├── StoreUnavailable       MongoDB did not answer or failed a write: pause, keep offsets, retry
 └── DeadLetterUnavailable  the dead-letter topic did not take a letter: pause, keep offsets, retry
"""

from __future__ import annotations

__all__ = ["ConfigError", "DeadLetterUnavailable", "ProcessorError", "StoreUnavailable"]


class ProcessorError(Exception):
    """Root of every error the processor raises on purpose."""


class ConfigError(ProcessorError):
    """A setting is invalid; the message names it."""


class StoreUnavailable(ProcessorError):
    """MongoDB is unreachable or a write failed for a reason other than a duplicate key."""


class DeadLetterUnavailable(ProcessorError):
    """The dead-letter topic did not take a record in time."""
