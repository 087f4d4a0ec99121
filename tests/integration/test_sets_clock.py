"""The submission-set reader stamps its answers with the clock and the sets' TTL it was given
(`run`: the wall clock and SEQ_SUBMISSION_SETS_TTL_S), and with nothing otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from seqcollector.config import load_settings
from seqcollector.core.effects import QuerySubmissionSets
from seqcollector.runtime.answers import SubmissionSetReader

pytestmark = pytest.mark.anyio
M = "0x" + "ab" * 20


async def test_answers_carry_read_at_and_ttl(redis_backend: Any) -> None:
    client = redis_backend.client()
    await client.sadd(f"SnapshotCollector.{M}.3.0xh", f"{M}.3.p.1")
    query = QuerySubmissionSets(1, M, 3, [f"SnapshotCollector.{M}.3.0xh"])
    stamped = await SubmissionSetReader(client, clock=lambda: 1234.9, sets_ttl_s=600).answer(query)
    assert (stamped.read_at, stamped.sets_ttl_s, stamped.members) == (1234, 600, [f"{M}.3.p.1"])
    plain = await SubmissionSetReader(client, sets_ttl_s=600).answer(query)
    assert (plain.read_at, plain.sets_ttl_s) == (0, 0)


def test_the_setting() -> None:
    assert load_settings(environ={}).submission_sets_ttl_s == 1200
    assert load_settings(environ={"SEQ_SUBMISSION_SETS_TTL_S": "0"}).submission_sets_ttl_s == 0
