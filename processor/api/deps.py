"""Dependency aliases, so a route reads ``store: StoreDep``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from processor.consumer import PipelineLoop
from processor.settings import ProcessorSettings
from processor.store import MongoStore

__all__ = ["GpuReaderDep", "KafkaAdminDep", "LoopDep", "SettingsDep", "StoreDep"]


def _settings(request: Request) -> ProcessorSettings:
    settings: ProcessorSettings = request.app.state.settings
    return settings


def _store(request: Request) -> MongoStore:
    store: MongoStore = request.app.state.store
    return store


def _loop(request: Request) -> PipelineLoop | None:
    loop: PipelineLoop | None = request.app.state.loop
    return loop


def _admin(request: Request) -> Any:
    return request.app.state.kafka_admin


def _gpu_reader(request: Request) -> Any:
    return request.app.state.gpu_reader


SettingsDep = Annotated[ProcessorSettings, Depends(_settings)]
StoreDep = Annotated[MongoStore, Depends(_store)]
LoopDep = Annotated[PipelineLoop | None, Depends(_loop)]
KafkaAdminDep = Annotated[Any, Depends(_admin)]
GpuReaderDep = Annotated[Any, Depends(_gpu_reader)]
