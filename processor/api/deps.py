"""Dependency aliases, so a route reads ``store: StoreDep``; and what the routes need of each.

``KafkaAdmin`` and ``LocalGpuReader`` are protocols rather than the concrete classes: confluent
-kafka ships no type information (its ``AdminClient`` is ``Any`` to mypy), and ``create_app``
takes any reader of the local GPUs, so a test can inject one whose answer it knows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from processor.consumer import PipelineLoop
from processor.settings import ProcessorSettings
from processor.store import MongoStore

__all__ = [
    "ClusterMetadata",
    "GpuReaderDep",
    "KafkaAdmin",
    "KafkaAdminDep",
    "LocalGpuReader",
    "LoopDep",
    "SettingsDep",
    "StoreDep",
    "TopicMetadata",
]


class TopicMetadata(Protocol):
    """What /health reads of ``confluent_kafka.admin.TopicMetadata``."""

    @property
    def error(self) -> object | None: ...

    @property
    def partitions(self) -> Mapping[int, object]: ...


class ClusterMetadata(Protocol):
    """What /health reads of ``confluent_kafka.admin.ClusterMetadata``."""

    @property
    def topics(self) -> Mapping[str, TopicMetadata]: ...


class KafkaAdmin(Protocol):
    """The part of ``confluent_kafka.admin.AdminClient`` the API uses."""

    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> ClusterMetadata: ...


class LocalGpuReader(Protocol):
    """This host's GPUs, as ``gpu_readers.GpuReader`` reads them."""

    @property
    def active_source(self) -> str | None: ...

    @property
    def skipped_sources(self) -> dict[str, str]: ...

    def read(self) -> list[dict[str, Any]]:
        """Complete ``gpu.metrics.v1`` events; raises ``GpuReaderError`` when none can be read."""
        ...


def _settings(request: Request) -> ProcessorSettings:
    settings: ProcessorSettings = request.app.state.settings
    return settings


def _store(request: Request) -> MongoStore:
    store: MongoStore = request.app.state.store
    return store


def _loop(request: Request) -> PipelineLoop | None:
    loop: PipelineLoop | None = request.app.state.loop
    return loop


def _admin(request: Request) -> KafkaAdmin:
    admin: KafkaAdmin = request.app.state.kafka_admin
    return admin


def _gpu_reader(request: Request) -> LocalGpuReader:
    reader: LocalGpuReader = request.app.state.gpu_reader
    return reader


SettingsDep = Annotated[ProcessorSettings, Depends(_settings)]
StoreDep = Annotated[MongoStore, Depends(_store)]
LoopDep = Annotated[PipelineLoop | None, Depends(_loop)]
KafkaAdminDep = Annotated[KafkaAdmin, Depends(_admin)]
GpuReaderDep = Annotated[LocalGpuReader, Depends(_gpu_reader)]
