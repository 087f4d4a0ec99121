"""Configuration of seqcollector: every setting of the Go collector, plus our own.

Sources, lowest to highest precedence: the defaults on the structs below, an optional YAML
file (keys are the lowercase setting names, groups nest: ``timeouts: {event_processing: 10}``),
then the environment. One table, ``_SPECS``, says for every setting its environment name, its
YAML key and how it is parsed, validated and shown; ``load_settings`` and ``describe_settings``
are both driven by it.

Compatibility with the Go collector's environment (``config/settings.go``):

* an empty variable counts as unset;
* lists are JSON arrays of strings, and ``"`` around an entry or around
  ``PROTOCOL_STATE_CONTRACT`` is stripped;
* ``RPC_NODES`` empty or unset falls back to ``[PROST_RPC_URL]`` (only when the YAML file
  gives no ``rpc_nodes`` either);
* booleans accept what Go's ``strconv.ParseBool`` accepts, and yes/no/on/off;
* integers stay integers; durations are seconds and also accept ``500ms``, ``30s``, ``1m``,
  ``24h`` (so the seed's section 9.1 YAML, ``monitoring`` group included, loads verbatim).

Unlike the Go collector, a bad value is never silently replaced or truncated: it raises
``ConfigError`` at start-up with a one-line message naming the variable.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import msgspec
import msgspec.yaml

from seqcollector.core.addresses import checksum, lower_address
from seqcollector.core.config import RANGES, CoreConfig
from seqcollector.errors import SettingsError
from seqcollector.redis_target import (
    SENTINEL_SCHEME,
    SentinelTarget,
    SentinelUrlError,
    is_sentinel_url,
    parse_hosts,
    parse_sentinel_url,
)

__all__ = [
    "ConfigError",
    "Features",
    "Monitoring",
    "Settings",
    "Timeouts",
    "WorkerPool",
    "describe_settings",
    "load_settings",
    "mask_secret",
    "mask_url",
    "redis_url_option",
    "setting_from_env",
]


class ConfigError(SettingsError):
    """An invalid setting. ``str()`` is one line: ``<SETTING>: <problem>`` (exit code 2)."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = " ".join(problem.split())  # one line, whatever the cause said
        super().__init__(f"{setting}: {self.problem}")


# --------------------------------------------------------------------------------------------
# The settings. Defaults live here and only here.
# --------------------------------------------------------------------------------------------


class Timeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-stage deadlines, in seconds (seed section 6.1 / 9.1)."""

    event_processing: float = 30.0
    batch_preparation: float = 60.0
    market_processing: float = 30.0
    batch_processing: float = 120.0
    block_fetch: float = 30.0
    redis_operation: float = 5.0


def _cpu_count() -> int:
    return os.cpu_count() or 2


class WorkerPool(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Bounded worker pool (seed section 6.2). ``size`` defaults to the CPU count."""

    size: int = msgspec.field(default_factory=_cpu_count)
    acquisition_timeout: float = 5.0
    metrics_enabled: bool = True


class Features(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Feature flags (seed section 9.1)."""

    new_context_management: bool = True
    enhanced_worker_pool: bool = True
    metrics_enabled: bool = True  # FEATURE_METRICS_ENABLED: /metrics served and recorded
    # seqcollector's own: reward updates (`submitUpdateRewards`) and day-rollover markers.
    # On by default, as the Go collector sends them; off changes the core's outputs.
    rewards: bool = True
    # ATTESTOR_QUEUE_PUSH_ENABLED: every batch also goes to the attestor queue (Go default off)
    attestor_queue: bool = False
    # INIT_CLEANUP_ENABLED: the start-up cleanup of stale collector keys (Go default off)
    cleanup: bool = False
    # SEQ_API_ENABLED: `run` serves the read API, /metrics, /health and /ready
    api: bool = True


class Monitoring(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Monitoring thresholds (seed section 9.1); durations in seconds."""

    error_rate_threshold: float = 0.1
    health_check_interval: float = 60.0
    metrics_retention: float = 24 * 3600.0
    # Readiness (/ready), seqcollector's own: the last commit within this many BLOCK_TIMEs,
    # the head lag under this many blocks, the outbox's oldest entry younger than this.
    ready_commit_blocks: int = 10
    ready_max_lag_blocks: int = 50
    ready_max_outbox_age: float = 300.0


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Effective configuration. Build it with ``load_settings``; addresses are lowercase.

    Durations are seconds (floats) unless the name says ``_ms``. ``sources`` maps an
    environment name to ``"file"`` or ``"env"`` for every setting not left at its default.
    """

    # RPC (Go: go-rpc-helper)
    rpc_nodes: tuple[str, ...] = ()
    archive_rpc_nodes: tuple[str, ...] = ()
    rpc_max_retries: int = 3
    rpc_retry_delay_ms: int = 500
    rpc_max_retry_delay_s: float = 30.0
    rpc_request_timeout_s: float = 30.0
    # Chain
    protocol_state_contract: str = ""
    data_market_addresses: tuple[str, ...] = ()
    # Redis
    redis_host: str = "localhost"
    redis_port: int = 6379
    redis_db: int = 0
    # Sentinel: REDIS_SENTINELS="host:port,host:port" with REDIS_MASTER_NAME; see redis_url()
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_master_name: str = "mymaster"
    # Replicas that must acknowledge (WAIT) what the outbox delivers; 0: no WAIT
    redis_min_replicas: int = 0
    # HTTP peers and secrets
    auth_read_token: str = ""
    slack_reporting_url: str = ""
    tx_relayer_url: str = ""
    tx_relayer_auth_write_token: str = ""
    # Behaviour of the Go collector
    batch_size: int = 50
    rewards_update_batch_size: int = 50
    rewards_update_epoch_interval: int = 50
    block_time: float = 2.0
    http_timeout: float = 15.0
    past_days_buffer: int = 5
    retry_limits: int = 3
    contract_query_timeout: float = 60.0
    periodic_eligible_count_alerts: bool = True
    concurrent_submission_count_updates: int = 10
    memory_profiling_interval: float = 15.0  # minutes, as Go; 0: no memory reports
    enable_market_migration: bool = False
    # (old, new) lowercase address pairs, MARKET_MIGRATION_MAPPINGS="old:new,old:new"
    market_migration_mappings: tuple[tuple[str, str], ...] = ()
    market_migration_days: int = 1
    # seqcollector's own
    confirmations: int = 0
    max_reorg_depth: int = 64
    start_block: int | None = None  # None: start at the chain head
    redis_url_override: str = ""  # SEQ_REDIS_URL / yaml `redis_url`; see redis_url()
    api_host: str = "0.0.0.0"  # as Go, which listens on :8080 on every interface
    api_port: int = 8080
    log_format: str = "auto"  # auto: console on a terminal, JSON lines otherwise
    log_level: str = "info"
    slot_submissions_ttl_s: int = 7 * 24 * 3600
    submission_sets_ttl_s: int = 1200  # upstream's TTL on SnapshotCollector.* (0: no check)
    # How long `run`/`replay`/`check-config --connect` retry an unreachable Redis, RPC node
    # or contract at start before giving up with one line (0: one attempt).
    startup_timeout_s: float = 60.0
    # Active/standby (`runtime.lease`): the lease's TTL; the active renews every third of it,
    # a standby takes over within about that long after the active stops renewing.
    ha_lease_s: float = 10.0
    # Seed section 9.1 groups
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    worker_pool: WorkerPool = msgspec.field(default_factory=WorkerPool)
    features: Features = msgspec.field(default_factory=Features)
    monitoring: Monitoring = msgspec.field(default_factory=Monitoring)
    # Where each non-default value came from: (ENV_NAME, "file" | "env"), sorted.
    sources: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # Keep "addresses are stored lowercase" true even for hand-built Settings.
        msgspec.structs.force_setattr(
            self, "protocol_state_contract", self.protocol_state_contract.lower()
        )
        msgspec.structs.force_setattr(
            self, "data_market_addresses", tuple(a.lower() for a in self.data_market_addresses)
        )

    @property
    def attestor_queue_push_enabled(self) -> bool:
        """ATTESTOR_QUEUE_PUSH_ENABLED (``features.attestor_queue``)."""
        return self.features.attestor_queue

    @property
    def init_cleanup_enabled(self) -> bool:
        """INIT_CLEANUP_ENABLED (``features.cleanup``)."""
        return self.features.cleanup

    @property
    def markets_checksummed(self) -> tuple[str, ...]:
        """The data market addresses in EIP-55 form, for output (queue JSON, hash fields)."""
        return tuple(checksum(a) for a in self.data_market_addresses)

    @property
    def protocol_state_checksummed(self) -> str:
        """PROTOCOL_STATE_CONTRACT in EIP-55 form ("" when unset)."""
        return checksum(self.protocol_state_contract) if self.protocol_state_contract else ""

    def redis_url(self) -> str:
        """SEQ_REDIS_URL when set; else with REDIS_SENTINELS the Sentinel URL of
        REDIS_MASTER_NAME (``redis+sentinel://H:P,H:P/MASTER/REDIS_DB``); else
        ``redis://REDIS_HOST:REDIS_PORT/REDIS_DB``."""
        if self.redis_url_override:
            return self.redis_url_override
        if self.redis_sentinels:
            target = SentinelTarget(self.redis_sentinels, self.redis_master_name, self.redis_db)
            return target.url()
        return f"redis://{self.redis_host}:{self.redis_port}/{self.redis_db}"

    def source(self, env_name: str) -> str:
        """``"default"``, ``"file"`` or ``"env"``: where the setting ``env_name`` came from."""
        return dict(self.sources).get(env_name, "default")

    def require_chain(self) -> Settings:
        """Raise ConfigError unless the chain side is configured; return self."""
        if not self.protocol_state_contract:
            raise ConfigError("PROTOCOL_STATE_CONTRACT", "must be set to the ProtocolState address")
        if not self.data_market_addresses:
            raise ConfigError("DATA_MARKET_ADDRESSES", "must list at least one data market")
        return self

    def require_run(self) -> Settings:
        """Raise ConfigError unless `run` can start with these settings; return self.

        The chain side, an RPC node, and a core configuration the core accepts.
        `check-config` applies the same rule, so it refuses what `run` refuses.
        """
        self.core_config()
        if not self.rpc_nodes:
            raise ConfigError("RPC_NODES", "no RPC endpoint (set RPC_NODES or PROST_RPC_URL)")
        return self

    def core_config(self) -> CoreConfig:
        """The part of the configuration the core depends on (requires the chain side)."""
        self.require_chain()
        try:
            return CoreConfig(
                protocol_state=self.protocol_state_contract,
                markets=list(self.data_market_addresses),
                batch_size=self.batch_size,
                max_reorg_depth=self.max_reorg_depth,
                attestor_queue_push_enabled=self.attestor_queue_push_enabled,
                slot_submissions_ttl_s=self.slot_submissions_ttl_s,
                rewards=self.features.rewards,
                rewards_update_batch_size=self.rewards_update_batch_size,
                rewards_update_epoch_interval=self.rewards_update_epoch_interval,
                past_days_buffer=self.past_days_buffer,
                periodic_eligible_count_alerts=self.periodic_eligible_count_alerts,
            )
        except ValueError as exc:  # only hand-built Settings get here: load_settings checks
            raise ConfigError("core configuration", str(exc)) from None


_GROUPS: Final[dict[str, type[msgspec.Struct]]] = {
    "timeouts": Timeouts,
    "worker_pool": WorkerPool,
    "features": Features,
    "monitoring": Monitoring,
}


# --------------------------------------------------------------------------------------------
# Masking
# --------------------------------------------------------------------------------------------


def mask_secret(text: str) -> str:
    """``""`` stays empty; short secrets become ``***``; longer ones show 2 chars: ``ab****``."""
    if not text:
        return ""
    return "***" if len(text) < 8 else f"{text[:2]}****"


def mask_url(url: str) -> str:
    """`url` with its password, query values and key-like path segments hidden."""
    return _mask_url(url)


def _mask_url(url: str, *, mask_path: bool = False) -> str:
    """Hide userinfo, query values, and the path (all of it, or segments that look like keys)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        password, username = parts.password, parts.username
    except ValueError:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        host = netloc.rpartition("@")[2]
        if password is not None:
            netloc = f"{username or ''}:{mask_secret(password)}@{host}"
        else:
            netloc = f"{mask_secret(username or '')}@{host}"
    path = parts.path
    if mask_path and path.strip("/"):
        path = "/" + mask_secret(path.lstrip("/"))
    else:  # RPC providers put API keys in the path (/v3/<key>): hide long segments
        path = "/".join(mask_secret(seg) if len(seg) >= 16 else seg for seg in path.split("/"))
    query = "&".join(
        f"{k}={mask_secret(v)}" if sep else k
        for k, sep, v in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit((parts.scheme, netloc, path, query, ""))


# --------------------------------------------------------------------------------------------
# Kinds: how a raw value (an environment string, or whatever YAML produced) becomes typed.
# --------------------------------------------------------------------------------------------


class _Invalid(Exception):
    """A parser's complaint; the loader turns it into ConfigError naming the setting."""


def _clip(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return str(value)


def _as_text(raw: object) -> str:
    if isinstance(raw, str):
        return raw.strip()
    if isinstance(raw, int) and not isinstance(raw, bool):
        # YAML 1.1 reads unquoted 0x.. as hex and 0123 as octal: never guess the text back.
        raise _Invalid(f"must be a string, got the number {raw} (quote the value in YAML)")
    raise _Invalid(f"must be a string, got {type(raw).__name__}")


_INT_RE: Final = re.compile(r"[+-]?\d+")
_NUMBER_RE: Final = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(ms|s|m|h)?", re.IGNORECASE)
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_TRUE: Final = frozenset({"1", "t", "true", "y", "yes", "on"})
_FALSE: Final = frozenset({"0", "f", "false", "n", "no", "off"})


def _as_int(raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and _INT_RE.fullmatch(raw.strip()):
        return int(raw.strip())
    raise _Invalid(f"not an integer: {_clip(raw)}")


def _as_number(raw: object, *, units: bool) -> float:
    value: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif (
        isinstance(raw, str)
        and (m := _NUMBER_RE.fullmatch(raw.strip()))
        and (units or m.group(2) is None)
    ):
        value = float(m.group(1)) * _UNIT_S[(m.group(2) or "s").lower()]
    if value is None or not math.isfinite(value):
        what = "a duration in seconds (e.g. 30, 2.5, 500ms, 1m)" if units else "a number"
        raise _Invalid(f"not {what}: {_clip(raw)}")
    return value


def _in_range(n: int, lo: int, hi: int) -> int:
    if not lo <= n <= hi:
        raise _Invalid(f"must be between {lo} and {hi}, got {n}")
    return n


def _as_str_list(raw: object, *, echo: bool) -> list[str]:
    if isinstance(raw, str):
        try:
            return msgspec.json.decode(raw.strip(), type=list[str])
        except msgspec.DecodeError as exc:
            shown = f"{_clip(raw.strip())} " if echo else ""
            raise _Invalid(f"not a JSON array of strings: {shown}({exc})") from None
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            try:
                _as_text(item)
            except _Invalid as exc:
                raise _Invalid(f"entry {i}: {exc}") from None
        return raw
    raise _Invalid(f"must be a list of strings, got {type(raw).__name__}")


class _Kind:
    """Parses a raw value into the setting's type (raising _Invalid) and shows it back."""

    def parse(self, raw: object) -> Any:
        raise NotImplementedError

    def show(self, value: Any) -> str:
        return _plain(value)


@dataclass(frozen=True)
class _Int(_Kind):
    lo: int
    hi: int

    def parse(self, raw: object) -> int:
        return _in_range(_as_int(raw), self.lo, self.hi)


DAY_S: Final = 24 * 3600.0
MAX_BLOCK: Final = 2**62  # block numbers: what a journal (msgpack int64) holds


@dataclass(frozen=True)
class _Seconds(_Kind):
    """A duration, by default 10 ms to a day (a deadline shorter than a round trip on
    loopback can never be met; one longer than a day is a typo)."""

    lo: float = 0.01
    hi: float = DAY_S

    def parse(self, raw: object) -> float:
        value = _as_number(raw, units=True)
        if not self.lo <= value <= self.hi:
            raise _Invalid(
                f"must be between {_plain(self.lo)} and {_plain(self.hi)} seconds "
                f"(e.g. 30, 2.5, 500ms, 1m), got {_plain(value)}"
            )
        return value


@dataclass(frozen=True)
class _Minutes(_Kind):
    """Minutes, as the Go collector reads MEMORY_PROFILING_INTERVAL (0: off; Go panics)."""

    def parse(self, raw: object) -> float:
        value = _as_number(raw, units=False)
        if not 0.0 <= value <= 7 * 24 * 60:
            raise _Invalid(f"must be between 0 (off) and 10080 minutes, got {_plain(value)}")
        return value


@dataclass(frozen=True)
class _Fraction(_Kind):
    def parse(self, raw: object) -> float:
        value = _as_number(raw, units=False)
        if not 0.0 <= value <= 1.0:
            raise _Invalid(f"must be between 0 and 1, got {_plain(value)}")
        return value


@dataclass(frozen=True)
class _Bool(_Kind):
    def parse(self, raw: object) -> bool:
        if isinstance(raw, bool):
            return raw
        text = raw.strip().lower() if isinstance(raw, str) else None
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise _Invalid(f"not a boolean (true/false, 1/0, yes/no): {_clip(raw)}")


@dataclass(frozen=True)
class _Text(_Kind):
    secret: bool = False

    def parse(self, raw: object) -> str:
        return _as_text(raw)

    def show(self, value: Any) -> str:
        return mask_secret(value) if self.secret else str(value)


@dataclass(frozen=True)
class _Name(_Kind):
    """A non-empty name (REDIS_MASTER_NAME)."""

    def parse(self, raw: object) -> str:
        text = _as_text(raw).strip()
        if not text:
            raise _Invalid("is empty: give a name")
        return text


@dataclass(frozen=True)
class _OneDay(_Kind):
    """MONITORING_METRICS_RETENTION: the seed's 24h, and only that. Prometheus pulls /metrics
    and keeps the history; the process keeps none it could prune."""

    def parse(self, raw: object) -> float:
        value = _as_number(raw, units=True)
        if value != DAY_S:
            raise _Invalid(
                f"only 24h is accepted, got {_plain(value)} s: seqcollector keeps no metric"
                " history (Prometheus scrapes /metrics and stores it); set the retention on the"
                " Prometheus server (--storage.tsdb.retention.time) and unset this one"
            )
        return value


@dataclass(frozen=True)
class _Choice(_Kind):
    """One of a few words, in any case; stored lowercase."""

    words: tuple[str, ...]

    def parse(self, raw: object) -> str:
        text = _as_text(raw).strip().lower()
        if text not in self.words:
            raise _Invalid(f"must be one of {', '.join(self.words)}, got {_clip(raw)}")
        return text


@dataclass(frozen=True)
class _Url(_Kind):
    schemes: tuple[str, ...]
    mask_path: bool = False

    def parse(self, raw: object) -> str:
        url = _as_text(raw).strip('"')
        if not url:
            return ""
        if SENTINEL_SCHEME in self.schemes and is_sentinel_url(url):
            try:
                parse_sentinel_url(url)
            except SentinelUrlError as exc:
                raise _Invalid(str(exc)) from None
            return url
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise _Invalid(f"not a valid URL: {self.show(url)} ({exc})") from None
        if parts.scheme.lower() not in self.schemes or not (parts.netloc or parts.scheme == "unix"):
            raise _Invalid(
                f"not a URL with scheme {'/'.join(self.schemes)}: {_clip(self.show(url))}"
            )
        return url

    def show(self, value: Any) -> str:
        return _mask_url(str(value), mask_path=self.mask_path)


@dataclass(frozen=True)
class _UrlList(_Kind):
    schemes: tuple[str, ...]

    def parse(self, raw: object) -> tuple[str, ...]:
        url = _Url(self.schemes)
        out = []
        for i, item in enumerate(_as_str_list(raw, echo=False)):
            try:
                parsed = url.parse(item)
            except _Invalid as exc:
                raise _Invalid(f"entry {i}: {exc}") from None
            if not parsed:
                raise _Invalid(f"entry {i} is empty")
            out.append(parsed)
        return tuple(out)

    def show(self, value: Any) -> str:
        return json.dumps([_mask_url(u) for u in value])


def _address(raw: object) -> str:
    text = _as_text(raw).strip('"').strip()
    if not text:
        return ""
    lc = lower_address(text)
    if lc is None:
        raise _Invalid(f"not a 20-byte hex address (0x + 40 hex digits): {_clip(text)}")
    body = text[2:]
    if body not in (body.lower(), body.upper()) and body != checksum(lc)[2:]:
        raise _Invalid(
            f"{text} has mixed case but a wrong EIP-55 checksum (fix it, or write it lowercase)"
        )
    return lc


@dataclass(frozen=True)
class _Address(_Kind):
    def parse(self, raw: object) -> str:
        return _address(raw)

    def show(self, value: Any) -> str:
        return checksum(value) if value else ""


@dataclass(frozen=True)
class _AddressList(_Kind):
    def parse(self, raw: object) -> tuple[str, ...]:
        seen: dict[str, int] = {}
        for i, item in enumerate(_as_str_list(raw, echo=True)):
            try:
                lc = _address(item)
            except _Invalid as exc:
                raise _Invalid(f"entry {i}: {exc}") from None
            if not lc:
                raise _Invalid(f"entry {i} is empty")
            if lc in seen:
                raise _Invalid(f"duplicate address {checksum(lc)} (entries {seen[lc]} and {i})")
            seen[lc] = i
        return tuple(seen)

    def show(self, value: Any) -> str:
        return json.dumps([checksum(a) for a in value])


@dataclass(frozen=True)
class _AddressPairs(_Kind):
    """``old:new,old:new`` (Go's MARKET_MIGRATION_MAPPINGS) or a YAML list of such strings."""

    def parse(self, raw: object) -> tuple[tuple[str, str], ...]:
        if isinstance(raw, str):
            items = [item for item in (part.strip() for part in raw.split(",")) if item]
        else:
            items = list(_as_str_list(raw, echo=True))
        pairs: list[tuple[str, str]] = []
        olds: dict[str, int] = {}
        for i, item in enumerate(items):
            old_text, sep, new_text = item.partition(":")
            if not sep:
                raise _Invalid(f"entry {i} is not old:new: {_clip(item)}")
            try:
                old, new = _address(old_text), _address(new_text)
            except _Invalid as exc:
                raise _Invalid(f"entry {i}: {exc}") from None
            if not old or not new:
                raise _Invalid(f"entry {i} is not old:new: {_clip(item)}")
            if old == new:
                raise _Invalid(f"entry {i} maps {checksum(old)} to itself")
            if old in olds:
                raise _Invalid(f"{checksum(old)} is mapped twice (entries {olds[old]} and {i})")
            olds[old] = i
            pairs.append((old, new))
        return tuple(pairs)

    def show(self, value: Any) -> str:
        return ",".join(f"{checksum(a)}:{checksum(b)}" for a, b in value)


@dataclass(frozen=True)
class _StartBlock(_Kind):
    def parse(self, raw: object) -> int | None:
        if isinstance(raw, str) and raw.strip().lower() in ("head", "latest"):
            return None
        return _in_range(_as_int(raw), 0, MAX_BLOCK)

    def show(self, value: Any) -> str:
        return "head" if value is None else str(value)


@dataclass(frozen=True)
class _PoolSize(_Kind):
    def parse(self, raw: object) -> int:
        if isinstance(raw, str) and raw.strip().lower() in ("gomaxprocs", "auto"):
            return _cpu_count()
        return _in_range(_as_int(raw), 1, 1024)


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    env: str  # the environment name; names the setting in errors and describe_settings()
    key: str  # YAML key, dotted for groups ("timeouts.event_processing")
    kind: _Kind
    aliases: tuple[str, ...] = ()  # other environment names for the same setting
    attr: str = ""  # Settings field when it differs from the key's last part

    @property
    def path(self) -> tuple[str, ...]:
        *group, name = self.key.split(".")
        return (*group, self.attr or name)


_HTTP: Final = ("http", "https")
_RPC: Final = ("http", "https", "ws", "wss")
_REDIS: Final = ("redis", "rediss", "unix", SENTINEL_SCHEME)


@dataclass(frozen=True)
class _Sentinels(_Kind):
    """REDIS_SENTINELS: ``host:port,host:port`` (port 26379 when left out)."""

    def parse(self, raw: object) -> tuple[tuple[str, int], ...]:
        text = ",".join(_as_str_list(raw, echo=False)) if isinstance(raw, list) else _as_text(raw)
        if not text.strip():
            return ()
        try:
            return parse_hosts(text, "REDIS_SENTINELS")
        except SentinelUrlError as exc:
            raise _Invalid(str(exc).removeprefix("REDIS_SENTINELS: ")) from None

    def show(self, value: Any) -> str:
        return ",".join(f"{h}:{p}" for h, p in value)


_SPECS: Final[tuple[_Spec, ...]] = (
    # The Go collector's environment: same names, same meaning.
    _Spec("RPC_NODES", "rpc_nodes", _UrlList(_RPC)),  # empty: falls back to PROST_RPC_URL
    _Spec("ARCHIVE_RPC_NODES", "archive_rpc_nodes", _UrlList(_RPC)),
    _Spec("RPC_MAX_RETRIES", "rpc_max_retries", _Int(0, 100)),
    _Spec("RPC_RETRY_DELAY_MS", "rpc_retry_delay_ms", _Int(0, 600_000)),
    _Spec("RPC_MAX_RETRY_DELAY_S", "rpc_max_retry_delay_s", _Seconds(lo=0)),
    _Spec("RPC_REQUEST_TIMEOUT_S", "rpc_request_timeout_s", _Seconds()),
    _Spec("PROTOCOL_STATE_CONTRACT", "protocol_state_contract", _Address()),
    _Spec("DATA_MARKET_ADDRESSES", "data_market_addresses", _AddressList()),
    _Spec("REDIS_HOST", "redis_host", _Text()),
    _Spec("REDIS_PORT", "redis_port", _Int(1, 65535)),
    _Spec("REDIS_DB", "redis_db", _Int(0, 1_000_000)),  # the server checks its own count
    _Spec("REDIS_SENTINELS", "redis_sentinels", _Sentinels()),
    _Spec("REDIS_MASTER_NAME", "redis_master_name", _Name()),
    _Spec("AUTH_READ_TOKEN", "auth_read_token", _Text(secret=True)),
    _Spec("SLACK_REPORTING_URL", "slack_reporting_url", _Url(_HTTP, mask_path=True)),
    _Spec("TX_RELAYER_URL", "tx_relayer_url", _Url(_HTTP)),
    _Spec("TX_RELAYER_AUTH_WRITE_TOKEN", "tx_relayer_auth_write_token", _Text(secret=True)),
    _Spec("BATCH_SIZE", "batch_size", _Int(*RANGES["batch_size"])),
    _Spec("REWARDS_UPDATE_BATCH_SIZE", "rewards_update_batch_size", _Int(1, 100_000)),
    _Spec("REWARDS_UPDATE_EPOCH_INTERVAL", "rewards_update_epoch_interval", _Int(1, 1_000_000)),
    _Spec("BLOCK_TIME", "block_time", _Seconds(hi=3600)),
    _Spec("HTTP_TIMEOUT", "http_timeout", _Seconds()),
    _Spec("PAST_DAYS_BUFFER", "past_days_buffer", _Int(0, 10_000)),
    _Spec("RETRY_LIMITS", "retry_limits", _Int(1, 1_000)),  # attempts; 0 would never try
    _Spec("CONTRACT_QUERY_TIMEOUT", "contract_query_timeout", _Seconds()),
    _Spec("PERIODIC_ELIGIBLE_COUNT_ALERTS", "periodic_eligible_count_alerts", _Bool()),
    _Spec("ATTESTOR_QUEUE_PUSH_ENABLED", "features.attestor_queue", _Bool()),
    _Spec("INIT_CLEANUP_ENABLED", "features.cleanup", _Bool()),
    _Spec("CONCURRENT_SUBMISSION_COUNT_UPDATES", "concurrent_submission_count_updates",
          _Int(1, 10_000)),
    _Spec("MEMORY_PROFILING_INTERVAL", "memory_profiling_interval", _Minutes()),
    _Spec("ENABLE_MARKET_MIGRATION", "enable_market_migration", _Bool()),
    _Spec("MARKET_MIGRATION_MAPPINGS", "market_migration_mappings", _AddressPairs()),
    _Spec("MARKET_MIGRATION_DAYS", "market_migration_days", _Int(1, 10_000)),
    # seqcollector's own.
    _Spec("SEQ_CONFIRMATIONS", "confirmations", _Int(0, 10_000)),
    _Spec("SEQ_MAX_REORG_DEPTH", "max_reorg_depth", _Int(*RANGES["max_reorg_depth"])),
    _Spec("SEQ_START_BLOCK", "start_block", _StartBlock()),
    _Spec("SEQ_REDIS_URL", "redis_url", _Url(_REDIS), attr="redis_url_override"),
    _Spec("SEQ_REDIS_MIN_REPLICAS", "redis_min_replicas", _Int(0, 100)),
    _Spec("SEQ_API_HOST", "api_host", _Text()),
    _Spec("SEQ_API_PORT", "api_port", _Int(0, 65535)),
    _Spec("SEQ_API_ENABLED", "features.api", _Bool()),
    _Spec("SEQ_LOG_FORMAT", "log_format", _Choice(("auto", "console", "json"))),
    _Spec("SEQ_LOG_LEVEL", "log_level", _Choice(("debug", "info", "warning", "error"))),
    _Spec("SEQ_SLOT_SUBMISSIONS_TTL_S", "slot_submissions_ttl_s",
          _Int(*RANGES["slot_submissions_ttl_s"])),
    _Spec("SEQ_SUBMISSION_SETS_TTL_S", "submission_sets_ttl_s",
          _Int(0, 10 * 365 * 24 * 3600)),
    _Spec("SEQ_STARTUP_TIMEOUT_S", "startup_timeout_s", _Seconds(lo=0)),
    _Spec("SEQ_HA_LEASE_S", "ha_lease_s", _Seconds(lo=0.1, hi=3600)),
    # Seed section 9.1. The Go names win where a timeout already had one.
    _Spec("EVENT_PROCESSING_TIMEOUT", "timeouts.event_processing", _Seconds(),
          aliases=("TIMEOUT_EVENT_PROCESSING",)),
    _Spec("TIMEOUT_BATCH_PREPARATION", "timeouts.batch_preparation", _Seconds()),
    _Spec("TIMEOUT_MARKET_PROCESSING", "timeouts.market_processing", _Seconds()),
    _Spec("BATCH_PROCESSING_TIMEOUT", "timeouts.batch_processing", _Seconds(),
          aliases=("TIMEOUT_BATCH_PROCESSING",)),
    _Spec("BLOCK_FETCH_TIMEOUT", "timeouts.block_fetch", _Seconds(),
          aliases=("TIMEOUT_BLOCK_FETCH",)),
    _Spec("TIMEOUT_REDIS_OPERATION", "timeouts.redis_operation", _Seconds()),
    _Spec("WORKER_POOL_SIZE", "worker_pool.size", _PoolSize()),
    _Spec("WORKER_POOL_ACQUISITION_TIMEOUT", "worker_pool.acquisition_timeout", _Seconds()),
    _Spec("WORKER_POOL_METRICS_ENABLED", "worker_pool.metrics_enabled", _Bool()),
    _Spec("FEATURE_NEW_CONTEXT_MANAGEMENT", "features.new_context_management", _Bool()),
    _Spec("FEATURE_ENHANCED_WORKER_POOL", "features.enhanced_worker_pool", _Bool()),
    _Spec("FEATURE_METRICS_ENABLED", "features.metrics_enabled", _Bool()),
    _Spec("SEQ_FEATURE_REWARDS", "features.rewards", _Bool()),
    _Spec("MONITORING_ERROR_RATE_THRESHOLD", "monitoring.error_rate_threshold", _Fraction()),
    _Spec("MONITORING_HEALTH_CHECK_INTERVAL", "monitoring.health_check_interval", _Seconds()),
    _Spec("MONITORING_METRICS_RETENTION", "monitoring.metrics_retention", _OneDay()),
    _Spec("SEQ_READY_COMMIT_BLOCKS", "monitoring.ready_commit_blocks", _Int(1, 1_000_000)),
    _Spec("SEQ_READY_MAX_LAG_BLOCKS", "monitoring.ready_max_lag_blocks", _Int(1, 10_000_000)),
    _Spec("SEQ_READY_MAX_OUTBOX_AGE", "monitoring.ready_max_outbox_age", _Seconds(lo=1)),
)  # fmt: skip

_LEGACY_RPC_URL: Final = "PROST_RPC_URL"


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(path, f"cannot read config file: {exc.strerror or exc}") from None
    try:
        doc = msgspec.yaml.decode(data)
    except msgspec.DecodeError as exc:
        raise ConfigError(path, f"config file is not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(
            path, f"config file must be a mapping of settings, got {type(doc).__name__}"
        )
    _check_keys(doc, path)
    return doc


def _check_keys(doc: dict[Any, Any], path: str) -> None:
    known = {spec.key for spec in _SPECS}
    top = {key.split(".")[0] for key in known}
    for key, value in doc.items():
        name = str(key)
        if name not in top:
            _unknown(name, top, path)
        if name in _GROUPS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(name, f"must be a mapping in {path}, got {type(value).__name__}")
            for sub in value:
                if f"{name}.{sub}" not in known:
                    _unknown(f"{name}.{sub}", known, path)


def _unknown(key: str, known: set[str], path: str) -> None:
    close = difflib.get_close_matches(key.lower(), sorted(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(key, f"unknown setting in config file {path}{hint}")


def _from_file(doc: dict[str, Any], key: str) -> object:
    node: object = doc
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _parse(kind: _Kind, name: str, raw: object, where: str = "") -> Any:
    try:
        return kind.parse(raw)
    except _Invalid as exc:
        raise ConfigError(name, f"{exc}{where}") from None


def _resolve(
    spec: _Spec, doc: dict[str, Any], environ: Mapping[str, str], path: str | None
) -> tuple[Any, str]:
    """(value, source) of one setting; source "default" means not set anywhere."""
    found = [
        (name, _parse(spec.kind, name, environ[name]))
        for name in (spec.env, *spec.aliases)
        if environ.get(name, "").strip()  # the Go collector treats "" as unset
    ]
    if found:
        (first, value), *others = found
        for other, other_value in others:
            if other_value != value:
                raise ConfigError(
                    first,
                    f"conflicts with {other} ({spec.kind.show(value)} vs "
                    f"{spec.kind.show(other_value)}); set only one",
                )
        return value, "env"
    raw = _from_file(doc, spec.key)
    if raw is not None:  # YAML null counts as absent
        return _parse(spec.kind, spec.env, raw, f" (in {path}: {spec.key})"), "file"
    return None, "default"


def load_settings(
    config_path: str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, then the YAML file at ``config_path`` (if any), then ``environ``
    (``os.environ`` when None). Raises ConfigError on the first invalid value."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    doc = _read_yaml(config_path) if config_path else {}
    top: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
    sources: dict[str, str] = {}
    for spec in _SPECS:
        value, source = _resolve(spec, doc, env, config_path)
        if source == "default":
            continue
        *group, attr = spec.path
        (groups[group[0]] if group else top)[attr] = value
        sources[spec.env] = source

    legacy = env.get(_LEGACY_RPC_URL, "").strip()
    if not top.get("rpc_nodes") and legacy:
        top["rpc_nodes"] = (_parse(_Url(_RPC), _LEGACY_RPC_URL, legacy),)
        sources["RPC_NODES"] = "env"

    for name, cls in _GROUPS.items():
        top[name] = cls(**groups[name])
    _refuse_always_on(top["features"])
    return Settings(**top, sources=tuple(sorted(sources.items())))


# Settings accepted that cannot apply yet: what they will drive, and when. `check-config`
# prints these notes and the README's settings table lists them; every other setting drives
# what it names (or, for the two below, a value other than the one behaviour is refused).
NOT_YET_APPLIED: Final[dict[str, str]] = {}
# Feature flags of the seed's rollout whose old behaviour does not exist here: `true` (the
# default) is what seqcollector always does; `false` is refused.
ALWAYS_ON: Final[dict[str, tuple[str, str]]] = {
    "FEATURE_NEW_CONTEXT_MANAGEMENT": (
        "new_context_management",
        "seqcollector always nests its deadlines (TIMEOUT_*, event > batch > market); there is"
        " no old context handling to fall back to: unset it or set it to true",
    ),
    "FEATURE_ENHANCED_WORKER_POOL": (
        "enhanced_worker_pool",
        "batch preparation always runs on the bounded worker pool (WORKER_POOL_SIZE,"
        " WORKER_POOL_ACQUISITION_TIMEOUT); there is no unbounded mode: unset it or set it to"
        " true",
    ),
}


def _refuse_always_on(features: Features) -> None:
    for env_name, (attr, why) in ALWAYS_ON.items():
        if getattr(features, attr) is False:
            raise ConfigError(env_name, f"false is not supported: {why}")


def setting_from_env(env_name: str, environ: Mapping[str, str] | None = None) -> Any:
    """One setting from the environment alone (its default when unset), for the commands
    that take no configuration file (`replay`, `sim`). Raises ConfigError naming it."""
    spec = next(s for s in _SPECS if s.env == env_name)
    value, source = _resolve(spec, {}, os.environ if environ is None else environ, None)
    if source != "default":
        return value
    node: Any = Settings()
    for part in spec.path:
        node = getattr(node, part)
    return node


def redis_url_option(url: str, option: str) -> str:
    """A Redis URL given on the command line (`--redis`), checked like SEQ_REDIS_URL."""
    parsed = _parse(_Url(_REDIS), option, url)
    if not parsed:
        raise ConfigError(option, "is empty: give a redis://, rediss:// or unix:// URL")
    return str(parsed)


def describe_settings(settings: Settings) -> list[tuple[str, str, str]]:
    """One row per setting: (ENV_NAME, effective value with secrets masked, source)."""
    rows = []
    for spec in _SPECS:
        node: Any = settings
        for part in spec.path:
            node = getattr(node, part)
        rows.append((spec.env, spec.kind.show(node), settings.source(spec.env)))
    return rows
