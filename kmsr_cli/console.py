"""Where the CLI writes: data to stdout, everything else (logs, progress, warnings) to stderr."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

err = Console(stderr=True)
log = logging.getLogger("kmsr")


def setup_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO
    if not log.handlers:
        handler = RichHandler(console=err, show_time=False, show_path=debug, rich_tracebacks=debug)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def progress_enabled(json_mode: bool = False) -> bool:
    """Progress bars only for a person watching: stderr is a terminal and no --json."""
    return (not json_mode) and sys.stderr.isatty()


def make_progress(*, json_mode: bool = False, extra_columns=()) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        disable=not progress_enabled(json_mode),
        transient=False,
    )


def emit_json(doc: Any) -> None:
    """One machine-readable document on stdout."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def printable(text: Any) -> str:
    """``text`` safe to show on a terminal: control and format characters (ESC, CR, BEL, DEL, C1,
    bidi overrides, line separators) written as escapes such as ``\\x1b`` or ``\\u202e``.

    For strings that come from files (attributes, provenance, names): printed raw, an escape
    sequence in one would drive the user's terminal. JSON output escapes them on its own.
    """
    import unicodedata

    out = []
    for ch in str(text):
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)
