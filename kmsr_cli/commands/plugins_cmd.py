"""``kmsr plugins``: what is installed, who provides it, whether it can run here, and (``--check``)
whether it keeps the plugin contract."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..console import emit_json, err
from ..options import JsonOpt
from ..plugin_host import get_host

CheckOpt = Annotated[
    list[str] | None,
    typer.Option("--check", metavar="NAME",
                 help="Run the conformance checks on the backend NAME (every kind that has one), or on every backend "
                      "of the plugin NAME; repeatable. Exit code 1 when one breaks its contract."),
]
KindOpt = Annotated[
    str | None,
    typer.Option("--kind", help="With --check: only this kind (estimators, generators, backbones, degradations)."),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="With --check: list the checks that passed too.")]


def plugins(json: JsonOpt = False, check: CheckOpt = None, kind: KindOpt = None, verbose: VerboseOpt = False) -> None:
    """List plugins and the estimators, generators, backbones and degradations they register.

    Each backend shows whether it is usable on this machine and, if not, why (for example
    CuPy missing or no CUDA device). Built-in plugins load through the same `kmsr` entry-point
    group as third-party ones; set KMSR_PLUGINS=a,b to load only some, KMSR_DISABLE_PLUGINS=a,b
    to skip some. `--json` includes `api_version`, the version of the plugin contracts.

    `--check NAME` builds the backend as the pipeline does, runs it on tiny inputs on the CPU and
    reports what breaks the contract in kmsr_cli/hookspecs.py (docs/write-a-plugin.md):

        kmsr plugins --check tiny_y
        kmsr plugins --check my_plugin --json
    """
    host = get_host()
    if check:
        _run_checks(host, check, kind, json=json, verbose=verbose)
        return
    if kind is not None:
        raise typer.BadParameter("--kind only applies to --check", param_hint="'--kind'")
    doc = host.describe()
    if json:
        emit_json(doc)
        return
    _print_listing(host, doc)


def _print_listing(host, doc: dict) -> None:
    from rich.console import Console

    out = Console()
    t = Table(title="plugins", title_justify="left")
    for col in ("name", "module", "distribution", "status"):
        t.add_column(col)
    for p in doc["plugins"]:
        # Plugin-supplied text is shown verbatim (escaped), not read as rich markup.
        t.add_row(escape(p["name"]), escape(p["module"]), escape(f"{p['distribution'] or '-'} {p['version'] or ''}"),
                  "ok" if p["ok"] else f"[red]{escape(str(p['error']))}")
    out.print(t)
    for kind in ("estimators", "generators", "backbones", "degradations"):
        t = Table(title=kind, title_justify="left")
        for col in ("name", "plugin", "usable", "description"):
            t.add_column(col)
        for b in doc[kind]:
            t.add_row(escape(b["name"]), escape(b["plugin"]), "yes" if b["usable"] else f"[red]no: {escape(b['reason'])}",
                      escape(b["description"]))
        if not doc[kind]:
            t.add_row("[dim](none installed)", "", "", "")
        out.print(t)
    for e in host.errors:
        err.print(f"[yellow]warning:[/] {escape(e)}", highlight=False)


def _run_checks(host, names: list[str], kind: str | None, *, json: bool, verbose: bool) -> None:
    from .. import hookspecs
    from ..plugin_check import PluginContractError, check_all, targets

    pairs: list[tuple[str, str]] = []
    for name in names:
        pairs.extend(p for p in targets(host, name, kind) if p not in pairs)

    def say(k: str, n: str) -> None:
        if not json:
            err.print(escape(f"checking {k[:-1]} {n!r} ..."), highlight=False)

    reports = check_all(host, pairs, on_start=say)
    if json:
        emit_json({"api_version": hookspecs.API_VERSION, "passed": all(r.passed for r in reports),
                   "reports": [r.as_dict() for r in reports]})
    else:
        _print_reports(reports, verbose=verbose)
    if not all(r.passed for r in reports):
        raise PluginContractError(reports)
    for e in host.errors:
        err.print(f"[yellow]warning:[/] {escape(e)}", highlight=False)


_STYLE = {"error": "red", "warning": "yellow", "skipped": "yellow", "ok": "green"}


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _print_reports(reports, *, verbose: bool) -> None:
    from rich.console import Console

    out = Console()
    for r in reports:
        state = "passed" if r.passed and not r.skipped else ("skipped" if r.passed else "FAILED")
        passed = sum(f.level == "ok" for f in r.findings)
        out.print(escape(f"{r.kind[:-1]} {r.name} (plugin {r.plugin}): {state}, {_count(passed, 'check')} passed, "
                         f"{_count(len(r.errors), 'error')}, {_count(len(r.warnings), 'warning')}, {r.seconds:.1f} s"),
                  highlight=False)
        shown = [f for f in r.findings if verbose or f.level != "ok"]
        if not shown:
            continue
        t = Table()
        for col in ("level", "check", "finding"):
            t.add_column(col)
        for f in shown:
            t.add_row(f"[{_STYLE[f.level]}]{f.level}", escape(f.check), escape(f.message))
        out.print(t)
