"""Settings: defaults, every validation error as one line naming the setting, the file."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from webstack_app.config import ConfigError, Settings, load_settings

SECRET = "s" * 32


def load(**env: str) -> Settings:
    return load_settings({"WEBSTACK_SECRET_KEY": SECRET, **env})


def error_of(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults():
    settings = load()
    assert settings.redis_address == ("127.0.0.1", 6379)
    assert not settings.uses_sentinel
    assert settings.redis_username is None
    assert settings.redis_password is None
    assert settings.session_ttl == 3600
    assert settings.cookie_secure == "auto"
    assert settings.trusted_proxies == ()
    assert settings.key_prefix == "webstack"
    assert settings.max_body_bytes == 65536
    assert settings.redis_timeout == 0.5
    assert settings.redis_retries == 1
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout) == (0, 0.5)
    assert settings.instance_name == socket.gethostname()
    assert settings.log_level == "INFO"


def test_every_setting_is_read():
    settings = load(
        WEBSTACK_REDIS_ADDRESS="[::1]:6380",
        WEBSTACK_REDIS_USERNAME="app",
        WEBSTACK_REDIS_PASSWORD="pw",
        WEBSTACK_REDIS_TIMEOUT="1.5",
        WEBSTACK_REDIS_RETRIES="3",
        WEBSTACK_REDIS_WAIT_REPLICAS="2",
        WEBSTACK_REDIS_WAIT_TIMEOUT="0.25",
        WEBSTACK_SESSION_TTL="60",
        WEBSTACK_COOKIE_SECURE="Always",
        WEBSTACK_TRUSTED_PROXIES="10.0.0.1, 192.168.0.0/24,::1",
        WEBSTACK_KEY_PREFIX="shop:eu",
        WEBSTACK_MAX_BODY_BYTES="1024",
        WEBSTACK_INSTANCE_NAME="app 1",
        WEBSTACK_LOG_LEVEL="debug",
    )
    assert settings.redis_address == ("::1", 6380)
    assert (settings.redis_username, settings.redis_password) == ("app", "pw")
    assert (settings.redis_timeout, settings.redis_retries) == (1.5, 3)
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout) == (2, 0.25)
    assert settings.session_ttl == 60
    assert settings.cookie_secure == "always"
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.1/32"),
        ipaddress.ip_network("192.168.0.0/24"),
        ipaddress.ip_network("::1/128"),
    )
    assert settings.key_prefix == "shop:eu"
    assert settings.max_body_bytes == 1024
    assert settings.instance_name == "app 1"
    assert settings.log_level == "DEBUG"


def test_sentinel_settings():
    settings = load(
        WEBSTACK_SENTINEL_ADDRESSES="10.0.0.1:26379, 10.0.0.2:26379,10.0.0.3:26379",
        WEBSTACK_SENTINEL_SERVICE="webstack",
        WEBSTACK_SENTINEL_USERNAME="sentinel-user",
        WEBSTACK_SENTINEL_PASSWORD="sentinel-pw",
    )
    assert settings.uses_sentinel
    assert settings.redis_address is None
    assert settings.sentinel_addresses == (
        ("10.0.0.1", 26379),
        ("10.0.0.2", 26379),
        ("10.0.0.3", 26379),
    )
    assert settings.sentinel_service == "webstack"
    assert settings.sentinel_username == "sentinel-user"
    assert settings.sentinel_password == "sentinel-pw"


def test_empty_values_count_as_unset():
    settings = load(WEBSTACK_REDIS_PASSWORD="", WEBSTACK_SESSION_TTL="  ")
    assert settings.redis_password is None
    assert settings.session_ttl == 3600


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"WEBSTACK_SESSION_TTL": "abc"},
            "WEBSTACK_SESSION_TTL must be an integer between 60 and 2592000, got 'abc'",
        ),
        (
            {"WEBSTACK_SESSION_TTL": "59"},
            "WEBSTACK_SESSION_TTL must be an integer between 60 and 2592000, got '59'",
        ),
        (
            {"WEBSTACK_SESSION_TTL": "1.5"},
            "WEBSTACK_SESSION_TTL must be an integer between 60 and 2592000, got '1.5'",
        ),
        (
            {"WEBSTACK_REDIS_ADDRESS": "localhost"},
            "WEBSTACK_REDIS_ADDRESS must be host:port (e.g. 127.0.0.1:6379), got 'localhost'",
        ),
        (
            {"WEBSTACK_REDIS_ADDRESS": "redis:http"},
            "WEBSTACK_REDIS_ADDRESS must be host:port (e.g. 127.0.0.1:6379), got 'redis:http'",
        ),
        (
            {"WEBSTACK_REDIS_ADDRESS": "redis:70000"},
            "WEBSTACK_REDIS_ADDRESS must be host:port with a port from 1 to 65535, "
            "got 'redis:70000'",
        ),
        (
            {"WEBSTACK_SENTINEL_ADDRESSES": "a:26379,b"},
            "WEBSTACK_SENTINEL_ADDRESSES must be a comma-separated list of host:port, "
            "got 'a:26379,b'",
        ),
        (
            {"WEBSTACK_SENTINEL_ADDRESSES": "a:26379"},
            "WEBSTACK_SENTINEL_SERVICE is required when WEBSTACK_SENTINEL_ADDRESSES is set",
        ),
        (
            {
                "WEBSTACK_SENTINEL_ADDRESSES": "a:26379",
                "WEBSTACK_SENTINEL_SERVICE": "m",
                "WEBSTACK_REDIS_ADDRESS": "b:6379",
            },
            "WEBSTACK_REDIS_ADDRESS and WEBSTACK_SENTINEL_ADDRESSES are both set",
        ),
        (
            {"WEBSTACK_COOKIE_SECURE": "yes"},
            "WEBSTACK_COOKIE_SECURE must be one of auto, always, never, got 'yes'",
        ),
        (
            {"WEBSTACK_TRUSTED_PROXIES": "10.0.0.1,nginx"},
            "WEBSTACK_TRUSTED_PROXIES must be a comma-separated list of IP addresses or CIDR "
            "networks ('nginx' is not)",
        ),
        ({"WEBSTACK_KEY_PREFIX": "a b"}, "WEBSTACK_KEY_PREFIX must be 1 to 64 characters"),
        (
            {"WEBSTACK_MAX_BODY_BYTES": "100"},
            "WEBSTACK_MAX_BODY_BYTES must be an integer between 1024 and 10485760, got '100'",
        ),
        (
            {"WEBSTACK_REDIS_TIMEOUT": "nan"},
            "WEBSTACK_REDIS_TIMEOUT must be a number between 0.05 and 30.0, got 'nan'",
        ),
        (
            {"WEBSTACK_REDIS_RETRIES": "9"},
            "WEBSTACK_REDIS_RETRIES must be an integer between 0 and 5, got '9'",
        ),
        (
            {"WEBSTACK_REDIS_WAIT_REPLICAS": "-1"},
            "WEBSTACK_REDIS_WAIT_REPLICAS must be an integer between 0 and 5, got '-1'",
        ),
        (
            {"WEBSTACK_REDIS_WAIT_TIMEOUT": "60"},
            "WEBSTACK_REDIS_WAIT_TIMEOUT must be a number between 0.01 and 10.0, got '60'",
        ),
        ({"WEBSTACK_INSTANCE_NAME": "a\tb"}, "WEBSTACK_INSTANCE_NAME must be 1 to 100 printable"),
        ({"WEBSTACK_LOG_LEVEL": "loud"}, "WEBSTACK_LOG_LEVEL must be one of DEBUG, INFO"),
        (
            {"WEBSTACK_SESION_TTL": "60"},
            "WEBSTACK_SESION_TTL is not a known setting (did you mean WEBSTACK_SESSION_TTL?)",
        ),
    ],
)
def test_bad_setting_is_one_line_naming_it(env, expected):
    assert error_of({"WEBSTACK_SECRET_KEY": SECRET, **env}).startswith(expected)


def test_secret_key_is_required_and_long():
    assert error_of({}).startswith(
        "WEBSTACK_SECRET_KEY is required (at least 32 characters, e.g. the output of python3 -c"
    )
    assert error_of({"WEBSTACK_SECRET_KEY": "short"}) == (
        "WEBSTACK_SECRET_KEY must be at least 32 characters, got 5"
    )


def test_secret_values_never_appear_in_errors_or_repr():
    message = error_of({"WEBSTACK_SECRET_KEY": "hunter2-is-short"})
    assert "hunter2" not in message
    settings = load(
        WEBSTACK_REDIS_PASSWORD="redis-pw",
        WEBSTACK_SENTINEL_PASSWORD="s-pw",
        WEBSTACK_SENTINEL_ADDRESSES="a:1",
        WEBSTACK_SENTINEL_SERVICE="m",
    )
    text = repr(settings) + "\n".join(settings.summary())
    for secret in (SECRET, "redis-pw", "s-pw"):
        assert secret not in text


def test_config_file(tmp_path):
    path = tmp_path / "app.env"
    path.write_text(
        "# written by Ansible\n"
        "\n"
        f"WEBSTACK_SECRET_KEY={SECRET}\n"
        "WEBSTACK_SESSION_TTL = 120\n"
        'WEBSTACK_INSTANCE_NAME="app one"\n'
        "; another comment\n"
        "GUNICORN_CMD_ARGS=--workers 2\n"
        "WEBSTACK_REDIS_ADDRESS='10.0.0.5:6379'\n"
    )
    settings = load_settings({"WEBSTACK_CONFIG_FILE": str(path)})
    assert settings.session_ttl == 120
    assert settings.instance_name == "app one"
    assert settings.redis_address == ("10.0.0.5", 6379)


def test_environment_wins_over_config_file(tmp_path):
    path = tmp_path / "app.env"
    path.write_text(f"WEBSTACK_SECRET_KEY={SECRET}\nWEBSTACK_SESSION_TTL=120\n")
    settings = load_settings({"WEBSTACK_CONFIG_FILE": str(path), "WEBSTACK_SESSION_TTL": "300"})
    assert settings.session_ttl == 300


def test_config_file_errors(tmp_path):
    missing = tmp_path / "missing.env"
    assert error_of({"WEBSTACK_CONFIG_FILE": str(missing)}) == (
        f"WEBSTACK_CONFIG_FILE: cannot read {missing}: No such file or directory"
    )
    bad = tmp_path / "bad.env"
    bad.write_text("WEBSTACK_SESSION_TTL=60\nthis is not a setting\n")
    assert error_of({"WEBSTACK_CONFIG_FILE": str(bad)}) == (
        f"WEBSTACK_CONFIG_FILE: {bad} line 2: expected KEY=VALUE, got 'this is not a setting'"
    )
    typo = tmp_path / "typo.env"
    typo.write_text(f"WEBSTACK_SECRET_KEY={SECRET}\nWEBSTACK_REDIS_ADRESS=a:1\n")
    assert error_of({"WEBSTACK_CONFIG_FILE": str(typo)}).startswith(
        "WEBSTACK_REDIS_ADRESS is not a known setting (did you mean WEBSTACK_REDIS_ADDRESS?)"
    )


# --- PROMETHEUS_MULTIPROC_DIR: where several workers keep their metrics -----------------


def test_metrics_dir_unset_means_one_process():
    settings = load()
    assert settings.metrics_dir is None
    assert "PROMETHEUS_MULTIPROC_DIR=" in settings.summary()


def test_metrics_dir_is_read_from_the_environment(tmp_path):
    settings = load(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    assert settings.metrics_dir == tmp_path
    assert f"PROMETHEUS_MULTIPROC_DIR={tmp_path}" in settings.summary()


def test_metrics_dir_is_not_read_from_the_config_file(tmp_path):
    # prometheus_client reads the process environment only; the app must agree with it.
    path = tmp_path / "app.env"
    path.write_text(f"WEBSTACK_SECRET_KEY={SECRET}\nPROMETHEUS_MULTIPROC_DIR={tmp_path}\n")
    assert load_settings({"WEBSTACK_CONFIG_FILE": str(path)}).metrics_dir is None


@pytest.mark.parametrize("kind", ["empty", "missing", "a file"])
def test_unusable_metrics_dir_is_one_line(tmp_path, kind):
    value = {
        "empty": "",  # prometheus_client counts an empty value as set: refused, not unset
        "missing": str(tmp_path / "nowhere"),
        "a file": str(tmp_path / "file"),
    }[kind]
    (tmp_path / "file").write_text("")
    message = error_of({"WEBSTACK_SECRET_KEY": SECRET, "PROMETHEUS_MULTIPROC_DIR": value})
    assert message == (
        "PROMETHEUS_MULTIPROC_DIR must name a directory this process can write "
        f"(unset it for a single process), got {value!r}"
    )


def test_deprecated_lower_case_metrics_dir_is_refused(tmp_path):
    message = error_of({"WEBSTACK_SECRET_KEY": SECRET, "prometheus_multiproc_dir": str(tmp_path)})
    assert message == (
        "prometheus_multiproc_dir is the deprecated name: set PROMETHEUS_MULTIPROC_DIR instead"
    )
