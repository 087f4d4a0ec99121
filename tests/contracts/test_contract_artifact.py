"""The compiled artifacts: ProtocolState's production event signatures (topic0), the expected
functions of ProtocolState and DataMarket, and agreement with their Solidity sources
(`compile.mjs --check`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from contractkit import missing_tool
from eth_utils.crypto import keccak

from seqcollector.core import abi
from sim.contract import (
    ARTIFACT_PATH,
    DATA_MARKET_ABI,
    DATA_MARKET_ARTIFACT_PATH,
    PROTOCOL_STATE_ABI,
    ROOT,
    load_artifact,
)

COMPILE = ROOT / "fixtures" / "contracts" / "compile.mjs"

# From the interface reference (powerloom-interfaces.md, "Chain side"); DayStartedEvent's
# topic0 is computed there, pinned here.
EVENTS = {
    "EpochReleased": (
        "EpochReleased(address indexed dataMarketAddress, uint256 indexed epochId, "
        "uint256 begin, uint256 end, uint256 timestamp)",
        "0xf7d2257d4a1c445138ab52bd3c22425bfed29da81d0173961c697dc14fcba60c",
        abi.EPOCH_RELEASED,
    ),
    "SnapshotBatchSubmitted": (
        "SnapshotBatchSubmitted(address indexed dataMarketAddress, string batchCid, "
        "uint256 indexed epochId, uint256 timestamp)",
        "0xcbd08c0021940d15cc732c670afbb27d5170795ee3a4ba0e47368452fae58c5d",
        abi.SNAPSHOT_BATCH_SUBMITTED,
    ),
    "BatchSubmissionsCompleted": (
        "BatchSubmissionsCompleted(address indexed dataMarketAddress, uint256 indexed epochId, "
        "uint256 timestamp)",
        "0x5ed90e6a0e12831302fecf13a2cc6f7e9439fed821340d0bddc4ae305dbf9c30",
        abi.BATCH_SUBMISSIONS_COMPLETED,
    ),
    "DayStartedEvent": (
        "DayStartedEvent(address indexed dataMarketAddress, uint256 dayId, uint256 timestamp)",
        "0x9bf380fe36617cd5d995968abb4ae6d3657a763c126535d590b4503ff2542426",
        abi.DAY_STARTED,
    ),
}

FUNCTIONS = {
    "createDataMarket(address)",
    "releaseEpoch(address,uint256,uint256)",
    "submitSubmissionBatch(address,string,uint256,string[],string[],bytes32)",
    "endBatchSubmissions(address,uint256)",
    "updateRewards(address,uint256[],uint256[],uint256,uint256)",
    "snapshotSubmissionWindow(address)",
    "DAY_SIZE(address)",
    "dailySnapshotQuota(address)",
    "epochsInADay(address)",
    "dayCounter(address)",
    "currentEpoch(address)",
    "eligibleNodesForDay(address,uint256)",
    "slotSubmissionCount(address,uint256,uint256)",
    "setSnapshotSubmissionWindow(address,uint256)",
    "setDaySize(address,uint256)",
    "setDailySnapshotQuota(address,uint256)",
    "setEpochsInADay(address,uint256)",
    "isDataMarketContract(address)",
}

# The DataMarket writers ProtocolState forwards to (production's shape, without the sender
# argument) and the views the collector and the Go API read at the market address.
DATA_MARKET_FUNCTIONS = {
    "protocolState()",
    "eligibleNodesForDay(uint256)",
    "slotSubmissionCount(uint256,uint256)",
    "updateEligibleNodesForDay(uint256,uint256)",
    "updateRewards(uint256,uint256,uint256)",
}


def _entries(kind: str, abi_: list[dict[str, Any]] = PROTOCOL_STATE_ABI) -> list[dict[str, Any]]:
    return [e for e in abi_ if e["type"] == kind]


def _verbose(event: dict[str, Any]) -> str:
    args = ", ".join(
        f"{i['type']}{' indexed' if i['indexed'] else ''} {i['name']}" for i in event["inputs"]
    )
    return f"{event['name']}({args})"


def _canonical(entry: dict[str, Any]) -> str:
    return f"{entry['name']}({','.join(i['type'] for i in entry['inputs'])})"


def test_events_are_byte_exact_production_signatures() -> None:
    events = {e["name"]: e for e in _entries("event")}
    assert set(events) == set(EVENTS)
    for name, (signature, topic0, core_constant) in EVENTS.items():
        assert _verbose(events[name]) == signature
        computed = "0x" + keccak(text=_canonical(events[name])).hex()
        assert computed == topic0 == core_constant, name


def test_functions_present() -> None:
    missing = FUNCTIONS - {_canonical(f) for f in _entries("function")}
    assert not missing


def test_data_market_functions_and_no_events() -> None:
    functions = {_canonical(f) for f in _entries("function", DATA_MARKET_ABI)}
    assert functions == DATA_MARKET_FUNCTIONS
    assert _entries("event", DATA_MARKET_ABI) == []


def test_artifact_fields() -> None:
    for path, name in ((ARTIFACT_PATH, "ProtocolState"), (DATA_MARKET_ARTIFACT_PATH, "DataMarket")):
        artifact = load_artifact(path)
        assert artifact["contractName"] == name
        assert artifact["solcVersion"].startswith("0.8.37+")
        assert artifact["bytecode"].startswith("0x") and len(artifact["bytecode"]) > 1000
        assert artifact["deployedBytecode"].startswith("0x")
        assert len(artifact["sourceSha256"]) == 64


def _compile(*args: str) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        missing_tool("node is not on PATH (needed to run solc-js)")
    if not (ROOT / "node_modules" / "solc").is_dir():
        missing_tool("node_modules/solc is missing: run `make setup` (npm ci)")
    return subprocess.run(
        [str(node), str(COMPILE), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_artifact_matches_source() -> None:
    result = _compile("--check")
    assert result.returncode == 0, result.stderr


def test_check_detects_a_stale_artifact(tmp_path: Path) -> None:
    stale = json.loads(ARTIFACT_PATH.read_text())
    stale["sourceSha256"] = "0" * 64
    path = tmp_path / "ProtocolState.json"
    path.write_text(json.dumps(stale))
    result = _compile("--check", f"--artifact={path}")
    assert result.returncode == 1
    assert "sourceSha256" in result.stderr


def test_check_detects_a_stale_data_market_artifact(tmp_path: Path) -> None:
    stale = json.loads(DATA_MARKET_ARTIFACT_PATH.read_text())
    stale["deployedBytecode"] = "0x00"
    path = tmp_path / "DataMarket.json"
    path.write_text(json.dumps(stale))
    result = _compile("--check", f"--artifact={path}")
    assert result.returncode == 1
    assert f"{path} is stale (deployedBytecode)" in result.stderr
    assert "ProtocolState.json matches" in result.stdout


def test_artifact_option_names_a_contract(tmp_path: Path) -> None:
    result = _compile("--check", f"--artifact={tmp_path / 'Other.json'}")
    assert result.returncode == 2
    assert "must be named <contract>.json" in result.stderr
