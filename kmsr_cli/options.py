"""Options shared by every long-running command, so they read the same everywhere."""

from __future__ import annotations

import json
from typing import Annotated

import typer

DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where to compute: auto (CUDA when torch sees a GPU and KMSR_FORCE_CPU is unset), cpu, cuda or cuda:N.",
        envvar="KMSR_DEVICE",
    ),
]
SeedOpt = Annotated[
    int,
    typer.Option("--seed", help="Random seed; the same seed and inputs give the same outputs.", min=0),
]
AmpOpt = Annotated[
    bool,
    typer.Option("--amp", help="Mixed precision in training: bfloat16 on the CPU, float16 on CUDA."),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON document on stdout (and no progress bars)."),
]


def parse_key_values(items: list[str] | None, flag: str = "--option") -> dict:
    """``KEY=VALUE`` options (VALUE read as JSON when it parses, else kept as text) to a dict."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"expected KEY=VALUE, found {item!r}", param_hint=flag)
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
