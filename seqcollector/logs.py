"""Log rendering: one format for seqcollector's lines and its libraries', secrets masked.

`configure_logging(format, level, stream, secrets)` is called once by each command:

- `format` (SEQ_LOG_FORMAT): ``console`` is structlog's ConsoleRenderer (colours only on a
  terminal); ``json`` is one JSON object per line with ``timestamp`` (ISO 8601, UTC),
  ``level``, ``logger``, ``event`` and the line's fields; ``auto`` is console when `stream`
  is a terminal, JSON otherwise (a file, a pipe, a container's log).
- `level` (SEQ_LOG_LEVEL): debug, info, warning or error, for both kinds of lines.
- Stdlib logging (uvicorn, web3, aiohttp, redis, asyncio, Python warnings) goes through the
  same processors (structlog's ProcessorFormatter on the root logger): every line has the
  one format, with the context below.
- Context: fields bound with `structlog.contextvars` (`bound_contextvars(block=...)`; the
  live path binds market, epoch and block) appear on every line logged inside.
- Secrets: `secrets` maps a value to what is shown instead (`secrets_of(settings)`: the
  tokens, the alert URL's path, credentials, key-like path segments and query values of the
  RPC, relayer and Redis URLs). The rendered line is searched for each of them (raw,
  JSON-escaped and repr-escaped), so a secret inside any key, value, repr of an object or
  traceback is replaced. Values shorter than `MIN_SECRET_CHARS` are not searched for: they
  cannot be told from ordinary text (the URLs that hold them are still replaced whole).

Logs go to stderr by default: stdout carries a command's own output (`digest ...`,
`status --json`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Final, TextIO
from urllib.parse import urlsplit, urlunsplit

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from seqcollector.config import Settings, mask_secret, mask_url

FORMATS: Final = ("auto", "console", "json")
LEVELS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
MIN_SECRET_CHARS: Final = 4
KEY_LIKE_SEGMENT: Final = 16  # path segments this long are hidden, as `mask_url` does


class SecretRedactor:
    """Replaces every occurrence of a secret in a rendered line by its masked form."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        shown: dict[str, str] = {}
        for secret, masked in secrets.items():
            if len(secret) < MIN_SECRET_CHARS:
                continue
            for variant in _escaped(secret):
                shown.setdefault(variant, masked)
        self._shown = shown
        # longest first: a URL is replaced whole before the token inside it is looked for
        alternatives = sorted(shown, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, alternatives))) if shown else None

    def redact(self, text: str) -> str:
        """`text` with every secret replaced."""
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self._shown[m.group(0)], text)

    def __bool__(self) -> bool:
        return self._pattern is not None


def _escaped(secret: str) -> set[str]:
    """The forms a secret takes in a rendered line: raw, JSON-escaped (ASCII or not),
    inside a repr."""
    return {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
    }


def url_secrets(url: str, *, mask_path: bool = False) -> dict[str, str]:
    """The secret parts of `url` -> what is shown instead: the URL itself (masked as
    `mask_url` does), its password (or a lone user name, which is then a token), its query
    values, and its path (whole, `mask_path`) or its key-like segments."""
    if not url:
        return {}
    found: dict[str, str] = {}
    try:
        parts = urlsplit(url)
        password, username = parts.password, parts.username
    except ValueError:
        return {url: "***"}
    whole = mask_url(url)
    path = parts.path.strip("/")
    if mask_path and path:  # as check-config shows SLACK_REPORTING_URL: the path hidden
        shown = urlsplit(whole)
        whole = urlunsplit(shown._replace(path="/" + mask_secret(path)))
    if whole != url:
        found[url] = whole
    if password:
        found[password] = mask_secret(password)
    elif username:
        found[username] = mask_secret(username)
    for pair in parts.query.split("&"):
        value = pair.partition("=")[2]
        if value:
            found[value] = mask_secret(value)
    if mask_path and path:
        found[path] = mask_secret(path)
    for segment in path.split("/"):
        if len(segment) >= KEY_LIKE_SEGMENT:
            found[segment] = mask_secret(segment)
    return found


def secrets_of(settings: Settings) -> dict[str, str]:
    """Every secret value of `settings` -> its masked form (for `configure_logging`)."""
    found: dict[str, str] = {}
    for token in (settings.auth_read_token, settings.tx_relayer_auth_write_token):
        if token:
            found[token] = mask_secret(token)
    found.update(url_secrets(settings.slack_reporting_url, mask_path=True))
    for url in (
        *settings.rpc_nodes,
        *settings.archive_rpc_nodes,
        settings.tx_relayer_url,
        settings.redis_url(),
    ):
        found.update(url_secrets(url))
    return found


class _Redacting:
    """The last processor: the renderer, then the line with its secrets replaced."""

    def __init__(self, renderer: Processor, redactor: SecretRedactor) -> None:
        self._renderer = renderer
        self._redactor = redactor

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        line = self._renderer(logger, name, event_dict)
        assert isinstance(line, str), "the renderers used here return str"
        return self._redactor.redact(line)


class _LogHandler(logging.StreamHandler[TextIO]):
    """The root handler `configure_logging` installs (and replaces on its next call).

    Without a stream of its own it writes to whatever `sys.stderr` is at the time (a test's
    capture, a stream replaced after configuration)."""

    def __init__(self, stream: TextIO | None) -> None:
        self._own: TextIO | None = stream
        super().__init__(stream or sys.stderr)

    @property
    def stream(self) -> TextIO:
        return self._own if self._own is not None else sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # StreamHandler.__init__ assigns it; the property decides


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed stream
        return False


def renderer_for(format: str, stream: TextIO) -> Processor:
    """The renderer of `format` (auto: console on a terminal, else JSON) for `stream`."""
    if format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {format!r}")
    terminal = is_terminal(stream)
    if format == "console" or (format == "auto" and terminal):
        return structlog.dev.ConsoleRenderer(colors=terminal)
    return structlog.processors.JSONRenderer()


def configure_logging(
    format: str = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    secrets: Mapping[str, str] | Iterable[str] = (),
) -> None:
    """Render every log line (structlog's and stdlib's) to `stream` (default: stderr) in
    `format` at `level` or above, with `secrets` replaced (a mapping secret -> shown, or
    secrets to show masked by `mask_secret`). Replaces an earlier call's configuration."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    target = sys.stderr if stream is None else stream
    if not isinstance(secrets, Mapping):
        secrets = {s: mask_secret(s) for s in secrets}
    renderer = _Redacting(renderer_for(format, target), SecretRedactor(secrets))
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,  # plain text: no locals (secrets) shown
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = _LogHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LogHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    logging.captureWarnings(True)  # a library's warning is a log line too, not raw stderr
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        cache_logger_on_first_use=False,
    )


def reset_logging() -> None:
    """Undo `configure_logging`: structlog's defaults, no handler of ours on the root logger,
    Python warnings printed again (for tests, and for code embedding the collector)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LogHandler)]:
        root.removeHandler(old)
        old.close()
    root.setLevel(logging.WARNING)
    logging.captureWarnings(False)
    structlog.reset_defaults()
