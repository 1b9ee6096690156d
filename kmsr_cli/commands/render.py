"""What the commands print: tables and documents built from the data the library returns.

The library (``kmsr_cli/*.py``) returns results as plain data; only the command modules import
this one to turn them into rich tables, Markdown or CSV.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable

from ..bench_ops import _number
from ..progress import ProgressEvent


def _columns(summary: list[dict]) -> list[tuple[int, str]]:
    cols: list[tuple[int, str]] = []
    for r in summary:
        key = (r["scale"], r["kernel"])
        if key not in cols:
            cols.append(key)
    return sorted(cols, key=lambda c: (c[0], cols.index(c)))


def table_cells(summary: list[dict]) -> tuple[list[str], list[str], dict, dict]:
    """(column titles, model names, {(model, col): row}, {col: (best psnr, best ssim)})."""
    cols = _columns(summary)
    models: list[str] = []
    cells: dict = {}
    for r in summary:
        if r["model"] not in models:
            models.append(r["model"])
        cells[(r["model"], (r["scale"], r["kernel"]))] = r
    best = {}
    for c in cols:
        rows = [cells[(m, c)] for m in models if (m, c) in cells]
        best[c] = (max(r["psnr"] for r in rows), max(r["ssim"] for r in rows))
    titles = [f"{k} x{s}" for s, k in cols]
    return titles, models, cells, best


def _fmt_psnr(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.2f}"


def _table_rows(summary: list[dict], mark: Callable[[str, bool], str]):
    """Column titles and (model, cells) rows; ``mark(text, is_best)`` formats each number."""
    titles, models, cells, best = table_cells(summary)
    cols = _columns(summary)
    rows = []
    for m in models:
        row = []
        for c in cols:
            r = cells.get((m, c))
            if r is None:
                row.append("")
                continue
            p = mark(_fmt_psnr(r["psnr"]), r["psnr"] == best[c][0])
            q = mark(f"{r['ssim']:.4f}", r["ssim"] == best[c][1])
            row.append(f"{p} / {q}")
        rows.append((m, row))
    return titles, rows


def _mean_over(n_images: int | None, unit: str) -> str:
    """'mean over 5 images'; None (columns of different sizes): 'mean over each column's images'."""
    if n_images is None:
        return f"mean over each column's {unit}s"
    return f"mean over {n_images} {unit}{'s' if n_images != 1 else ''}"


def render_markdown(summary: list[dict], n_images: int | None, *, unit: str = "image") -> str:
    titles, rows = _table_rows(summary, lambda t, is_best: f"**{t}**" if is_best else t)
    lines = ["| model | " + " | ".join(titles) + " |", "|---|" + "---:|" * len(titles)]
    lines += [f"| {m} | " + " | ".join(row) + " |" for m, row in rows]
    lines.append("")
    lines.append(f"Y-PSNR (dB) / SSIM, {_mean_over(n_images, unit)}, "
                 "scale pixels shaved from each border; best per column in bold.")
    return "\n".join(lines) + "\n"


def render_csv(results: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["image", "model", "kernel", "scale", "psnr", "ssim"], lineterminator="\n")
    w.writeheader()
    for r in results:
        w.writerow({**r, "psnr": repr(float(r["psnr"])), "ssim": repr(float(r["ssim"]))})
    return buf.getvalue()


def rich_table(summary: list[dict], n_images: int | None, *, unit: str = "image"):
    from rich.markup import escape
    from rich.table import Table

    titles, rows = _table_rows(summary, lambda t, is_best: f"[bold green]{t}*[/]" if is_best else f"{t} ")
    table = Table(title=f"Y-PSNR (dB) / SSIM, {_mean_over(n_images, unit)}",
                  caption="* best in its column; scale pixels shaved from each border")
    table.add_column("model", style="bold")
    for t in titles:
        table.add_column(t, justify="right")
    for m, row in rows:
        table.add_row(escape(m), *row)
    return table


def _fmt(x) -> str:
    if not _number(x):
        return ""
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def ops_table(report: dict):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Speed: ratio = baseline time / our time, measured in the same run" +
                  (" (--quick: noisy)" if report["quick"] else ""),
                  caption=report["machine"])
    for col, justify in (("benchmark", "left"), ("comparison", "left"), ("baseline", "right"), ("ours", "right"),
                         ("unit", "left"), ("ratio", "right")):
        table.add_column(col, justify=justify)
    for b in report["benchmarks"]:
        if b.get("error") and not b["ratios"]:
            table.add_row(escape(b["name"]), f"[red]{escape(b['error'])}[/]", "", "", "", "")
        for r in b["ratios"]:
            table.add_row(escape(b["name"]), escape(r["name"]), _fmt(r["baseline"]), _fmt(r["ours"]), escape(r["unit"]),
                          f"{r['ratio']:.2f}")
    return table


def print_log_event(event: ProgressEvent) -> None:
    """A stage-by-stage entry point's log line (``adapt.log``, ``demo.log``) on stderr: stage
    headings (``[1/5] ...``) bold, the rest dim, ``*.warning`` events as warnings."""
    from rich.markup import escape

    from ..console import err

    msg = event.message or ""
    if event.stage.endswith(".warning"):
        err.print(f"[yellow]warning:[/] {escape(msg)}", highlight=False)
    else:
        err.print(f"[bold cyan]{escape(msg)}[/]" if msg.startswith("[") else f"[dim]{escape(msg)}[/]", highlight=False)
