"""The ``kmsr`` command: a Typer app whose commands live one per module in ``kmsr_cli.commands``.

Conventions: data on stdout, logs and progress on stderr; exit code 0 on
success, 2 on a usage error, 1 on a failure the message explains. User errors print one line
(and a hint); ``--debug`` (or KMSR_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from . import __version__
from .console import err, setup_logging

app = typer.Typer(
    name="kmsr",
    help=(
        "Kernel Modeling Super-Resolution: estimate real blur kernels from photos, model them with a GAN, "
        "train SR networks on pool-blurred pairs, super-resolve, and benchmark.\n\n"
        "Data goes to stdout, progress and logs to stderr. Exit codes: 0 success, 1 failure (explained), 2 usage error."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"kmsr {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Verbose logs, and full tracebacks instead of one-line errors.", envvar="KMSR_DEBUG")
    ] = False,
) -> None:
    setup_logging(debug)
    if debug:
        os.environ["KMSR_DEBUG"] = "1"


def _register_commands() -> None:
    from .commands import estimate_cmd, plugins_cmd, pool_cmd, sr_cmd, train_cmd

    app.command("plugins")(plugins_cmd.plugins)
    app.command("estimate")(estimate_cmd.estimate)
    app.add_typer(pool_cmd.app, name="pool")
    from .commands import gan_cmd

    app.add_typer(gan_cmd.app, name="gan")
    app.command("train")(train_cmd.train)
    app.command("sr")(sr_cmd.sr)
    from .commands import adapt_cmd

    app.command("adapt")(adapt_cmd.adapt)
    from .commands import export_cmd

    app.command("export")(export_cmd.export)
    from .commands import bench_cmd

    app.add_typer(bench_cmd.app, name="bench")
    from .commands import demo_cmd

    app.command("demo")(demo_cmd.demo)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; errors are mapped to a message and an exit code by ``commands.failure``."""
    from .commands.failure import USER_ERRORS, failure_of, show

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("KMSR_DEBUG", "") not in ("", "0")
    try:
        app(args=args, prog_name="kmsr")
    except (*USER_ERRORS, KeyboardInterrupt) as exc:
        failure = failure_of(exc)
        if debug and not isinstance(exc, KeyboardInterrupt):
            raise  # --debug: the traceback, as it happened
        show(failure, err)
        sys.exit(failure.exit_code)
    except SystemExit as exc:
        # Typer turns Ctrl-C inside a command into a silent exit 130: say why the command stopped.
        if exc.code == 130 and _caused_by_interrupt(exc):
            err.print("[yellow]interrupted[/]")
        raise


def _caused_by_interrupt(exc: BaseException) -> bool:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


if __name__ == "__main__":  # pragma: no cover
    main()
