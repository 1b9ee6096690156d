"""``kmsr export``: a model as ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..console import emit_json, err
from ..options import JsonOpt


def export(
    model: Annotated[str, typer.Argument(help="A model as `kmsr sr --model` takes it: MODEL.safetensors, NAME:WEIGHTS, or a shipped name (with --scale).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The ONNX file to write.")],
    scale: Annotated[int | None, typer.Option("--scale", help="Scale, for a shipped name or weights that do not record it.", min=1, max=16)] = None,
    json: JsonOpt = False,
) -> None:
    """Export a model to ONNX (opset 17; batch, height and width free) for ONNX Runtime, TensorRT, OpenVINO...

    How to feed it (upsampled or LR input, RGB or Y, scale, size multiple, receptive field) is
    stored in the graph's metadata under `kmsr.*`. The graph is checked against PyTorch with ONNX
    Runtime on two input sizes before it is written. Needs `pip install 'kmsr[fast]'`.

    Examples:

        kmsr export kmsr --scale 4 -o kmsr_x4.onnx
        kmsr export runs/carn-x4/best.safetensors -o carn_x4.onnx
        kmsr export vdsr:vdsr_model_epoch_50_state_dict.npz --scale 2 -o vdsr.onnx
    """
    from ..export import export_model

    if out.suffix.lower() != ".onnx":
        raise typer.BadParameter(f"expected a .onnx path, found {out}", param_hint="-o")
    res = export_model(model, out, scale=scale)
    if json:
        emit_json(res)
        return
    md = res["metadata"]
    err.print(f"x{md['kmsr.scale']}, input {md['kmsr.input']}, channels {md['kmsr.channels']}; "
              f"ONNX Runtime matches PyTorch to {res['max_abs_diff']:.1e}", highlight=False)
    typer.echo(res["path"])
