"""Server-side sessions: JSON documents in Redis under `<prefix>:session:<id>`.

Every read or write sets the key's expiry to the session TTL again (a sliding TTL), so a
session lives as long as it is used. Data is JSON, never pickle. Writes are optimistic
transactions (WATCH / MULTI / SET / EXEC), so two requests of one session at once lose nothing.

A write is applied at most once: it is redone only when EXEC reports that another request
changed the session first. When the connection fails once EXEC was sent, the write may or
may not have been applied, so it is not redone (that could apply it twice): the request
fails with StoreUnavailable. With `wait_replicas`, a write also waits (WAIT, on the same
connection) until that many replicas have it, so a failover to a replica keeps every write
the user was told succeeded; fewer within `wait_timeout` seconds is StoreUnavailable too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import redis

from webstack_app.store import RedisProvider, StoreUnavailable, describe_error

MAX_NOTES = 100
MAX_NOTE_LENGTH = 500
_WRITE_ATTEMPTS = 5

log = logging.getLogger(__name__)


class NoteRejected(Exception):
    """A note that cannot be added; `code` names the reason, the message explains it."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass
class SessionData:
    """What a session holds."""

    visits: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"visits": self.visits, "notes": self.notes}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> SessionData:
        """Parse a stored document; ValueError if it is not one this app wrote."""
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("session document is not a JSON object")
        visits, notes = doc.get("visits", 0), doc.get("notes", [])
        if not isinstance(visits, int) or not isinstance(notes, list):
            raise ValueError("session document has the wrong shape")
        if not all(isinstance(note, str) for note in notes):
            raise ValueError("session notes are not all strings")
        return cls(visits=visits, notes=notes)

    def add_note(self, note: str) -> None:
        if len(self.notes) >= MAX_NOTES:
            raise NoteRejected(
                "too_many_notes", f"a session holds at most {MAX_NOTES} notes", status=409
            )
        self.notes.append(note)


def validate_note(value: object) -> str:
    """The note to store, stripped of surrounding whitespace, or NoteRejected."""
    if value is None:
        raise NoteRejected("missing_note", "'note' is required")
    if not isinstance(value, str):
        raise NoteRejected("invalid_note", "'note' must be a string")
    note = value.strip()
    if not 1 <= len(note) <= MAX_NOTE_LENGTH:
        raise NoteRejected(
            "invalid_note",
            f"'note' must be 1 to {MAX_NOTE_LENGTH} characters long, got {len(note)}",
        )
    return note


class SessionStore:
    """Loads, changes and deletes session documents; every Redis failure is StoreUnavailable."""

    def __init__(
        self,
        provider: RedisProvider,
        prefix: str,
        ttl: int,
        wait_replicas: int = 0,
        wait_timeout: float = 0.5,
    ) -> None:
        self._provider = provider
        self._prefix = prefix
        self._ttl = ttl
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = max(1, round(wait_timeout * 1000))

    def key(self, session_id: str) -> str:
        return f"{self._prefix}:session:{session_id}"

    def load(self, session_id: str) -> SessionData | None:
        """The session's data (its TTL refreshed), or None when there is no such session."""
        try:
            raw = self._provider.client().getex(self.key(session_id), ex=self._ttl)
        except redis.RedisError as error:
            raise StoreUnavailable(describe_error(error)) from error
        return None if raw is None else self._parse(session_id, raw)

    def update(self, session_id: str, change: Callable[[SessionData], None]) -> SessionData:
        """Apply `change` to the session (created when missing), store it, return it.

        Exceptions raised by `change` propagate and leave the stored session untouched.
        """
        return cast(SessionData, self._update(session_id, change, create=True))  # never None

    def update_existing(
        self, session_id: str, change: Callable[[SessionData], None]
    ) -> SessionData | None:
        """As update(), but None (and nothing written) when there is no such session."""
        return self._update(session_id, change, create=False)

    def _update(
        self, session_id: str, change: Callable[[SessionData], None], *, create: bool
    ) -> SessionData | None:
        key = self.key(session_id)
        client = self._provider.client()
        for _ in range(_WRITE_ATTEMPTS):
            # One connection throughout: WATCH holds it, so MULTI, EXEC and WAIT go on it too
            # (WAIT counts the replicas that have this connection's writes).
            with client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None and not create:
                        return None
                    data = SessionData() if raw is None else self._parse(session_id, raw)
                    change(data)
                    pipe.execute_command("MULTI")
                    pipe.execute_command("SET", key, data.to_json(), "EX", self._ttl)
                except redis.RedisError as error:  # nothing was written: safe to fail
                    raise StoreUnavailable(describe_error(error)) from error
                try:
                    applied = pipe.execute_command("EXEC")
                except redis.RedisError as error:  # applied or not: never sent again
                    raise StoreUnavailable(
                        f"write not confirmed: {describe_error(error)}"
                    ) from error
                if applied is None:
                    continue  # another request changed the session meanwhile: redo
                self._wait_for_replicas(pipe)
                return data
        raise StoreUnavailable(f"session changed concurrently {_WRITE_ATTEMPTS} times in a row")

    def _wait_for_replicas(self, pipe: redis.client.Pipeline) -> None:
        if not self._wait_replicas:
            return
        try:
            # EXEC ended the WATCH, but the pipeline keeps its connection until it is reset.
            acked = int(
                pipe.immediate_execute_command("WAIT", self._wait_replicas, self._wait_timeout_ms)
            )
        except redis.RedisError as error:
            raise StoreUnavailable(f"write not confirmed: {describe_error(error)}") from error
        if acked < self._wait_replicas:
            raise StoreUnavailable(
                f"write reached {acked} of {self._wait_replicas} replicas within "
                f"{self._wait_timeout_ms} ms"
            )

    def delete(self, session_id: str) -> None:
        try:
            self._provider.client().delete(self.key(session_id))
        except redis.RedisError as error:
            raise StoreUnavailable(describe_error(error)) from error

    @staticmethod
    def _parse(session_id: str, raw: str) -> SessionData:
        try:
            return SessionData.from_json(raw)
        except ValueError as error:
            # Not ours or damaged: start the session afresh rather than fail every request.
            log.warning("session %.8s...: unreadable document replaced: %s", session_id, error)
            return SessionData()
