"""The CLI's last resort: any failure of a command is one line with its exit code."""

from __future__ import annotations

import pytest

from seqcollector.cli import one_line_errors
from seqcollector.errors import DependencyError, SettingsError


def fails_with(exc: BaseException) -> int:
    @one_line_errors
    def command() -> None:
        raise exc

    with pytest.raises(SystemExit) as info:
        command()
    code = info.value.code
    assert isinstance(code, int)
    return code


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (SettingsError("BATCH_SIZE: bad"), 2, "error: BATCH_SIZE: bad"),
        (DependencyError("Redis at x: down"), 1, "error: Redis at x: down"),
        (
            ExceptionGroup("g", [ValueError("v"), SettingsError("REDIS_DB: no")]),
            2,
            "error: REDIS_DB: no",
        ),
        (
            RuntimeError("boom\nsecond line"),
            1,
            "error: internal error: RuntimeError: boom second line; the log has the traceback",
        ),
        (
            ExceptionGroup("g", [KeyError("k")]),
            1,
            "error: internal error: KeyError: 'k'; the log has the traceback",
        ),
    ],
)
def test_failures_are_one_line(
    exc: BaseException, code: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fails_with(exc) == code
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [line]
    assert "Traceback" not in err


def test_unexpected_error_traceback_goes_to_the_log(capsys: pytest.CaptureFixture[str]) -> None:
    fails_with(RuntimeError("boom"))
    out = capsys.readouterr().out  # structlog's default: stdout
    assert "internal_error" in out and "RuntimeError" in out
