"""Shared fixtures."""

from __future__ import annotations

import pytest

from calls import engines
from llm.metrics import LLMServiceMetrics
from llm.session import SessionRegistry


@pytest.fixture
def fresh_registry(settings) -> SessionRegistry:
    return SessionRegistry(config=settings.VANTUM_LLM, metrics=LLMServiceMetrics())


@pytest.fixture
def use_engines(fresh_registry):
    """Install providers for the calls of one test: ``use_engines(chat=..., speech=...)``."""
    stack = []

    def install(**providers):
        manager = engines.override_engines(registry=fresh_registry, **providers)
        stack.append(manager)
        return manager.__enter__()

    yield install
    while stack:
        stack.pop().__exit__(None, None, None)


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path_factory):
    """Recordings written by a test go to a temporary folder, never into the project."""
    settings.MEDIA_ROOT = tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def database():
    """A PostgreSQL server of the module's own, which its tests may stop and start (outages)."""
    from tests.outage_servers import StoppablePostgres

    postgres = StoppablePostgres()
    postgres.start()
    try:
        yield postgres
    finally:
        postgres.close()
