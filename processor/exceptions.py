"""Errors of the processor.

ProcessorError
 ├── StoreUnavailable       MongoDB did not answer or failed a write: pause, keep offsets, retry
 ├── DeadLetterUnavailable  the dead-letter topic did not take a letter: pause, keep offsets, retry
 └── InvalidParameters      an HTTP request's parameters are wrong together (answered 422)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BadParameter",
    "DeadLetterUnavailable",
    "InvalidParameters",
    "ProcessorError",
    "StoreUnavailable",
]


class ProcessorError(Exception):
    """Root of every error the processor raises on purpose."""


class StoreUnavailable(ProcessorError):
    """MongoDB is unreachable or a write failed for a reason other than a duplicate key."""


class DeadLetterUnavailable(ProcessorError):
    """The dead-letter topic did not take a record in time."""


@dataclass(frozen=True, slots=True)
class BadParameter:
    """One refused request parameter: where it was (``query``, ``path``), its name, why."""

    where: str
    name: str
    reason: str


class InvalidParameters(ProcessorError):
    """Request parameters that each parse but are refused (a range too long, start >= end)."""

    def __init__(self, *params: BadParameter) -> None:
        self.params = params
        super().__init__("; ".join(f"{p.name}: {p.reason}" for p in params))
