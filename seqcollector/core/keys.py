"""Redis key names and queue names of the production system (compatibility contract).

`lc` is a data market address in lowercase; every name here is byte-for-byte the Go
collector's, so the dequeuer, finalizer and API keep working unchanged.
"""

from __future__ import annotations

FINALIZER_QUEUE = "finalizerQueue"
ATTESTOR_QUEUE = "attestorQueue"
SUBMISSION_LIMIT_TABLE = "SubmissionLimitTable"
DAY_SIZE_TABLE = "DaySizeTableKey"
DAILY_SNAPSHOT_QUOTA_TABLE = "DailySnapshotQuotaTableKey"


def block_hash(number: int) -> str:
    return f"BlockHashByNumberKey.{number}"


def submission_set(lc: str, epoch: int, header: str) -> str:
    return f"SnapshotCollector.{lc}.{epoch}.{header}"


def batch_submissions(lc: str, epoch: int, batch_id: int) -> str:
    return f"BatchSubmissionsKey.{lc}.{epoch}.{batch_id}"


def batch_count(lc: str, epoch: int) -> str:
    return f"BatchCountKey.{lc}.{epoch}"


def slot_submissions(lc: str, day: int, slot: int) -> str:
    return f"SlotSubmissionsKey.{lc}.{day}.{slot}"


def current_day(lc: str) -> str:
    return f"CurrentDayKey.{lc}"


TOTAL_NODES_COUNT = "TotalNodesCount"


def last_known_day(lc: str) -> str:
    return f"LastKnownDayKey.{lc}"


def rollover_marker_set(lc: str) -> str:
    return f"DayRolloverEpochMarkerSetKey.{lc}"


def rollover_marker_details(lc: str, epoch: int) -> str:
    return f"DayRolloverEpochMarkerDetailsKey.{lc}.{epoch}"


def zero_count(lc: str, day: int) -> str:
    return f"ZeroCountKey.{lc}.{day}"


def eligible_slot_submissions(lc: str, day: int, slot: int) -> str:
    return f"EligibleSlotSubmissionsKey.{lc}.{day}.{slot}"


def eligible_nodes_by_day(lc: str, day: int) -> str:
    return f"EligibleNodeByDayKey.{lc}.{day}"


# Read by the read API (written by the dequeuer, the finalizer and the snapshotters' side).


def epoch_submissions(lc: str, epoch: int) -> str:
    return f"EpochSubmissionsKey.{lc}.{epoch}"


def eligible_slot_submissions_by_epoch(lc: str, day: int, epoch: int) -> str:
    return f"EligibleSlotSubmissionByEpochKey.{lc}.{day}.{epoch}"


def discarded_submissions_by_epoch(lc: str, day: int, epoch: int) -> str:
    return f"DiscardedSubmissionKey.{lc}.{day}.{epoch}"


def discarded_submissions_by_day(lc: str, day: int) -> str:
    return f"DiscardedSubmissionKey.{lc}.{day}"


def last_simulated_submission(lc: str, slot: int) -> str:
    return f"LastSimulatedSubmissionKey.{lc}.{slot}"


def last_snapshot_submission(lc: str, slot: int) -> str:
    return f"LastSnapshotSubmissionKey.{lc}.{slot}"


def node_version(lc: str, slot: int) -> str:
    return f"snapshotter:{lc}:{slot}:node_version"


def active_snapshotters(lc: str, epoch: int) -> str:
    return f"ActiveSnapshottersForEpoch.{lc}.{epoch}"
