"""Sentinel URLs and settings: REDIS_SENTINELS / REDIS_MASTER_NAME / redis+sentinel://."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqcollector.config import ConfigError, load_settings, mask_url
from seqcollector.redis_target import (
    SentinelTarget,
    SentinelUrlError,
    parse_hosts,
    parse_sentinel_url,
)

hosts = st.lists(
    st.tuples(st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True), st.integers(1, 65535)),
    min_size=1,
    max_size=4,
).map(tuple)


@given(
    hosts,
    st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,15}", fullmatch=True),
    st.integers(0, 15),
    st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True)),
)
def test_sentinel_url_round_trips(
    sentinels: tuple[tuple[str, int], ...], master: str, db: int, password: str | None
) -> None:
    target = SentinelTarget(sentinels, master, db, password)
    assert parse_sentinel_url(target.url()) == target


def test_sentinel_url_parts() -> None:
    t = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2/prod/3")
    assert t.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379))
    assert (t.master, t.db, t.password) == ("prod", 3, "s3cret")
    assert parse_sentinel_url("redis+sentinel://h:1/m").db == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h:1", "names no master"),
        ("redis+sentinel://h:1/", "names no master"),
        ("redis+sentinel:///m", "no Sentinel given"),
        ("redis+sentinel://h:x/m", "no numeric port"),
        ("redis+sentinel://h:0/m", "not in 1..65535"),
        ("redis+sentinel://h:1/m/x", "is not a number"),
        ("redis+sentinel://h:1/m/1/2", "is not MASTER_NAME[/DB]"),
    ],
)
def test_bad_sentinel_urls_are_refused(url: str, says: str) -> None:
    with pytest.raises(SentinelUrlError, match=says.replace("[", r"\[").replace("]", r"\]")):
        parse_sentinel_url(url)
    with pytest.raises(ConfigError, match="SEQ_REDIS_URL"):
        load_settings(environ={"SEQ_REDIS_URL": url})


def test_redis_sentinels_build_the_url() -> None:
    s = load_settings(
        environ={
            "REDIS_SENTINELS": "127.0.0.1:26379, 127.0.0.2:26380",
            "REDIS_MASTER_NAME": "collector",
            "REDIS_DB": "2",
        }
    )
    assert s.redis_url() == "redis+sentinel://127.0.0.1:26379,127.0.0.2:26380/collector/2"
    assert load_settings(environ={}).redis_url() == "redis://localhost:6379/0"
    # SEQ_REDIS_URL still wins over everything
    env = {"REDIS_SENTINELS": "h:1", "SEQ_REDIS_URL": "redis://x:1/0"}
    assert load_settings(environ=env).redis_url() == "redis://x:1/0"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"REDIS_SENTINELS": "h:port"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": ":1"}, "REDIS_SENTINELS"),
        ({"SEQ_REDIS_MIN_REPLICAS": "-1"}, "SEQ_REDIS_MIN_REPLICAS"),
        ({"SEQ_REDIS_MIN_REPLICAS": "101"}, "SEQ_REDIS_MIN_REPLICAS"),
    ],
)
def test_bad_sentinel_settings_are_refused(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings(environ=env)


def test_sentinel_password_is_masked() -> None:
    shown = mask_url("redis+sentinel://:s3cret@h1:1,h2:2/m/0")
    assert "s3cret" not in shown and "h1:1,h2:2/m/0" in shown


def test_hosts_default_port() -> None:
    assert parse_hosts("a,b:2", "X") == (("a", 26379), ("b", 2))
