"""seqcollector.config: defaults, YAML + environment precedence, validation, masking."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest
from eth_utils.address import to_checksum_address

from seqcollector.config import (
    _SPECS,
    ConfigError,
    Settings,
    _Int,
    _Seconds,
    describe_settings,
    load_settings,
    mask_secret,
)
from seqcollector.core.config import RANGES, CoreConfig
from seqcollector.errors import SettingsError

SECONDS = " seconds (e.g. 30, 2.5, 500ms, 1m)"
TIMEOUT_RANGE = f"must be between 0.01 and 86400{SECONDS}"

# EIP-55 test vectors.
M1 = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
M2 = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
PS = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
BAD_CHECKSUM = M1[:-1] + "D"  # last letter flipped to upper case


def load(env: dict[str, str] | None = None, path: Path | None = None) -> Settings:
    return load_settings(str(path) if path else None, environ=env or {})


def rejects(env: dict[str, str] | None = None, path: Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(env, path)
    message = str(info.value)
    assert "\n" not in message
    assert message == f"{info.value.setting}: {info.value.problem}"
    return info.value


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "seqcollector.yaml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------- defaults


def test_defaults() -> None:
    s = load()
    assert s.rpc_nodes == () and s.archive_rpc_nodes == ()
    assert (s.rpc_max_retries, s.rpc_retry_delay_ms) == (3, 500)
    assert (s.rpc_max_retry_delay_s, s.rpc_request_timeout_s) == (30.0, 30.0)
    assert s.protocol_state_contract == "" and s.data_market_addresses == ()
    assert (s.redis_host, s.redis_port, s.redis_db) == ("localhost", 6379, 0)
    assert s.redis_url() == "redis://localhost:6379/0"
    assert s.auth_read_token == s.slack_reporting_url == s.tx_relayer_url == ""
    assert s.tx_relayer_auth_write_token == ""
    assert (s.batch_size, s.rewards_update_batch_size, s.rewards_update_epoch_interval) == (
        50,
        50,
        50,
    )
    assert (s.block_time, s.http_timeout, s.past_days_buffer, s.retry_limits) == (2, 15, 5, 3)
    assert s.contract_query_timeout == 60
    assert s.periodic_eligible_count_alerts is True
    assert s.attestor_queue_push_enabled is False and s.init_cleanup_enabled is False
    assert s.concurrent_submission_count_updates == 10
    assert (s.confirmations, s.max_reorg_depth, s.start_block) == (0, 64, None)
    assert (s.api_port, s.slot_submissions_ttl_s) == (8080, 604800)
    t = s.timeouts
    assert (t.event_processing, t.batch_preparation, t.market_processing) == (30, 60, 30)
    assert (t.batch_processing, t.block_fetch, t.redis_operation) == (120, 30, 5)
    assert s.worker_pool.size == (os.cpu_count() or 2)
    assert s.worker_pool.acquisition_timeout == 5.0 and s.worker_pool.metrics_enabled
    f = s.features
    assert f.new_context_management and f.enhanced_worker_pool and f.metrics_enabled
    assert s.sources == ()
    assert s == Settings()  # the struct defaults are the only defaults


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        load().batch_size = 3  # type: ignore[misc]


def test_every_field_has_exactly_one_row_and_env_names_are_unique() -> None:
    rows = describe_settings(load())
    names = [name for name, _, _ in rows]
    assert len(names) == len(set(names))
    top = [f for f in msgspec.structs.fields(Settings) if f.name != "sources"]
    groups = {"timeouts", "worker_pool", "features", "monitoring"}
    expected = sum(len(msgspec.structs.fields(f.type)) if f.name in groups else 1 for f in top)
    assert len(rows) == expected
    assert all(source == "default" for _, _, source in rows)


# ------------------------------------------------------------------- the Go environment


GO_ENV = {
    "PROST_RPC_URL": "http://rpc.example:8545",
    "PROTOCOL_STATE_CONTRACT": f'"{PS}"',  # Go trims the quotes
    "DATA_MARKET_ADDRESSES": f'["{M1}", "\\"{M2}\\""]',
    "REDIS_HOST": "redis",
    "REDIS_PORT": "6380",
    "REDIS_DB": "2",
    "AUTH_READ_TOKEN": "read-token-123",
    "TX_RELAYER_URL": "http://relayer:8080",
    "TX_RELAYER_AUTH_WRITE_TOKEN": "write-token-456",
    "BATCH_SIZE": "20",
    "REWARDS_UPDATE_BATCH_SIZE": "30",
    "REWARDS_UPDATE_EPOCH_INTERVAL": "10",
    "BLOCK_TIME": "1",
    "HTTP_TIMEOUT": "5",
    "CONTRACT_QUERY_TIMEOUT": "40",
    "BLOCK_FETCH_TIMEOUT": "20",
    "EVENT_PROCESSING_TIMEOUT": "25",
    "BATCH_PROCESSING_TIMEOUT": "90",
    "PERIODIC_ELIGIBLE_COUNT_ALERTS": "False",
    "ATTESTOR_QUEUE_PUSH_ENABLED": "TRUE",
    "INIT_CLEANUP_ENABLED": "0",
    "CONCURRENT_SUBMISSION_COUNT_UPDATES": "4",
    "RPC_MAX_RETRY_DELAY_S": "10",
    "RPC_REQUEST_TIMEOUT_S": "12",
    "API_HOST": "0.0.0.0",  # unknown variables are ignored
}


def test_go_collector_environment() -> None:
    s = load(GO_ENV)
    assert s.rpc_nodes == ("http://rpc.example:8545",)
    assert s.protocol_state_contract == PS.lower()
    assert s.data_market_addresses == (M1.lower(), M2.lower())
    assert s.redis_url() == "redis://redis:6380/2"
    assert (s.batch_size, s.rewards_update_batch_size, s.rewards_update_epoch_interval) == (
        20,
        30,
        10,
    )
    assert (s.block_time, s.http_timeout, s.contract_query_timeout) == (1, 5, 40)
    assert (s.timeouts.block_fetch, s.timeouts.event_processing) == (20, 25)
    assert s.timeouts.batch_processing == 90
    assert s.periodic_eligible_count_alerts is False
    assert s.attestor_queue_push_enabled is True
    assert s.init_cleanup_enabled is False
    assert s.concurrent_submission_count_updates == 4
    assert (s.rpc_max_retry_delay_s, s.rpc_request_timeout_s) == (10, 12)
    assert s.source("BATCH_SIZE") == "env" and s.source("REDIS_HOST") == "env"
    assert s.source("RPC_NODES") == "env" and s.source("RETRY_LIMITS") == "default"


def test_rpc_nodes_win_over_prost_rpc_url() -> None:
    env = {"RPC_NODES": '["https://a.example", "wss://b.example"]', "PROST_RPC_URL": "http://c"}
    assert load(env).rpc_nodes == ("https://a.example", "wss://b.example")


@pytest.mark.parametrize("rpc_nodes", ["", "[]", "  "])
def test_empty_rpc_nodes_fall_back_to_prost_rpc_url(rpc_nodes: str) -> None:
    env = {"RPC_NODES": rpc_nodes, "PROST_RPC_URL": "http://legacy:8545"}
    assert load(env).rpc_nodes == ("http://legacy:8545",)


def test_bad_prost_rpc_url_is_named() -> None:
    err = rejects({"PROST_RPC_URL": "localhost:8545"})
    assert err.setting == "PROST_RPC_URL"


def test_empty_variable_counts_as_unset() -> None:
    s = load({"BATCH_SIZE": "", "REDIS_PORT": " ", "ATTESTOR_QUEUE_PUSH_ENABLED": ""})
    assert (s.batch_size, s.redis_port, s.attestor_queue_push_enabled) == (50, 6379, False)
    assert s.sources == ()


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("Yes", True),
        ("t", True), ("on", True),
        ("false", False), ("False", False), ("0", False), ("no", False), ("NO", False),
        ("f", False), ("off", False),
    ],
)  # fmt: skip
def test_booleans(text: str, value: bool) -> None:
    assert load({"ATTESTOR_QUEUE_PUSH_ENABLED": text}).attestor_queue_push_enabled is value
    assert load({"FEATURE_METRICS_ENABLED": text}).features.metrics_enabled is value


def test_own_settings_from_env() -> None:
    s = load(
        {
            "SEQ_CONFIRMATIONS": "3",
            "SEQ_MAX_REORG_DEPTH": "128",
            "SEQ_START_BLOCK": "1234",
            "SEQ_REDIS_URL": "redis://:pw@cache:6379/5",
            "SEQ_API_PORT": "9000",
            "SEQ_SLOT_SUBMISSIONS_TTL_S": "3600",
            "WORKER_POOL_SIZE": "7",
            "WORKER_POOL_ACQUISITION_TIMEOUT": "500ms",
            "TIMEOUT_REDIS_OPERATION": "2.5",
            "TIMEOUT_BATCH_PREPARATION": "2m",
            "FEATURE_METRICS_ENABLED": "no",
        }
    )
    assert (s.confirmations, s.max_reorg_depth, s.start_block) == (3, 128, 1234)
    assert s.redis_url() == "redis://:pw@cache:6379/5"
    assert (s.api_port, s.slot_submissions_ttl_s) == (9000, 3600)
    assert (s.worker_pool.size, s.worker_pool.acquisition_timeout) == (7, 0.5)
    assert (s.timeouts.redis_operation, s.timeouts.batch_preparation) == (2.5, 120)
    assert s.features.metrics_enabled is False


@pytest.mark.parametrize("name", ["FEATURE_NEW_CONTEXT_MANAGEMENT", "FEATURE_ENHANCED_WORKER_POOL"])
def test_always_on_features_refuse_false(name: str) -> None:
    """No setting accepted and ignored: the old behaviour these flags name does not exist."""
    err = rejects({name: "false"})
    assert str(err).startswith(f"{name}: false is not supported: ")
    assert load({name: "true"}).features.new_context_management is True


@pytest.mark.parametrize("text", ["head", "latest", "HEAD"])
def test_start_block_head(text: str) -> None:
    assert load({"SEQ_START_BLOCK": text}).start_block is None


def test_worker_pool_size_gomaxprocs() -> None:
    assert load({"WORKER_POOL_SIZE": "GOMAXPROCS"}).worker_pool.size == (os.cpu_count() or 2)


def test_timeout_alias_is_the_same_setting() -> None:
    s = load({"TIMEOUT_EVENT_PROCESSING": "7"})
    assert s.timeouts.event_processing == 7
    assert s.source("EVENT_PROCESSING_TIMEOUT") == "env"
    same = load({"TIMEOUT_BLOCK_FETCH": "9", "BLOCK_FETCH_TIMEOUT": "9s"})
    assert same.timeouts.block_fetch == 9


def test_timeout_alias_conflict_is_rejected() -> None:
    err = rejects({"BATCH_PROCESSING_TIMEOUT": "90", "TIMEOUT_BATCH_PROCESSING": "60"})
    assert str(err) == (
        "BATCH_PROCESSING_TIMEOUT: conflicts with TIMEOUT_BATCH_PROCESSING (90 vs 60); set only one"
    )


# ------------------------------------------------------------------------------- YAML


def test_yaml_then_env(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
batch_size: 20
redis_port: 6390
data_market_addresses: ["{M1}"]
protocol_state_contract: "{PS}"
start_block: 100
redis_url: redis://cache:6379/1
timeouts:
  event_processing: 10
  redis_operation: 1.5
worker_pool:
  size: 3
features:
  metrics_enabled: false
  attestor_queue: yes
""",
    )
    s = load({"BATCH_SIZE": "30", "TIMEOUT_REDIS_OPERATION": "4"}, path)
    assert s.batch_size == 30 and s.source("BATCH_SIZE") == "env"
    assert s.redis_port == 6390 and s.source("REDIS_PORT") == "file"
    assert s.data_market_addresses == (M1.lower(),)
    assert s.protocol_state_contract == PS.lower()
    assert s.attestor_queue_push_enabled is True and s.start_block == 100
    assert s.redis_url() == "redis://cache:6379/1"
    assert s.timeouts.event_processing == 10
    assert s.source("EVENT_PROCESSING_TIMEOUT") == "file"
    assert s.timeouts.redis_operation == 4 and s.source("TIMEOUT_REDIS_OPERATION") == "env"
    assert s.timeouts.batch_processing == 120
    assert s.source("BATCH_PROCESSING_TIMEOUT") == "default"
    assert s.worker_pool.size == 3 and s.worker_pool.acquisition_timeout == 5
    assert s.features.enhanced_worker_pool is True and s.features.metrics_enabled is False
    rows = {name: (value, source) for name, value, source in describe_settings(s)}
    assert rows["BATCH_SIZE"] == ("30", "env")
    assert rows["REDIS_PORT"] == ("6390", "file")
    assert rows["BLOCK_TIME"] == ("2", "default")
    assert rows["WORKER_POOL_SIZE"] == ("3", "file")
    assert rows["DATA_MARKET_ADDRESSES"] == (f'["{M1}"]', "file")


def test_yaml_from_seed_section_9_1_loads_verbatim(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
timeouts:
  event_processing: 30s
  batch_preparation: 60s
  market_processing: 30s
  batch_processing: 120s

worker_pool:
  size: "GOMAXPROCS"
  acquisition_timeout: 5s
  metrics_enabled: true

features:
  new_context_management: true
  enhanced_worker_pool: true
  metrics_enabled: true

monitoring:
  error_rate_threshold: 0.1
  health_check_interval: 1m
  metrics_retention: 24h
""",
    )
    s = load(path=path)
    assert s.timeouts == Settings().timeouts
    assert s.worker_pool == Settings().worker_pool
    assert s.monitoring.health_check_interval == 60
    assert s.monitoring.metrics_retention == 86400


def test_yaml_empty_file_and_null_values(tmp_path: Path) -> None:
    assert load(path=write(tmp_path, "")) == Settings()
    s = load(path=write(tmp_path, "batch_size:\ntimeouts:\n"))
    assert s.batch_size == 50 and s.sources == ()


def test_yaml_lists_may_be_json_strings(tmp_path: Path) -> None:
    path = write(tmp_path, f'data_market_addresses: \'["{M1}", "{M2}"]\'\n')
    assert load(path=path).data_market_addresses == (M1.lower(), M2.lower())


# ---------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REWARDS_UPDATE_EPOCH_INTERVAL": "0"},
         "REWARDS_UPDATE_EPOCH_INTERVAL: must be between 1 and 1000000, got 0"),
        ({"BATCH_SIZE": "0"}, "BATCH_SIZE: must be between 1 and 100000, got 0"),
        ({"BATCH_SIZE": "-5"}, "BATCH_SIZE: must be between 1 and 100000, got -5"),
        ({"BATCH_SIZE": "abc"}, "BATCH_SIZE: not an integer: 'abc'"),
        ({"BATCH_SIZE": "1.5"}, "BATCH_SIZE: not an integer: '1.5'"),
        ({"REWARDS_UPDATE_BATCH_SIZE": "0"},
         "REWARDS_UPDATE_BATCH_SIZE: must be between 1 and 100000, got 0"),
        ({"RETRY_LIMITS": "0"}, "RETRY_LIMITS: must be between 1 and 1000, got 0"),
        ({"PAST_DAYS_BUFFER": "x"}, "PAST_DAYS_BUFFER: not an integer: 'x'"),
        ({"CONCURRENT_SUBMISSION_COUNT_UPDATES": "0"},
         "CONCURRENT_SUBMISSION_COUNT_UPDATES: must be between 1 and 10000, got 0"),
        ({"RPC_MAX_RETRIES": "-1"}, "RPC_MAX_RETRIES: must be between 0 and 100, got -1"),
        ({"REDIS_PORT": "0"}, "REDIS_PORT: must be between 1 and 65535, got 0"),
        ({"REDIS_PORT": "65536"}, "REDIS_PORT: must be between 1 and 65535, got 65536"),
        ({"REDIS_PORT": "redis"}, "REDIS_PORT: not an integer: 'redis'"),
        ({"REDIS_DB": "-1"}, "REDIS_DB: must be between 0 and 1000000, got -1"),
        ({"SEQ_API_PORT": "70000"}, "SEQ_API_PORT: must be between 0 and 65535, got 70000"),
        ({"SEQ_START_BLOCK": "-1"},
         "SEQ_START_BLOCK: must be between 0 and 4611686018427387904, got -1"),
        ({"SEQ_MAX_REORG_DEPTH": "0"}, "SEQ_MAX_REORG_DEPTH: must be between 1 and 10000, got 0"),
        ({"WORKER_POOL_SIZE": "0"}, "WORKER_POOL_SIZE: must be between 1 and 1024, got 0"),
        ({"EVENT_PROCESSING_TIMEOUT": "-1"},
         f"EVENT_PROCESSING_TIMEOUT: {TIMEOUT_RANGE}, got -1"),
        ({"TIMEOUT_EVENT_PROCESSING": "-1"},
         f"TIMEOUT_EVENT_PROCESSING: {TIMEOUT_RANGE}, got -1"),
        ({"BLOCK_FETCH_TIMEOUT": "0"}, f"BLOCK_FETCH_TIMEOUT: {TIMEOUT_RANGE}, got 0"),
        ({"CONTRACT_QUERY_TIMEOUT": "-30"}, f"CONTRACT_QUERY_TIMEOUT: {TIMEOUT_RANGE}, got -30"),
        ({"TIMEOUT_REDIS_OPERATION": "-2s"},
         f"TIMEOUT_REDIS_OPERATION: {TIMEOUT_RANGE}, got -2"),
        ({"HTTP_TIMEOUT": "soon"},
         "HTTP_TIMEOUT: not a duration in seconds (e.g. 30, 2.5, 500ms, 1m): 'soon'"),
        ({"RPC_MAX_RETRY_DELAY_S": "-1"},
         f"RPC_MAX_RETRY_DELAY_S: must be between 0 and 86400{SECONDS}, got -1"),
        ({"MONITORING_ERROR_RATE_THRESHOLD": "2"},
         "MONITORING_ERROR_RATE_THRESHOLD: must be between 0 and 1, got 2"),
        ({"ATTESTOR_QUEUE_PUSH_ENABLED": "maybe"},
         "ATTESTOR_QUEUE_PUSH_ENABLED: not a boolean (true/false, 1/0, yes/no): 'maybe'"),
        ({"PROTOCOL_STATE_CONTRACT": "0x1234"},
         "PROTOCOL_STATE_CONTRACT: not a 20-byte hex address (0x + 40 hex digits): '0x1234'"),
        ({"PROTOCOL_STATE_CONTRACT": BAD_CHECKSUM},
         f"PROTOCOL_STATE_CONTRACT: {BAD_CHECKSUM} has mixed case but a wrong EIP-55 checksum "
         "(fix it, or write it lowercase)"),
        ({"DATA_MARKET_ADDRESSES": f'["{M1}", "{BAD_CHECKSUM}"]'},
         f"DATA_MARKET_ADDRESSES: entry 1: {BAD_CHECKSUM} has mixed case but a wrong EIP-55 "
         "checksum (fix it, or write it lowercase)"),
        ({"DATA_MARKET_ADDRESSES": '["0xzz"]'},
         "DATA_MARKET_ADDRESSES: entry 0: not a 20-byte hex address (0x + 40 hex digits): '0xzz'"),
        ({"DATA_MARKET_ADDRESSES": f'["{M1[2:]}"]'},
         f"DATA_MARKET_ADDRESSES: entry 0: not a 20-byte hex address (0x + 40 hex digits): "
         f"'{M1[2:]}'"),
        ({"DATA_MARKET_ADDRESSES": '[""]'}, "DATA_MARKET_ADDRESSES: entry 0 is empty"),
        ({"DATA_MARKET_ADDRESSES": f'["{M1}", "{M2}", "{M1.lower()}"]'},
         f"DATA_MARKET_ADDRESSES: duplicate address {M1} (entries 0 and 2)"),
    ],
)  # fmt: skip
def test_rejected_values(env: dict[str, str], message: str) -> None:
    assert str(rejects(env)) == message


@pytest.mark.parametrize("text", [M1, f"{M1},{M2}", '{"a": 1}', "[1, 2]", '["0xab",', "null"])
@pytest.mark.parametrize("name", ["DATA_MARKET_ADDRESSES", "RPC_NODES", "ARCHIVE_RPC_NODES"])
def test_malformed_json_arrays(name: str, text: str) -> None:
    err = rejects({name: text})
    assert err.setting == name
    assert str(err).startswith(f"{name}: not a JSON array of strings: ")


def test_malformed_url_list_does_not_echo_the_value() -> None:
    err = rejects({"RPC_NODES": "https://user:hunter2hunter2@rpc.example/v3/KEY"})
    assert "hunter2" not in str(err) and "KEY" not in str(err)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RPC_NODES", '["localhost:8545"]'),
        ("ARCHIVE_RPC_NODES", '["ftp://archive.example"]'),
        ("TX_RELAYER_URL", "relayer:8080"),
        ("SLACK_REPORTING_URL", "hooks.slack.com/services/x"),
        ("SEQ_REDIS_URL", "http://cache:6379"),
        ("SEQ_REDIS_URL", "redis://cache:notaport/0"),
    ],
)
def test_bad_urls(name: str, value: str) -> None:
    assert rejects({name: value}).setting == name


def test_bad_url_message_masks_the_password() -> None:
    err = rejects({"SEQ_REDIS_URL": "http://:verysecretpassword@cache:6379"})
    assert "verysecretpassword" not in str(err)
    assert str(err).startswith(
        "SEQ_REDIS_URL: not a URL with scheme redis/rediss/unix/redis+sentinel: "
    )


def test_yaml_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "batch_sizes: 20\n")
    err = rejects(path=path)
    assert err.setting == "batch_sizes"
    assert str(err) == (
        f"batch_sizes: unknown setting in config file {path} (did you mean batch_size?)"
    )


def test_yaml_unknown_nested_key(tmp_path: Path) -> None:
    path = write(tmp_path, "timeouts:\n  event_processing: 5\n  block_fetching: 5\n")
    err = rejects(path=path)
    assert err.setting == "timeouts.block_fetching"
    assert str(path) in str(err) and "timeouts.block_fetch" in str(err)


def test_yaml_env_style_key_is_unknown(tmp_path: Path) -> None:
    err = rejects(path=write(tmp_path, "BATCH_SIZE: 20\n"))
    assert err.setting == "BATCH_SIZE" and "did you mean batch_size?" in str(err)


def test_yaml_group_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "timeouts: 30\n")
    assert str(rejects(path=path)) == f"timeouts: must be a mapping in {path}, got int"


def test_yaml_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    err = rejects(path=path)
    assert str(err) == f"{path}: cannot read config file: No such file or directory"


def test_yaml_directory_is_unreadable(tmp_path: Path) -> None:
    assert str(rejects(path=tmp_path)).startswith(f"{tmp_path}: cannot read config file: ")


def test_yaml_malformed(tmp_path: Path) -> None:
    path = write(tmp_path, "batch_size: [1\nredis_port: 2\n")
    assert str(rejects(path=path)).startswith(f"{path}: config file is not valid YAML: ")


def test_yaml_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- 1\n- 2\n")
    assert str(rejects(path=path)) == f"{path}: config file must be a mapping of settings, got list"


def test_yaml_invalid_value_names_setting_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "rewards_update_epoch_interval: 0\n")
    assert str(rejects(path=path)) == (
        f"REWARDS_UPDATE_EPOCH_INTERVAL: must be between 1 and 1000000, got 0 (in {path}: "
        "rewards_update_epoch_interval)"
    )
    path = write(tmp_path, "timeouts:\n  batch_preparation: -3\n")
    assert str(rejects(path=path)) == (
        "TIMEOUT_BATCH_PREPARATION: must be between 0.01 and 86400 seconds (e.g. 30, 2.5, "
        f"500ms, 1m), got -3 (in {path}: "
        "timeouts.batch_preparation)"
    )


def test_yaml_unquoted_hex_address_is_rejected_not_guessed(tmp_path: Path) -> None:
    # YAML 1.1 reads 0x... as a number; padding it back could hide a missing digit.
    path = write(tmp_path, f"protocol_state_contract: {PS}\n")
    err = rejects(path=path)
    assert err.setting == "PROTOCOL_STATE_CONTRACT" and "quote the value" in str(err)
    path = write(tmp_path, f"data_market_addresses:\n  - {M1}\n")
    err = rejects(path=path)
    assert err.setting == "DATA_MARKET_ADDRESSES" and "entry 0" in str(err)


def test_yaml_booleans_and_ints_are_type_checked(tmp_path: Path) -> None:
    assert rejects(path=write(tmp_path, "batch_size: true\n")).setting == "BATCH_SIZE"
    assert rejects(path=write(tmp_path, "batch_size: 2.5\n")).setting == "BATCH_SIZE"
    assert rejects(path=write(tmp_path, "features:\n  cleanup: 2\n")).setting == (
        "INIT_CLEANUP_ENABLED"
    )


# -------------------------------------------------------------------- addresses, core


def test_addresses_stored_lowercase_and_emitted_eip55() -> None:
    env = {
        "PROTOCOL_STATE_CONTRACT": PS.upper().replace("0X", "0x"),  # all-caps body is fine
        "DATA_MARKET_ADDRESSES": f'["{M1}", "{M2.lower()}"]',
    }
    s = load(env)
    assert s.protocol_state_contract == PS.lower()
    assert s.data_market_addresses == (M1.lower(), M2.lower())
    assert s.markets_checksummed == (M1, M2)
    assert s.markets_checksummed == tuple(to_checksum_address(a) for a in (M1, M2))
    assert s.protocol_state_checksummed == PS
    assert Settings(data_market_addresses=(M1,)).data_market_addresses == (M1.lower(),)


def test_require_chain() -> None:
    with pytest.raises(ConfigError, match=r"^PROTOCOL_STATE_CONTRACT: "):
        load().require_chain()
    with pytest.raises(ConfigError, match=r"^DATA_MARKET_ADDRESSES: "):
        load({"PROTOCOL_STATE_CONTRACT": PS}).require_chain()
    s = load({"PROTOCOL_STATE_CONTRACT": PS, "DATA_MARKET_ADDRESSES": f'["{M1}"]'})
    assert s.require_chain() is s


def test_core_config() -> None:
    s = load(
        {
            "PROTOCOL_STATE_CONTRACT": PS,
            "DATA_MARKET_ADDRESSES": f'["{M2}", "{M1}"]',
            "BATCH_SIZE": "7",
            "SEQ_MAX_REORG_DEPTH": "12",
            "ATTESTOR_QUEUE_PUSH_ENABLED": "true",
            "SEQ_SLOT_SUBMISSIONS_TTL_S": "99",
            "REWARDS_UPDATE_BATCH_SIZE": "3",
            "REWARDS_UPDATE_EPOCH_INTERVAL": "4",
            "PAST_DAYS_BUFFER": "2",
            "PERIODIC_ELIGIBLE_COUNT_ALERTS": "false",
        }
    )
    assert s.core_config() == CoreConfig(
        protocol_state=PS.lower(),
        markets=sorted([M1.lower(), M2.lower()]),
        batch_size=7,
        max_reorg_depth=12,
        attestor_queue_push_enabled=True,
        slot_submissions_ttl_s=99,
        rewards=True,  # on by default with only the Go variables set (drop-in)
        rewards_update_batch_size=3,
        rewards_update_epoch_interval=4,
        past_days_buffer=2,
        periodic_eligible_count_alerts=False,
    )
    off = load(
        {
            "PROTOCOL_STATE_CONTRACT": PS,
            "DATA_MARKET_ADDRESSES": f'["{M1}"]',
            "SEQ_FEATURE_REWARDS": "false",
        }
    )
    assert off.core_config().rewards is False
    with pytest.raises(ConfigError):
        load().core_config()


# ---------------------------------------------------------------------------- masking


@pytest.mark.parametrize(
    ("secret", "shown"),
    [("", ""), ("abc", "***"), ("abcdefg", "***"), ("abcdefgh", "ab****"), ("x" * 64, "xx****")],
)
def test_mask_secret(secret: str, shown: str) -> None:
    assert mask_secret(secret) == shown


def test_describe_masks_secrets() -> None:
    secrets = {
        "AUTH_READ_TOKEN": "readtoken-0123456789",
        "TX_RELAYER_AUTH_WRITE_TOKEN": "wt",
        "SEQ_REDIS_URL": "redis://default:redispassword99@cache:6379/0",
        "RPC_NODES": (
            '["https://rpcuser:rpcpassword77@node.example/v3/0123456789abcdef0123456789abcdef",'
            ' "https://other.example/rpc?apikey=queryapikey55"]'
        ),
        "ARCHIVE_RPC_NODES": '["https://archivekey0123456789@archive.example"]',
        "SLACK_REPORTING_URL": "https://hooks.slack.com/services/T000/B000/slacksecret",
        "TX_RELAYER_URL": "http://relayer:8080",
    }
    rows = {name: (value, source) for name, value, source in describe_settings(load(secrets))}
    assert rows["AUTH_READ_TOKEN"] == ("re****", "env")
    assert rows["TX_RELAYER_AUTH_WRITE_TOKEN"] == ("***", "env")
    assert rows["SEQ_REDIS_URL"] == ("redis://default:re****@cache:6379/0", "env")
    assert rows["RPC_NODES"][0] == (
        '["https://rpcuser:rp****@node.example/v3/01****", '
        '"https://other.example/rpc?apikey=qu****"]'
    )
    assert rows["ARCHIVE_RPC_NODES"][0] == '["https://ar****@archive.example"]'
    assert rows["SLACK_REPORTING_URL"][0] == "https://hooks.slack.com/se****"
    assert rows["TX_RELAYER_URL"][0] == "http://relayer:8080"
    printed = " ".join(value for value, _ in rows.values())
    for leaked in (
        "readtoken",
        "redispassword",
        "rpcpassword",
        "0123456789abcdef",
        "queryapikey",
        "archivekey",
        "slacksecret",
        "T000",
    ):
        assert leaked not in printed


def test_describe_shows_addresses_eip55_and_lists_as_json() -> None:
    s = load({"PROTOCOL_STATE_CONTRACT": PS.lower(), "DATA_MARKET_ADDRESSES": f'["{M1}"]'})
    rows = {name: value for name, value, _ in describe_settings(s)}
    assert rows["PROTOCOL_STATE_CONTRACT"] == PS
    assert rows["DATA_MARKET_ADDRESSES"] == f'["{M1}"]'
    assert rows["SEQ_START_BLOCK"] == "head"
    assert rows["ATTESTOR_QUEUE_PUSH_ENABLED"] == "false"


# ----------------------------------------------------------------------------- ranges

DAY = 86400
TEN_YEARS = 10 * 365 * DAY
# Every numeric setting and its inclusive range (integers; durations in seconds).
INT_RANGES = {
    "RPC_MAX_RETRIES": (0, 100),
    "RPC_RETRY_DELAY_MS": (0, 600_000),
    "REDIS_PORT": (1, 65535),
    "REDIS_DB": (0, 1_000_000),
    "SEQ_REDIS_MIN_REPLICAS": (0, 100),
    "SEQ_SUBMISSION_SETS_TTL_S": (0, 10 * 365 * 24 * 3600),
    "BATCH_SIZE": (1, 100_000),
    "REWARDS_UPDATE_BATCH_SIZE": (1, 100_000),
    "REWARDS_UPDATE_EPOCH_INTERVAL": (1, 1_000_000),
    "PAST_DAYS_BUFFER": (0, 10_000),
    "RETRY_LIMITS": (1, 1_000),
    "CONCURRENT_SUBMISSION_COUNT_UPDATES": (1, 10_000),
    "SEQ_CONFIRMATIONS": (0, 10_000),
    "SEQ_MAX_REORG_DEPTH": (1, 10_000),
    "SEQ_START_BLOCK": (0, 2**62),
    "SEQ_API_PORT": (0, 65535),
    "SEQ_SLOT_SUBMISSIONS_TTL_S": (1, TEN_YEARS),
    "WORKER_POOL_SIZE": (1, 1024),
    "MARKET_MIGRATION_DAYS": (1, 10_000),
    "SEQ_READY_COMMIT_BLOCKS": (1, 1_000_000),
    "SEQ_READY_MAX_LAG_BLOCKS": (1, 10_000_000),
}
SECONDS_RANGES = {
    "RPC_MAX_RETRY_DELAY_S": (0, DAY),
    "RPC_REQUEST_TIMEOUT_S": (0.01, DAY),
    "BLOCK_TIME": (0.01, 3600),
    "HTTP_TIMEOUT": (0.01, DAY),
    "CONTRACT_QUERY_TIMEOUT": (0.01, DAY),
    "SEQ_STARTUP_TIMEOUT_S": (0, DAY),
    "EVENT_PROCESSING_TIMEOUT": (0.01, DAY),
    "TIMEOUT_BATCH_PREPARATION": (0.01, DAY),
    "TIMEOUT_MARKET_PROCESSING": (0.01, DAY),
    "BATCH_PROCESSING_TIMEOUT": (0.01, DAY),
    "BLOCK_FETCH_TIMEOUT": (0.01, DAY),
    "TIMEOUT_REDIS_OPERATION": (0.01, DAY),
    "WORKER_POOL_ACQUISITION_TIMEOUT": (0.01, DAY),
    "MONITORING_HEALTH_CHECK_INTERVAL": (0.01, DAY),
    "SEQ_READY_MAX_OUTBOX_AGE": (1, DAY),
    "SEQ_HA_LEASE_S": (0.1, 3600),
}


def _value(s: Settings, name: str) -> object:
    spec = next(spec for spec in _SPECS if spec.env == name)
    node: object = s
    for part in spec.path:
        node = getattr(node, part)
    return node


def test_every_numeric_setting_has_a_tested_range() -> None:
    ints = {spec.env for spec in _SPECS if isinstance(spec.kind, _Int)}
    ints |= {"SEQ_START_BLOCK", "WORKER_POOL_SIZE"}
    seconds = {spec.env for spec in _SPECS if isinstance(spec.kind, _Seconds)}
    assert ints == set(INT_RANGES)
    assert seconds == set(SECONDS_RANGES)


@pytest.mark.parametrize(("name", "bounds"), sorted(INT_RANGES.items()))
def test_integer_ranges(name: str, bounds: tuple[int, int]) -> None:
    lo, hi = bounds
    assert _value(load({name: str(lo)}), name) == lo
    assert _value(load({name: str(hi)}), name) == hi
    for bad in (lo - 1, hi + 1):
        err = rejects({name: str(bad)})
        assert str(err) == f"{name}: must be between {lo} and {hi}, got {bad}"


@pytest.mark.parametrize(("name", "bounds"), sorted(SECONDS_RANGES.items()))
def test_duration_ranges(name: str, bounds: tuple[float, float]) -> None:
    lo, hi = bounds
    assert _value(load({name: str(lo)}), name) == lo
    assert _value(load({name: str(hi)}), name) == hi
    for bad in (f"{lo - 0.001:.3f}", str(hi + 1)):
        err = rejects({name: bad})
        assert err.setting == name and "must be between" in err.problem, err


def test_reported_values_are_refused_with_the_range() -> None:
    assert str(rejects({"TIMEOUT_REDIS_OPERATION": "1ms"})) == (
        "TIMEOUT_REDIS_OPERATION: must be between 0.01 and 86400 seconds (e.g. 30, 2.5, 500ms, "
        "1m), got 0.001"
    )
    assert str(rejects({"BATCH_SIZE": str(10**30)})) == (
        f"BATCH_SIZE: must be between 1 and 100000, got {10**30}"
    )


def test_startup_timeout_setting() -> None:
    assert load().startup_timeout_s == 60.0
    assert load({"SEQ_STARTUP_TIMEOUT_S": "500ms"}).startup_timeout_s == 0.5
    assert load({"SEQ_STARTUP_TIMEOUT_S": "0"}).startup_timeout_s == 0
    rows = {name: (value, source) for name, value, source in describe_settings(load())}
    assert rows["SEQ_STARTUP_TIMEOUT_S"] == ("60", "default")


def test_config_error_is_a_settings_error_with_exit_2() -> None:
    err = rejects({"BATCH_SIZE": "0"})
    assert isinstance(err, SettingsError) and err.exit_code == 2


def test_core_ranges_are_the_settings_ranges() -> None:
    assert RANGES["batch_size"] == INT_RANGES["BATCH_SIZE"]
    assert RANGES["max_reorg_depth"] == INT_RANGES["SEQ_MAX_REORG_DEPTH"]
    assert RANGES["slot_submissions_ttl_s"] == INT_RANGES["SEQ_SLOT_SUBMISSIONS_TTL_S"]


@pytest.mark.parametrize("field", sorted(RANGES))
def test_core_config_refuses_out_of_range_fields(field: str) -> None:
    lo, hi = RANGES[field]
    base = {"protocol_state": PS, "markets": [M1]}
    assert getattr(CoreConfig(**base, **{field: lo}), field) == lo  # type: ignore[arg-type]
    assert getattr(CoreConfig(**base, **{field: hi}), field) == hi  # type: ignore[arg-type]
    for bad in (lo - 1, hi + 1, -3, 10**30):
        with pytest.raises(ValueError, match=rf"config\.{field} must be between {lo} and {hi}"):
            CoreConfig(**base, **{field: bad})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"protocol_state": "0x12"}, "config.protocol_state is not a 20-byte hex address"),
        ({"markets": []}, "config.markets must list 1 to 1000 data markets, got 0"),
        ({"markets": ["nope"]}, r"config.markets\[0\] is not a 20-byte hex address"),
    ],
)
def test_core_config_refuses_bad_addresses(kw: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"protocol_state": PS, "markets": [M1], **kw}
    with pytest.raises(ValueError, match=message):
        CoreConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -3])
def test_journal_header_out_of_range_is_a_validation_error(value: int) -> None:
    header = {"protocol_state": PS.lower(), "markets": [M1.lower()], "batch_size": value}
    with pytest.raises(msgspec.ValidationError, match=r"config\.batch_size must be between"):
        msgspec.json.decode(msgspec.json.encode(header), type=CoreConfig)


def test_require_run_refuses_what_run_refuses() -> None:
    chain = {"PROTOCOL_STATE_CONTRACT": PS, "DATA_MARKET_ADDRESSES": f'["{M1}"]'}
    with pytest.raises(ConfigError, match=r"^RPC_NODES: no RPC endpoint"):
        load(chain).require_run()
    with pytest.raises(ConfigError, match=r"^DATA_MARKET_ADDRESSES: must list at least one"):
        load({**chain, "DATA_MARKET_ADDRESSES": "[]", "RPC_NODES": '["http://n:1"]'}).require_run()
    with pytest.raises(ConfigError, match=r"^PROTOCOL_STATE_CONTRACT: must be set"):
        load({"DATA_MARKET_ADDRESSES": f'["{M1}"]', "RPC_NODES": '["http://n:1"]'}).require_run()
    s = load({**chain, "RPC_NODES": '["http://n:1"]'})
    assert s.require_run() is s


def test_setting_from_env_and_redis_url_option() -> None:
    from seqcollector.config import redis_url_option, setting_from_env

    assert setting_from_env("SEQ_STARTUP_TIMEOUT_S", {}) == 60.0
    assert setting_from_env("SEQ_STARTUP_TIMEOUT_S", {"SEQ_STARTUP_TIMEOUT_S": "2s"}) == 2.0
    with pytest.raises(ConfigError, match=r"^SEQ_STARTUP_TIMEOUT_S: must be between"):
        setting_from_env("SEQ_STARTUP_TIMEOUT_S", {"SEQ_STARTUP_TIMEOUT_S": "-1"})
    assert redis_url_option("redis://h:1/2", "--redis") == "redis://h:1/2"
    with pytest.raises(ConfigError, match=r"^--redis: not a URL with scheme redis/rediss/unix"):
        redis_url_option("notaurl", "--redis")


# ----------------------------------------------------------------------- new in issue 9


def test_memory_profiling_interval_is_minutes_and_zero_is_off() -> None:
    assert Settings().memory_profiling_interval == 15.0
    assert load({"MEMORY_PROFILING_INTERVAL": "0"}).memory_profiling_interval == 0.0
    assert load({"MEMORY_PROFILING_INTERVAL": "2.5"}).memory_profiling_interval == 2.5
    err = rejects({"MEMORY_PROFILING_INTERVAL": "-1"})
    assert str(err) == (
        "MEMORY_PROFILING_INTERVAL: must be between 0 (off) and 10080 minutes, got -1"
    )


def test_rewards_feature_defaults_on_and_turns_off() -> None:
    assert Settings().features.rewards is True
    assert load({"SEQ_FEATURE_REWARDS": "false"}).features.rewards is False


def test_market_migration_mappings() -> None:
    a, b, c = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40
    s = load({"MARKET_MIGRATION_MAPPINGS": f" {a}:{b} , {c.upper().replace('0X', '0x')}:{a}"})
    assert s.market_migration_mappings == ((a, b), (c, a))
    assert Settings().market_migration_mappings == ()
    assert Settings().enable_market_migration is False
    assert Settings().market_migration_days == 1
    for bad, problem in (
        ("abc", "entry 0 is not old:new: 'abc'"),
        (a, f"entry 0 is not old:new: '{a}'"),
        (f"{a}:{a}", "entry 0 maps"),
        (f"{a}:{b},{a}:{c}", "is mapped twice (entries 0 and 1)"),
        (f"{a}:0x12", "entry 0: not a 20-byte hex address"),
    ):
        err = rejects({"MARKET_MIGRATION_MAPPINGS": bad})
        assert err.setting == "MARKET_MIGRATION_MAPPINGS" and problem in err.problem, err


def test_metrics_retention_only_accepts_the_seeds_24h() -> None:
    assert load({"MONITORING_METRICS_RETENTION": "24h"}).monitoring.metrics_retention == DAY
    error = rejects({"MONITORING_METRICS_RETENTION": "12h"})
    assert error.setting == "MONITORING_METRICS_RETENTION" and "Prometheus" in error.problem


def test_log_format_and_level_are_words_in_any_case() -> None:
    s = load({"SEQ_LOG_FORMAT": "JSON", "SEQ_LOG_LEVEL": "Warning"})
    assert (s.log_format, s.log_level) == ("json", "warning")
    assert rejects({"SEQ_LOG_FORMAT": "xml"}).setting == "SEQ_LOG_FORMAT"
    assert "auto, console, json" in rejects({"SEQ_LOG_FORMAT": "xml"}).problem


def test_feature_flags_live_in_the_features_group_with_their_go_names(tmp_path: Path) -> None:
    s = load({"ATTESTOR_QUEUE_PUSH_ENABLED": "true", "INIT_CLEANUP_ENABLED": "1"})
    assert s.features.attestor_queue and s.attestor_queue_push_enabled
    assert s.features.cleanup and s.init_cleanup_enabled
    assert load({"SEQ_API_ENABLED": "false"}).features.api is False
    doc = "features:\n  api: false\n  rewards: false\n  cleanup: true\n"
    s = load({}, write(tmp_path, doc))
    assert (s.features.api, s.features.rewards, s.features.cleanup) == (False, False, True)
