"""Session storage: JSON under the namespaced key, a sliding TTL, no lost updates, Sentinel."""

from __future__ import annotations

import json
import subprocess

import pytest
import redis

from support import (
    ADMIN_PASSWORD,
    KEY_PREFIX,
    LOCALHOST,
    WsgiClient,
    app_env,
    free_port,
    session_id_of,
    wait_until,
)
from webstack_app.config import load_settings
from webstack_app.cookies import SessionCookie
from webstack_app.sessions import NoteRejected, SessionData, SessionStore
from webstack_app.store import RedisProvider, StoreUnavailable


@pytest.fixture
def store(redis_server):
    settings = load_settings(app_env(redis_server.address, WEBSTACK_SESSION_TTL="600"))
    return SessionStore(RedisProvider(settings), KEY_PREFIX, 600)


def test_session_is_json_under_namespaced_key_with_ttl(client, redis_admin):
    client.get("/")
    client.post("/api/session/notes", json_body={"note": "a note"})
    key = f"{KEY_PREFIX}:session:{session_id_of(client.cookie)}"
    assert redis_admin.type(key) == "string"
    assert json.loads(redis_admin.get(key)) == {"visits": 1, "notes": ["a note"]}
    assert 590 <= redis_admin.ttl(key) <= 600


@pytest.mark.parametrize("path", ["/", "/api/session"])
def test_ttl_slides_on_every_access(client, redis_admin, path):
    client.get("/")
    key = f"{KEY_PREFIX}:session:{session_id_of(client.cookie)}"
    redis_admin.expire(key, 100)
    assert redis_admin.ttl(key) <= 100
    result = client.get(path)
    assert result.status == 200
    assert redis_admin.ttl(key) >= 590
    assert "Max-Age=600" in result.header("Set-Cookie")


def test_expired_session_starts_afresh(client, redis_admin):
    client.get("/")
    client.get("/")
    redis_admin.delete(f"{KEY_PREFIX}:session:{session_id_of(client.cookie)}")
    assert client.get("/api/session").json()["visits"] == 0
    assert '"visits">1<' in client.get("/").text


def test_unreadable_document_is_replaced(client, redis_admin):
    client.get("/")
    key = f"{KEY_PREFIX}:session:{session_id_of(client.cookie)}"
    for junk in ("not json", "[1, 2]", '{"visits": "many"}', '{"notes": [1]}'):
        redis_admin.set(key, junk, ex=600)
        assert client.get("/api/session").json()["visits"] == 0
    assert '"visits">1<' in client.get("/").text
    assert json.loads(redis_admin.get(key)) == {"visits": 1, "notes": []}


def test_concurrent_change_is_retried_not_lost(store, redis_admin):
    session_id = SessionCookie.new_id()
    store.update(session_id, lambda data: data.add_note("first"))
    calls = []

    def add_mine(data: SessionData) -> None:
        calls.append(1)
        if len(calls) == 1:  # another request writes between our WATCH and EXEC
            store.update(session_id, lambda other: other.add_note("theirs"))
        data.add_note("mine")

    result = store.update(session_id, add_mine)
    assert len(calls) == 2
    assert result.notes == ["first", "theirs", "mine"]
    assert store.load(session_id).notes == ["first", "theirs", "mine"]


def test_rejected_change_leaves_session_untouched(store):
    session_id = SessionCookie.new_id()
    store.update(session_id, lambda data: data.add_note("kept"))

    def reject(data: SessionData) -> None:
        data.add_note("not kept")
        raise NoteRejected("nope", "nope")

    with pytest.raises(NoteRejected):
        store.update(session_id, reject)
    assert store.load(session_id).notes == ["kept"]


def test_store_errors_become_store_unavailable():
    settings = load_settings(app_env(f"{LOCALHOST}:{free_port()}"))
    provider = RedisProvider(settings)
    store = SessionStore(provider, KEY_PREFIX, 600)
    for call in (
        lambda: store.load("x"),
        lambda: store.update("x", lambda d: None),
        lambda: store.delete("x"),
        provider.ping,
    ):
        with pytest.raises(StoreUnavailable, match="ConnectionError"):
            call()


def test_wrong_password_is_store_unavailable(make_app):
    client = WsgiClient(make_app(WEBSTACK_REDIS_PASSWORD="wrong"))
    assert client.get("/readyz").status == 503
    assert client.get("/").status == 503


def test_acl_user_is_confined_to_the_prefix(make_app):
    # The test ACL user may only touch wstest:* keys, so another prefix cannot work.
    client = WsgiClient(make_app(WEBSTACK_KEY_PREFIX="other"))
    assert client.get("/").status == 503


def test_client_is_remade_after_fork(redis_server, monkeypatch):
    provider = RedisProvider(load_settings(app_env(redis_server.address)))
    first = provider.client()
    assert provider.client() is first
    monkeypatch.setattr("os.getpid", lambda: -1)
    assert provider.client() is not first


def test_a_write_lost_after_exec_is_never_sent_again(store, monkeypatch):
    """EXEC was sent and its answer lost: the write may be applied, so it fails, once."""
    session_id = SessionCookie.new_id()
    real = redis.client.Pipeline.immediate_execute_command
    calls = []

    def lose_exec(self, *args, **options):
        if args[0] == "EXEC":
            real(self, *args, **options)  # applied on the server ...
            raise redis.ConnectionError("connection lost")  # ... but the answer is lost
        return real(self, *args, **options)

    monkeypatch.setattr(redis.client.Pipeline, "immediate_execute_command", lose_exec)
    with pytest.raises(StoreUnavailable, match="write not confirmed"):
        store.update(session_id, lambda data: calls.append(data.add_note("once")))
    monkeypatch.undo()
    assert len(calls) == 1
    assert store.load(session_id).notes == ["once"]


def wait_store(redis_server, replicas: int, timeout: float = 0.2) -> SessionStore:
    settings = load_settings(app_env(redis_server.address, WEBSTACK_REDIS_TIMEOUT="5"))
    return SessionStore(RedisProvider(settings), KEY_PREFIX, 600, replicas, wait_timeout=timeout)


def test_a_write_waits_for_its_replicas(redis_server, tmp_path):
    """With wait_replicas, a write succeeds only once a replica has it: none connected is
    StoreUnavailable (the write stays on the primary), one connected succeeds."""
    session_id = SessionCookie.new_id()
    with pytest.raises(StoreUnavailable, match="write reached 0 of 1 replicas within 200 ms"):
        wait_store(redis_server, 1).update(session_id, lambda data: data.add_note("alone"))
    replica_port = free_port()
    replica = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(replica_port),
            "--bind",
            LOCALHOST,
            "--save",
            "",
            "--dir",
            str(tmp_path),
            "--replicaof",
            LOCALHOST,
            str(redis_server.port),
            "--masterauth",
            ADMIN_PASSWORD,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        admin = redis_server.admin()
        wait_until(
            lambda: admin.set("probe", "1") and admin.wait(1, 100) == 1,
            10,
            "a replica acknowledging writes",
        )
        # A loaded test machine may take a while to schedule the replica: a wide timeout.
        data = wait_store(redis_server, 1, timeout=3).update(
            session_id, lambda data: data.add_note("kept")
        )
        assert data.notes == ["alone", "kept"]
        on_replica = redis.Redis(host=LOCALHOST, port=replica_port, decode_responses=True)
        assert json.loads(on_replica.get(f"{KEY_PREFIX}:session:{session_id}"))["notes"] == [
            "alone",
            "kept",
        ]
        with pytest.raises(StoreUnavailable, match="write reached 1 of 2 replicas"):
            wait_store(redis_server, 2).update(session_id, lambda data: data.add_note("two"))
    finally:
        replica.terminate()
        replica.wait(10)
        wait_until(
            lambda: redis_server.admin().info("replication").get("connected_slaves", 0) == 0,
            10,
            "the replica gone",
        )


@pytest.fixture
def sentinel(redis_server, tmp_path):
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\n"
        f"bind {LOCALHOST}\n"
        f"dir {tmp_path}\n"
        f"logfile {tmp_path / 'sentinel.log'}\n"
        "requirepass sentinel-pw\n"
        f"sentinel monitor wsmaster {LOCALHOST} {redis_server.port} 1\n"
        f"sentinel auth-pass wsmaster {ADMIN_PASSWORD}\n"
    )
    process = subprocess.Popen(
        ["redis-server", str(config), "--sentinel"], stdout=subprocess.DEVNULL
    )
    probe = redis.Redis(host=LOCALHOST, port=port, password="sentinel-pw", socket_timeout=1)

    def knows_master() -> bool:
        try:
            return bool(probe.sentinel_get_master_addr_by_name("wsmaster"))
        except redis.RedisError:
            return False

    wait_until(knows_master, 10, "redis sentinel")
    yield f"{LOCALHOST}:{port}"
    process.terminate()
    process.wait(10)


def test_sessions_through_sentinel(make_app, sentinel, redis_admin):
    client = WsgiClient(
        make_app(
            WEBSTACK_REDIS_ADDRESS=None,
            WEBSTACK_SENTINEL_ADDRESSES=f"{sentinel},{LOCALHOST}:{free_port()}",
            WEBSTACK_SENTINEL_SERVICE="wsmaster",
            WEBSTACK_SENTINEL_PASSWORD="sentinel-pw",
        )
    )
    assert client.get("/readyz").status == 200
    assert client.post("/api/session/notes", json_body={"note": "via sentinel"}).status == 201
    key = f"{KEY_PREFIX}:session:{session_id_of(client.cookie)}"
    assert json.loads(redis_admin.get(key))["notes"] == ["via sentinel"]


def test_unknown_sentinel_service_is_503(make_app, sentinel):
    client = WsgiClient(
        make_app(
            WEBSTACK_REDIS_ADDRESS=None,
            WEBSTACK_SENTINEL_ADDRESSES=sentinel,
            WEBSTACK_SENTINEL_SERVICE="no-such-master",
            WEBSTACK_SENTINEL_PASSWORD="sentinel-pw",
        )
    )
    assert client.get("/readyz").status == 503
    assert client.get("/").status == 503
