"""Failures an operator acts on: one line that says what failed and what to do.

Every error that ends a command (`run`, `replay`, `sim`, `check-config`) is an
`OperatorError`; the CLI prints its message as one line and exits with its `exit_code`:
2 for a setting or input to fix, 1 for a dependency that is unreachable or misbehaving.
"""

from __future__ import annotations

EXIT_SETTINGS = 2
EXIT_DEPENDENCY = 1


class OperatorError(Exception):
    """An error whose `str()` is one line naming the component and what to do."""

    exit_code: int = EXIT_DEPENDENCY

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(" ".join(message.split()))
        if exit_code is not None:
            self.exit_code = exit_code


class SettingsError(OperatorError):
    """A setting, an option or an input file to fix (exit 2)."""

    exit_code = EXIT_SETTINGS


class DependencyError(OperatorError):
    """Redis, an RPC node or the contract could not be used (exit 1)."""

    exit_code = EXIT_DEPENDENCY
