"""Errors the producer service raises.

    ProducerError
    ├── SettingsError        a setting (environment or flag) has a bad value   -> exit 2
    ├── ReplayFileError      a replay file is missing or has invalid lines      -> exit 2
    ├── BrokerUnavailable    Kafka did not answer a metadata request in time    -> exit 1
    ├── TopicMissing         the target topic does not exist on the cluster     -> exit 1
    └── NoGpus               the GPU reader found no GPU to attribute tokens to -> exit 1

An event that breaks its contract is a bug in the producer and is raised as
``schemas.contracts.ContractViolation``; it is deliberately not wrapped here.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "NoGpus",
    "ProducerError",
    "ReplayFileError",
    "SettingsError",
    "TopicMissing",
]


class ProducerError(Exception):
    """Root of every error the producer service raises on purpose."""


class SettingsError(ProducerError):
    """A setting has a bad value; the message names the setting."""


class ReplayFileError(ProducerError):
    """A replay file cannot be read or has invalid lines; the message lists every one."""


class BrokerUnavailable(ProducerError):
    """Kafka did not answer a metadata request within the connect timeout."""


class TopicMissing(ProducerError):
    """The configured topic does not exist (the producer never creates topics)."""


class NoGpus(ProducerError):
    """The GPU reader returned no GPU, so there is nothing to attribute token events to."""
