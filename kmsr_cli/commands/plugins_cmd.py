"""``kmsr plugins``: what is installed, who provides it, and whether it can run here."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from ..console import emit_json, err
from ..options import JsonOpt
from ..plugin_host import get_host


def plugins(json: JsonOpt = False) -> None:
    """List plugins and the estimators, generators, backbones and degradations they register.

    Each backend shows whether it is usable on this machine and, if not, why (for example
    CuPy missing or no CUDA device). Built-in plugins load through the same `kmsr` entry-point
    group as third-party ones; set KMSR_PLUGINS=a,b to load only some, KMSR_DISABLE_PLUGINS=a,b
    to skip some.
    """
    host = get_host()
    doc = host.describe()
    if json:
        emit_json(doc)
        return
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
