"""Where the collector's Redis is: one server (`redis://`, `rediss://`, `unix://`), or the
master of a Sentinel group (`redis+sentinel://`), and the client that follows it.

A Sentinel URL names the Sentinels, the master's name and the database:

    redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]

The password is the master's (and its replicas'); the Sentinels are asked without one.
`REDIS_SENTINELS=host:port,host:port` with `REDIS_MASTER_NAME` (and REDIS_DB) builds the same
URL from the environment (`Settings.redis_url()`). The client is redis-py's own
`Sentinel.master_for`: its pool asks the Sentinels for the master on every new connection and
after a connection to a demoted master fails, so a failover is followed by the retries every
Redis operation of the collector already has.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379


class SentinelUrlError(ValueError):
    """A `redis+sentinel://` URL that names no Sentinel, no master or a bad database."""


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    password: str | None = None
    username: str | None = None

    def url(self) -> str:
        auth = ""
        if self.password is not None:
            auth = f"{self.username or ''}:{self.password}@"
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"{SENTINEL_SCHEME}://{auth}{hosts}/{self.master}/{self.db}"


def is_sentinel_url(url: str) -> bool:
    return url.lower().startswith(SENTINEL_SCHEME + "://")


def parse_hosts(text: str, what: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (port 26379 when left out) -> the Sentinels' addresses."""
    hosts: list[tuple[str, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        host, sep, port_text = part.rpartition(":")
        if not sep:
            host, port_text = part, str(DEFAULT_SENTINEL_PORT)
        host = host.strip("[]")
        if not host:
            raise SentinelUrlError(f"{what}: {part!r} names no host (give host:port)")
        try:
            port = int(port_text)
        except ValueError:
            raise SentinelUrlError(f"{what}: {part!r} has no numeric port") from None
        if not 1 <= port <= 65535:
            raise SentinelUrlError(f"{what}: {part!r}: port {port} is not in 1..65535")
        hosts.append((host, port))
    if not hosts:
        raise SentinelUrlError(f"{what}: no Sentinel given (host:port[,host:port...])")
    return tuple(hosts)


def parse_sentinel_url(url: str) -> SentinelTarget:
    if not is_sentinel_url(url):
        raise SentinelUrlError(f"{url!r} is not a {SENTINEL_SCHEME}:// URL")
    rest = url[len(SENTINEL_SCHEME) + 3 :]
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, pw = userinfo.partition(":")
        username, password = (unquote(user) or None), unquote(pw)
    sentinels = parse_hosts(netloc, "redis+sentinel URL")
    parts = [p for p in urlsplit("/" + path).path.split("/") if p]
    if not parts:
        raise SentinelUrlError(
            "redis+sentinel URL names no master: give redis+sentinel://HOST:PORT/MASTER_NAME[/DB]"
        )
    if len(parts) > 2:
        raise SentinelUrlError(f"redis+sentinel URL: {path!r} is not MASTER_NAME[/DB]")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise SentinelUrlError(f"redis+sentinel URL: database {parts[1]!r} is not a number")
        db = int(parts[1])
    return SentinelTarget(sentinels, unquote(parts[0]), db, password, username)
