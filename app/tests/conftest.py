"""Fixtures: one real redis-server for the session, and in-process apps built against it."""

from __future__ import annotations

import logging

import pytest

from support import RedisServer, WsgiClient, app_env
from webstack_app.config import load_settings
from webstack_app.web import create_app


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_admin(redis_server):
    client = redis_server.admin()
    yield client
    client.close()


@pytest.fixture
def make_app(redis_server):
    """Build an in-process app from settings (defaults: the test Redis), as wsgi.py would."""

    def make(**overrides: str):
        return create_app(load_settings(app_env(redis_server.address, **overrides)))

    yield make
    logging.getLogger("webstack_app").handlers.clear()


@pytest.fixture
def client(make_app):
    return WsgiClient(make_app())
