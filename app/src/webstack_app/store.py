"""The Redis connection: one client per worker process, made on first use.

Clients are created lazily and re-created when the process id changes, so a gunicorn master
that preloads the app never hands an open connection pool to its forked workers. Every
socket has a timeout and connection errors are retried a bounded number of times. With
Sentinel, the client asks the sentinels for the current master, so a failover is followed.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from webstack_app.config import DEFAULT_REDIS_ADDRESS, Settings


class StoreUnavailable(Exception):
    """Redis could not be reached or did not answer in time."""


class RedisProvider:
    """Hands out this process's Redis clients: one for requests, one for readiness checks."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pid: int | None = None
        self._client: redis.Redis | None = None
        self._health_client: redis.Redis | None = None

    def client(self) -> redis.Redis:
        """The client for session traffic: bounded retries with a short backoff."""
        self._reset_after_fork()
        if self._client is None:
            retry = Retry(
                ExponentialBackoff(cap=0.25, base=0.025), retries=self._settings.redis_retries
            )
            self._client = self._make(retry)
        return self._client

    def health_client(self) -> redis.Redis:
        """The client for /readyz: one immediate retry, for a pooled connection that Redis
        closed (after a Redis restart), and no backoff, so a check stays short."""
        self._reset_after_fork()
        if self._health_client is None:
            self._health_client = self._make(Retry(NoBackoff(), retries=1))
        return self._health_client

    def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers PING within the timeout."""
        try:
            self.health_client().ping()
        except redis.RedisError as error:
            raise StoreUnavailable(describe_error(error)) from error

    def _reset_after_fork(self) -> None:
        pid = os.getpid()
        if self._pid != pid:
            # Connections inherited from a parent belong to the parent: drop them unclosed.
            self._client = self._health_client = None
            self._pid = pid

    def _make(self, retry: Retry) -> redis.Redis:
        s = self._settings
        common: dict[str, Any] = {
            "socket_timeout": s.redis_timeout,
            "socket_connect_timeout": s.redis_timeout,
            "retry": retry,
            "health_check_interval": 30,
            "decode_responses": True,
        }
        if not s.uses_sentinel:
            host, port = s.redis_address or DEFAULT_REDIS_ADDRESS
            return redis.Redis(
                host=host, port=port, username=s.redis_username, password=s.redis_password, **common
            )
        sentinel = Sentinel(
            list(s.sentinel_addresses),
            sentinel_kwargs={
                "socket_timeout": s.redis_timeout,
                "socket_connect_timeout": s.redis_timeout,
                "retry": Retry(NoBackoff(), retries=0),
                "username": s.sentinel_username,
                "password": s.sentinel_password,
            },
        )
        return sentinel.master_for(
            s.sentinel_service or "", username=s.redis_username, password=s.redis_password, **common
        )


def describe_error(error: BaseException) -> str:
    """One line for the log: the exception's class and message."""
    return f"{type(error).__name__}: {error}".splitlines()[0]
