"""The `seqcollector` command: entry points only, no business rules (those live in core).

Every failure of a command is one line on stderr, `error: <what failed and what to do>`,
never a traceback: an `OperatorError` with its exit code (2 for a setting or input to fix,
1 for an unreachable dependency), a usage error with click's code (2), and anything
unexpected as `internal error: <type>: <message>; the log has the traceback` (exit 1), the
traceback going to the structured log.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar, cast

import anyio
import click
import structlog
from redis.exceptions import RedisError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from seqcollector.errors import EXIT_DEPENDENCY, EXIT_SETTINGS, OperatorError
from seqcollector.journal import read_header

if TYPE_CHECKING:
    from seqcollector.config import Settings

err = Console(stderr=True)
log = structlog.get_logger("seqcollector.cli")

EXIT_BAD_INPUT = EXIT_SETTINGS
F = TypeVar("F", bound=Callable[..., Any])

namespace_option = click.option(
    "--namespace",
    default="seqcollector",
    show_default=True,
    help="The collector's namespace (as given to run): its stored state and keys.",
)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML configuration file; the environment wins over it.",
)


def _fail(message: str, code: int = 1) -> NoReturn:
    line = " ".join(message.split())
    err.print(Text.assemble(("error:", "bold red"), " ", line), highlight=False, soft_wrap=True)
    sys.exit(code)


def _leaf(exc: BaseException) -> BaseException:
    """The failure an exception group stands for: its first OperatorError, else its first
    leaf that is not a cancellation."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []
    stack: list[BaseException] = [exc]
    while stack:
        item = stack.pop(0)
        if isinstance(item, BaseExceptionGroup):
            stack[0:0] = list(item.exceptions)
        else:
            leaves.append(item)
    cancelled = asyncio.CancelledError  # the commands run on anyio's asyncio backend
    for leaf in leaves:
        if isinstance(leaf, OperatorError):
            return leaf
    return next((leaf for leaf in leaves if not isinstance(leaf, cancelled)), leaves[0])


def report_failure(exc: BaseException) -> NoReturn:
    """Print `exc` as the one line of a failed command and exit with its code."""
    from seqcollector.runtime.pipeline import ResumeError
    from seqcollector.runtime.replay import ReplayConflict

    leaf = _leaf(exc)
    if isinstance(leaf, SystemExit):
        raise leaf
    if isinstance(leaf, OperatorError):
        _fail(str(leaf), leaf.exit_code)
    if isinstance(leaf, ResumeError | ReplayConflict):
        _fail(str(leaf), EXIT_SETTINGS)
    if isinstance(leaf, KeyboardInterrupt):
        _fail("interrupted", 130)
    if isinstance(leaf, RedisError):
        _fail(
            f"Redis: {type(leaf).__name__}: {leaf}; check that Redis is up and answering",
            EXIT_DEPENDENCY,
        )
    log.error("internal_error", exc_info=leaf)
    text = " ".join(str(leaf).split())[:300]
    _fail(
        f"internal error: {type(leaf).__name__}: {text}; the log has the traceback",
        EXIT_DEPENDENCY,
    )


def one_line_errors(fn: F) -> F:
    """Run a command; any failure ends it with one line (`report_failure`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SystemExit:
            raise
        except BaseException as exc:  # every failure becomes one line
            report_failure(exc)

    return cast(F, wrapper)


class OneLineGroup(click.Group):
    """Usage errors as one line too (click prints the usage and a hint over several)."""

    def main(self, args: Sequence[str] | None = None, *a: Any, **kw: Any) -> Any:
        kw["standalone_mode"] = False
        try:
            return super().main(args, *a, **kw)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            hint = ""
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                hint = f" (see `{ctx.command_path} --help`)"
            _fail(f"{exc.format_message()}{hint}", exc.exit_code)
        except click.Abort:
            _fail("aborted", EXIT_DEPENDENCY)


@click.group(cls=OneLineGroup)
@click.version_option(package_name="seqcollector")
def main() -> None:
    """seqcollector: a replayable Event Collector for a submission sequencer."""


@main.command()
@click.argument("journal", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--redis", "redis_url", default=None, help="Redis URL; default: embedded store.")
@click.option(
    "--effects-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the effects stream, one JSON line each.",
)
@click.option(
    "--namespace",
    default="seqcollector:replay",
    show_default=True,
    help="Key prefix of the replay's state, checkpoint and outbox.",
)
@click.option("--resume", is_flag=True, help="Continue a replay the store already holds.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@one_line_errors
def replay(
    journal: Path,
    redis_url: str | None,
    effects_out: Path | None,
    namespace: str,
    resume: bool,
    quiet: bool,
) -> None:
    """Feed JOURNAL through the core and executor; the last line is `digest <sha256>`."""
    from seqcollector.config import mask_url, redis_url_option, setting_from_env
    from seqcollector.runtime.executor import embedded_redis, redis_client
    from seqcollector.runtime.replay import replay_journal
    from seqcollector.runtime.startup import StartupRetry, check_redis

    _logs_from_env(urls=[redis_url or ""])
    if not journal.is_file():
        _fail(
            f"journal {journal} does not exist: give the path of a .jsonl journal", EXIT_BAD_INPUT
        )
    read_header(journal)  # JournalError: one line naming the file, line and field
    if redis_url is not None:
        redis_url = redis_url_option(redis_url, "--redis")
        retry = StartupRetry(setting_from_env("SEQ_STARTUP_TIMEOUT_S"))
        anyio.run(check_redis, redis_url, mask_url(redis_url), "--redis", retry)
    total = journal.stat().st_size

    async def go(out: IO[bytes] | None) -> None:
        client = redis_client(redis_url) if redis_url else embedded_redis()
        progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=quiet or not err.is_terminal,  # no bar in a log: stderr is for errors
            transient=False,
        )
        try:
            with progress:
                task = progress.add_task(f"replay {journal.name}", total=total)
                result = await replay_journal(
                    journal,
                    client,
                    namespace,
                    out,
                    resume,
                    on_progress=lambda done: progress.update(task, completed=done),
                    redis_timeout_s=setting_from_env("TIMEOUT_REDIS_OPERATION"),
                )
                progress.update(task, completed=total)
        except RedisError as exc:
            shown = mask_url(redis_url or "")
            _fail(
                f"Redis at {shown}: {type(exc).__name__}: {exc}; start it, or omit --redis "
                "to replay into the embedded store",
                EXIT_DEPENDENCY,
            )
        finally:
            await client.aclose()
        if not quiet:
            _print_summary(result.inputs, result.effects, result.commits, result.state.counters)
        click.echo(f"digest {result.digest}")

    if effects_out is not None:
        with effects_out.open("wb") as out:
            anyio.run(go, out)
    else:
        anyio.run(go, None)


def _print_summary(inputs: int, effects: int, commits: int, counters: dict[str, int]) -> None:
    table = Table(title="replay", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("inputs", str(inputs))
    table.add_row("effects", str(effects))
    table.add_row("commits (MULTI/EXEC)", str(commits))
    for name, value in sorted(counters.items()):
        table.add_row(name, str(value))
    err.print(table)


@main.command()
@config_option
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write every input to this journal (resumed on restart).",
)
@click.option(
    "--namespace",
    default="seqcollector",
    show_default=True,
    help="Key prefix of the collector's own state, checkpoint and outbox.",
)
@click.option(
    "--recover",
    is_flag=True,
    help="Redis lost the namespace's data: rebuild it from the --record journal (what the "
    "delivery ledger lists as sent is not sent again), alert, then collect.",
)
@one_line_errors
def run(config_path: str | None, record: Path | None, namespace: str, recover: bool) -> None:
    """Follow the chain and collect (the Go collector's job), until SIGINT/SIGTERM."""
    from seqcollector.config import load_settings
    from seqcollector.runtime.live import run_live

    settings = load_settings(config_path).require_run()
    _logs_from(settings)
    digest = anyio.run(
        functools.partial(run_live, settings, namespace, record, err, recover=recover)
    )
    if digest is not None:
        click.echo(f"digest {digest}")


@main.command()
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--epochs",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Epochs released per market.",
)
@click.option("--markets", type=click.IntRange(1, 50), default=2, show_default=True)
@click.option("--projects", type=click.IntRange(1), default=6, show_default=True)
@click.option("--slots", type=click.IntRange(1), default=8, show_default=True)
@click.option(
    "--faults",
    "faults_spec",
    default="none",
    show_default=True,
    help="Comma-separated kinds or all: rpc, lag, redis, crash, reorg, relayer, deepreorg,"
    " failover.",
)
@click.option("--fast", is_flag=True, help="Synthetic chain without the EVM (load runs).")
@click.option(
    "--redis",
    "redis_url",
    default=None,
    help="An EMPTY Redis database; default: the embedded store.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder; default: out/sim-<seed>.",
)
@one_line_errors
def sim(
    seed: int,
    epochs: int,
    markets: int,
    projects: int,
    slots: int,
    faults_spec: str,
    fast: bool,
    redis_url: str | None,
    out_dir: Path | None,
) -> None:
    """Run the pipeline against a simulated world; check the invariants; write a report.

    Writes OUT/journal.jsonl, OUT/effects.jsonl, OUT/report.html and OUT/sim.log; the last
    line is `digest <sha256>` (what `seqcollector replay OUT/journal.jsonl` prints too).
    """
    from seqcollector.config import mask_url, redis_url_option, setting_from_env
    from seqcollector.runtime.startup import StartupRetry, check_redis
    from sim.faults import FaultSpecError, parse_faults
    from sim.harness import SimFailed, SimSpec, run_simulation
    from sim.report import summary_table

    try:
        faults = parse_faults(faults_spec)
    except FaultSpecError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    if redis_url is not None:
        redis_url = redis_url_option(redis_url, "--redis")
        retry = StartupRetry(setting_from_env("SEQ_STARTUP_TIMEOUT_S"))
        anyio.run(check_redis, redis_url, mask_url(redis_url), "--redis", retry)
    out = out_dir or Path("out") / f"sim-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    log_file = (out / "sim.log").open("a")
    _logs_from_env(log_file, urls=[redis_url or ""])  # the terminal shows progress
    spec = SimSpec(
        seed=seed,
        epochs=epochs,
        markets=markets,
        projects=projects,
        slots=slots,
        faults=faults,
        fast=fast,
    )
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )

    async def go() -> None:
        with progress:
            task = progress.add_task(f"sim seed {seed}", total=None)
            record = await run_simulation(
                spec,
                out,
                redis_url,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        err.print(summary_table(record))
        err.print(f"report: {out / 'report.html'}")
        click.echo(f"digest {record.digest}")

    try:
        anyio.run(go)
    except SimFailed as exc:
        log_file.close()
        record_path = out / "record.json"
        err.print(f"[bold red]{exc}[/] (report: {out / 'report.html'})", highlight=False)
        if record_path.exists():
            import msgspec

            click.echo(f"digest {msgspec.json.decode(record_path.read_bytes())['digest']}")
        sys.exit(3)
    log_file.close()


def _logs_from(settings: Settings) -> None:
    """Logs as SEQ_LOG_FORMAT / SEQ_LOG_LEVEL say, every secret of `settings` masked."""
    from seqcollector.logs import configure_logging, secrets_of

    configure_logging(settings.log_format, settings.log_level, secrets=secrets_of(settings))


def _logs_from_env(stream: TextIO | None = None, urls: Sequence[str] = ()) -> None:
    """Logs of a command without a configuration file: SEQ_LOG_FORMAT / SEQ_LOG_LEVEL from
    the environment, the secrets of `urls` (a --redis URL) masked; to stderr or `stream`."""
    from seqcollector.config import setting_from_env
    from seqcollector.logs import configure_logging, url_secrets

    secrets = {k: v for url in urls for k, v in url_secrets(url).items()}
    log_format, level = setting_from_env("SEQ_LOG_FORMAT"), setting_from_env("SEQ_LOG_LEVEL")
    configure_logging(log_format, level, stream, secrets)


@main.command()
@config_option
@namespace_option
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@one_line_errors
def cleanup(config_path: str | None, namespace: str, dry_run: bool) -> None:
    """Delete stale keys: submission sets of batched epochs, fired day-rollover markers and
    the Go collector's dead epoch markers (judged on the namespace's stored state)."""
    from seqcollector.config import load_settings
    from seqcollector.runtime.cleanup import cleanup_command

    settings = load_settings(config_path).require_chain()
    _logs_from(settings)
    report = anyio.run(cleanup_command, settings, namespace, dry_run)
    verb = "would delete" if dry_run else "deleted"
    table = Table(title=f"cleanup of namespace {namespace!r}{' (dry run)' if dry_run else ''}")
    for column in ("family", "scanned", "stale", verb):
        table.add_column(column)
    scanned = {f: r for f, r in report.families.items() if r.scanned}
    for family, r in scanned.items():
        count = r.stale if dry_run else r.deleted
        table.add_row(family, str(r.scanned), str(r.stale), str(count))
    out = Console(soft_wrap=True, highlight=False)
    out.print(table)
    for family, r in scanned.items():
        for example in r.examples:  # whole key names, not cut to the table's width
            out.print(Text(f"{family}: {example}"))
    total = report.stale if dry_run else report.deleted
    done = "" if report.complete else " (the pass budget ran out: run it again for the rest)"
    out.print(Text(f"{verb} {total} keys in {report.round_trips} round trips{done}"))


@main.command()
@config_option
@namespace_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@one_line_errors
def status(config_path: str | None, namespace: str, as_json: bool) -> None:
    """What a namespace holds: checkpoint, committed head, chain head and lag (when RPC_NODES
    answer), open windows and day records per market, pending queries, outbox by lane,
    state size. Reads only."""
    import msgspec

    from seqcollector.config import load_settings
    from seqcollector.runtime.status import status_command

    settings = load_settings(config_path)
    _logs_from(settings)
    found = anyio.run(status_command, settings, namespace)
    out = Console(soft_wrap=True, highlight=False)
    if as_json:
        out.print(Text(msgspec.json.encode(found).decode()))
        return
    lag = f" (lag {found.lag_blocks} blocks)" if found.lag_blocks is not None else ""
    chain = (
        f"chain head {found.chain_head}{lag}"
        if found.chain_head is not None
        else "chain head unknown"
    )
    out.print(
        Text(
            f"namespace {found.namespace!r}: {found.seq} inputs applied, "
            f"committed block {found.committed_block}, {chain}"
        )
    )
    out.print(Text(f"state: {found.state_bytes:,} bytes, format {found.state_format}"))
    if found.lease_holder is not None:
        left = f", {found.lease_ttl_ms / 1000:.1f} s left" if found.lease_ttl_ms else ""
        lease = f"held by {found.lease_holder}, token {found.lease_token}{left}"
    else:
        lease = "free (no collector active)"
    out.print(Text(f"lease: {lease}"))
    table = Table(title="markets")
    for column in (
        "market",
        "day",
        "open windows",
        "queried",
        "last known day",
        "finals pending (days)",
        "epochs remembered",
    ):
        table.add_column(column)
    for m in found.markets:
        table.add_row(
            m.market,
            str(m.day),
            _epochs(m.open_windows),
            _epochs(m.queried_windows),
            str(m.last_known_day),
            _epochs(m.pending_markers),
            str(m.emitted_epochs),
        )
    out.print(table)
    pending = ", ".join(f"{k} {n}" for k, n in found.pending_queries.items()) or "none"
    lanes = ", ".join(f"{k} {n}" for k, n in found.outbox_pending.items()) or "empty"
    out.print(Text(f"pending queries: {pending}"))
    oldest = f" (oldest {found.outbox_oldest_id})" if found.outbox_oldest_id else ""
    out.print(Text(f"outbox pending: {lanes}{oldest}"))


@main.command()
@click.option("--to-block", "to_block", type=int, required=True, help="The block to roll back to.")
@config_option
@namespace_option
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The journal `run --record` writes for this namespace: the rewind is appended to it.",
)
@click.option("--dry-run", is_flag=True, help="Show what the rewind would do; write nothing.")
@one_line_errors
def rewind(
    config_path: str | None, namespace: str, to_block: int, record: Path | None, dry_run: bool
) -> None:
    """Roll a stopped collector back to block N, as a reorg to N would: its state as of N
    from the retained history, the keys of the blocks above N deleted, batched epochs left
    batched, in one commit. The next `run` resumes from N+1."""
    from seqcollector.config import load_settings
    from seqcollector.runtime.rewind import rewind_command

    settings = load_settings(config_path)
    _logs_from(settings)
    r = anyio.run(rewind_command, settings, namespace, to_block, dry_run, record)
    out = Console(soft_wrap=True, highlight=False)
    title = " (dry run: nothing written)" if dry_run else ""
    out.print(
        Text(
            f"rewind of namespace {r.namespace!r}{title}: from block {r.from_block} to block "
            f"{r.to_block} ({r.from_block - r.to_block} blocks)"
        )
    )
    table = Table(title=f"windows per market (epochs) as of block {r.to_block}")
    columns = (
        "market",
        "open",
        "reopened (were queried)",
        f"dropped (released above {r.to_block})",
        f"batched above {r.to_block}: stay batched",
    )
    for column in columns:
        table.add_column(column)
    for m in r.markets:
        lists = (m.open_after, m.reopened, m.dropped, m.kept_batched)
        table.add_row(m.market, *(_epochs(v) for v in lists))
    out.print(table)
    out.print(
        Text(
            f"the dropped windows open again when `run` processes their release blocks; "
            f"an epoch batched above block {r.to_block} is refused if released again"
        )
    )
    for family, n in r.keys_named.items():
        present = r.keys_deleted.get(family, 0)
        out.print(
            Text(
                f"keys {'it would delete' if dry_run else 'deleted'}: {family} {present} "
                f"(blocks {r.to_block + 1}..{r.from_block}; {n - present} had expired)"
            )
        )
    out.print(
        Text(
            "kept: the batches, batch counts and slot counts of the epochs batched above "
            f"block {r.to_block} (they stay batched, never batched again), days and markers"
        )
    )
    restored = ", ".join(f"{k} {n}" for k, n in r.queries_restored.items())
    if restored:
        out.print(Text(f"queries restored (asked again when run resumes): {restored}"))
    examples = f" ({', '.join(r.outbox_examples)})" if r.outbox_examples else ""
    out.print(
        Text(
            f"outbox: {r.outbox_cancelled} entries {'would be ' if dry_run else ''}cancelled; "
            f"{r.outbox_pending} pending "
            f"entries kept, {r.outbox_of_batched_above} of them of epochs batched above block "
            f"{r.to_block}{examples}: those epochs stay batched, so the relayer still needs "
            "them; delivered entries cannot be taken back"
        )
    )
    if r.journal is not None:
        verb = "would append" if dry_run else "appended"
        out.print(Text(f"journal: {verb} the rewind to {r.journal} (`run --record` resumes it)"))
    else:
        out.print(
            Text(
                "journal: none given; if this namespace is recorded (`run --record FILE`), "
                "rewind with --record FILE too, or `run --record FILE` refuses to resume"
            )
        )
    out.print(
        Text(
            f"next: `seqcollector run` {'would resume' if dry_run else 'resumes'} from block "
            f"{r.resume_from}"
        )
    )


@main.command("ack-reorg")
@config_option
@namespace_option
@one_line_errors
def ack_reorg(config_path: str | None, namespace: str) -> None:
    """Acknowledge the reorgs deeper than MAX_REORG_DEPTH seen so far: a running
    collector's /ready stops failing on them at its next check. Writes one Redis key."""
    from seqcollector.config import load_settings, mask_url
    from seqcollector.errors import DependencyError
    from seqcollector.runtime.executor import redis_client
    from seqcollector.runtime.health import acknowledge_deep_reorgs
    from seqcollector.runtime.startup import describe_failure

    settings = load_settings(config_path)
    _logs_from(settings)
    budget = settings.timeouts.redis_operation

    async def ack() -> int:
        redis = redis_client(settings.redis_url())
        try:
            with anyio.fail_after(budget * 2):
                return await acknowledge_deep_reorgs(redis, namespace)
        except (RedisError, TimeoutError, OSError) as exc:
            raise DependencyError(
                f"Redis at {mask_url(settings.redis_url())}: {describe_failure(exc, budget)} "
                "(ack-reorg); check that Redis is up and answering"
            ) from None
        finally:
            await redis.aclose()

    count = anyio.run(ack)
    Console(soft_wrap=True, highlight=False).print(
        Text(f"namespace {namespace!r}: {count} deep reorg(s) acknowledged")
    )


@main.command()
@config_option
@click.option("--host", default=None, help="Address to listen on  [default: SEQ_API_HOST]")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port to listen on (0: any free port)  [default: SEQ_API_PORT]",
)
@one_line_errors
def api(config_path: str | None, host: str | None, port: int | None) -> None:
    """Serve the read API (the Go collector's 12 paths; Swagger UI at /swagger/) from Redis
    alone, until SIGINT/SIGTERM. Needs DATA_MARKET_ADDRESSES and AUTH_READ_TOKEN."""
    from seqcollector.api.command import api_command
    from seqcollector.config import load_settings

    settings = load_settings(config_path)
    _logs_from(settings)
    anyio.run(
        api_command,
        settings,
        settings.api_host if host is None else host,
        settings.api_port if port is None else port,
    )


def _epochs(values: list[int]) -> str:
    shown = ", ".join(str(v) for v in values[:8])
    return shown + (f" ... ({len(values)})" if len(values) > 8 else "") if values else "-"


@main.command("check-config")
@config_option
@click.option(
    "--connect",
    is_flag=True,
    help="Also check Redis (PING, the database), every RPC node and the contract.",
)
@one_line_errors
def check_config(config_path: str | None, connect: bool) -> None:
    """Print the effective configuration (secrets masked); refuse (exit 2) what `run` would
    refuse. With --connect, check each dependency too (exit 1 if one fails)."""
    from seqcollector.config import NOT_YET_APPLIED, describe_settings, load_settings
    from seqcollector.runtime.startup import check_connections

    settings = load_settings(config_path).require_run()
    _logs_from(settings)
    table = Table(title="effective configuration")
    table.add_column("setting")
    table.add_column("value")
    table.add_column("from")
    for name, value, source in describe_settings(settings):
        table.add_row(name, value, source)
    out = Console(soft_wrap=True, highlight=False)
    out.print(table)
    for name, note in NOT_YET_APPLIED.items():
        out.print(
            Text(f"note  {name} ({settings.source(name)}): accepted, not applied yet: {note}")
        )
    if connect:
        anyio.run(check_connections, settings, lambda line: out.print(Text(f"ok  {line}")))


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--markets", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--blocks", type=click.IntRange(1), default=300, show_default=True)
@click.option("--projects", type=click.IntRange(1), default=6, show_default=True)
@click.option("--slots", type=click.IntRange(1), default=8, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True)
@click.option(
    "--reorg",
    "reorgs",
    multiple=True,
    metavar="BLOCK:DEPTH",
    help="Replace DEPTH blocks when the chain reaches BLOCK (repeatable).",
)
@click.option("--attestor", is_flag=True, help="Enable ATTESTOR_QUEUE_PUSH_ENABLED.")
def synth(
    out: Path,
    seed: int,
    markets: int,
    blocks: int,
    projects: int,
    slots: int,
    batch_size: int,
    reorgs: tuple[str, ...],
    attestor: bool,
) -> None:
    """Write a journal of a synthetic chain and dequeuer (deterministic from --seed)."""
    from seqcollector.journal import JournalHeader, JournalWriter
    from sim.synthetic import SyntheticWorld, WorldSpec, drive

    _logs_from_env()
    try:
        reorg_pairs = tuple((int(a), int(b)) for a, b in (r.split(":") for r in reorgs))
    except ValueError:
        _fail(f"--reorg takes BLOCK:DEPTH, got {reorgs}", EXIT_BAD_INPUT)
    spec = WorldSpec(
        seed=seed,
        markets=markets,
        blocks=blocks,
        projects=projects,
        slots=slots,
        reorgs=reorg_pairs,
    )
    world = SyntheticWorld(spec)
    config = world.core_config(batch_size=batch_size, attestor_queue_push_enabled=attestor)
    meta = {"generator": "seqcollector synth", "spec": repr(spec)}
    with JournalWriter(out, JournalHeader(config=config, meta=meta)) as writer:
        writer.write_many(drive(world, config))
    err.print(f"wrote {out}")
