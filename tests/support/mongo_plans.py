"""Read MongoDB query plans: which stages and indexes ``explain`` says a command uses.

    >>> with captured_commands() as seen:
    ...     store.partition_history(3, 100, 60_000_000)
    >>> plan = db.command(explain_command(seen[0]))
    >>> plan_stages(plan)          # [Stage("LIMIT", None), Stage("IXSCAN", "partition_gpu_ts")]

The commands are captured as the driver sends them (pymongo command monitoring), so the checks
explain exactly the store's queries rather than a copy of them. ``plan_stages`` walks every
shape MongoDB 7 answers with: classic ``winningPlan.inputStage(s)``, slot-based
``winningPlan.queryPlan``, and an aggregation's ``stages[0].$cursor.queryPlanner``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pymongo import monitoring

__all__ = ["Stage", "captured_commands", "explain_command", "plan_stages"]

EXPLAINED: Final = frozenset({"find", "aggregate", "distinct", "count"})
# Session, cluster-time and server-API fields of a sent command: explain wraps the command
# itself and rejects these inside it.
_DRIVER_FIELDS: Final = frozenset({"lsid", "txnNumber", "$clusterTime", "$db", "$readPreference"})


@dataclass(frozen=True)
class Stage:
    stage: str
    index: str | None


def plan_stages(explain: Mapping[str, Any]) -> list[Stage]:
    """Every stage of every winning plan in ``explain``, outermost first."""
    found: list[Stage] = []

    def walk(node: Any, in_winning_plan: bool) -> None:
        if isinstance(node, Mapping):
            if in_winning_plan and isinstance(node.get("stage"), str):
                found.append(Stage(node["stage"], node.get("indexName")))
            for key, value in node.items():
                if key == "rejectedPlans":
                    continue
                walk(value, in_winning_plan or key == "winningPlan")
        elif isinstance(node, list):
            for item in node:
                walk(item, in_winning_plan)

    walk(explain, False)
    return found


def explain_command(sent: Mapping[str, Any]) -> dict[str, Any]:
    """The ``explain`` command (queryPlanner verbosity) for a command as the driver sent it."""
    name = next(iter(sent))
    if name not in EXPLAINED:
        raise ValueError(f"cannot explain a {name!r} command")
    inner = {k: v for k, v in sent.items() if k not in _DRIVER_FIELDS}
    return {"explain": inner, "verbosity": "queryPlanner"}


class _Recorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []
        self.active = True

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.active and event.command_name in EXPLAINED:
            self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@contextlib.contextmanager
def captured_commands() -> Iterator[list[dict[str, Any]]]:
    """Commands that clients created *inside* the block send (find/aggregate/distinct/count).

    pymongo registers global listeners for clients created afterwards and cannot unregister
    them, so the recorder is switched off when the block ends.
    """
    recorder = _Recorder()
    monitoring.register(recorder)
    try:
        yield recorder.commands
    finally:
        recorder.active = False
