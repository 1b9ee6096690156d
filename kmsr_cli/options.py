"""Options shared by every long-running command, so they read the same everywhere."""

from __future__ import annotations

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
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON document on stdout (and no progress bars)."),
]
