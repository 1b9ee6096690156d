"""``kmsr bench ops``: run the speed benchmarks of ``benchmarks/`` and gather the ratios they report.

Each benchmark is a script run as ``python benchmarks/NAME.py --json`` in its own process. Its
JSON document gives ratios (baseline time / our time, measured in the same run) in one of two
ways, the first preferred for new benchmarks:

- ``"ratios": [{"name", "baseline", "ours", "unit", "ratio"}, ...]``;
- flat keys: ``ours_<unit>`` with ``<baseline>_<unit>`` and ``speedup_vs_<baseline>``, or with
  ``baseline_<unit>`` and ``speedup`` (``blur.py``: ``ours_ms``, ``grouped_conv_ms``,
  ``speedup_vs_grouped_conv``; ``estimate_speed.py``: ``ours_s_per_patch``,
  ``baseline_s_per_patch``, ``speedup``).

Benchmarks written before this convention are read through :data:`KNOWN_KEYS`.

``--quick`` passes ``--quick`` to a script that defines it, else ``--repeats 3`` where it has
``--repeats``, plus the smaller case listed in :data:`QUICK_ARGS`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from kmsr_ops.errors import KmsrError

# The speed benchmarks, in the order they run. Quality benchmarks (estimate_levin.py,
# gan_quality.py) measure accuracy, not speed, and are left out.
SPEED_BENCHMARKS: dict[str, str] = {
    "blur": "batched per-sample blur",
    "estimate_speed": "kernel estimation, seconds per patch",
    "train_step": "one training step",
    "infer": "tiled SR inference",
}
# Smaller cases for --quick, for scripts without --quick/--repeats; each flag is passed only
# when the script defines it.
QUICK_ARGS: dict[str, list[str]] = {
    "estimate_speed": ["--patches", "2", "--baseline-patches", "1"],
    "infer": ["--no-candidates", "--skip-4096"],
    "train_step": ["--steps", "10", "--warmup", "1"],
}
# Documents without the keys above: (comparison, baseline key, ours key, unit, ratio key). A
# ratio key of None means baseline / ours (times); throughputs name the benchmark's own ratio.
KNOWN_KEYS: dict[str, list[tuple[str, str, str, str, str | None]]] = {
    "infer": [("fast path vs eager", "eager_mpix_s", "fast_mpix_s", "Mpix/s (higher is better)", "speedup")],
    "train_step": [("step with degradation vs premade batch", "step_ms_premade", "step_ms_with_degradation", "ms", None)],
}
QUICK_REPEATS = "3"


def find_benchmarks_dir(explicit: Path | None = None) -> Path:
    """``benchmarks/`` of the source checkout kmsr is installed from (or ``explicit``)."""
    if explicit is not None:
        if not explicit.is_dir():
            raise KmsrError(f"--dir {explicit}: no such folder (expected the benchmarks/ folder of a kmsr checkout)")
        return explicit
    root = Path(__file__).resolve().parent.parent / "benchmarks"
    if not root.is_dir():
        raise KmsrError(
            f"no benchmarks/ folder next to kmsr's source (looked for {root}): the speed benchmarks ship with the "
            "source tree, not with an installed wheel",
            hint="git clone the kmsr repository and `pip install -e .` there, or pass --dir PATH/benchmarks",
        )
    return root


def select(root: Path, only: Iterable[str] | None) -> list[str]:
    """The benchmark names to run: ``only`` (checked), else every speed benchmark present in ``root``."""
    from .bench import split_list

    names = split_list(only)
    if names:
        for n in names:
            n_file = n[:-3] if n.endswith(".py") else n
            if n_file not in SPEED_BENCHMARKS:
                raise KmsrError(f"--only: unknown benchmark {n!r}; speed benchmarks: {', '.join(SPEED_BENCHMARKS)}")
            if not (root / f"{n_file}.py").is_file():
                raise KmsrError(f"--only: {root / (n_file + '.py')} does not exist in this checkout",
                               hint=f"present: {', '.join(present(root)) or 'none'}")
        return [n[:-3] if n.endswith(".py") else n for n in dict.fromkeys(names)]
    found = present(root)
    if not found:
        raise KmsrError(f"{root}: none of the speed benchmarks ({', '.join(f'{n}.py' for n in SPEED_BENCHMARKS)}) is there")
    return found


def present(root: Path) -> list[str]:
    return [n for n in SPEED_BENCHMARKS if (root / f"{n}.py").is_file()]


def script_args(script: Path, name: str, quick: bool) -> list[str]:
    """``--json`` plus the quick flags the script understands (read from its argparse calls)."""
    args = ["--json"]
    if not quick:
        return args
    source = script.read_text(encoding="utf-8", errors="replace")

    def defines(flag: str) -> bool:
        return f'"{flag}"' in source or f"'{flag}'" in source

    if defines("--quick"):
        args.append("--quick")
    elif defines("--repeats"):
        args += ["--repeats", QUICK_REPEATS]
    extra = QUICK_ARGS.get(name, [])
    i = 0
    while i < len(extra):
        flag = extra[i]
        value = extra[i + 1] if i + 1 < len(extra) and not extra[i + 1].startswith("--") else None
        if defines(flag) and flag not in args:
            args += [flag] + ([value] if value is not None else [])
        i += 2 if value is not None else 1
    return args


def parse_document(stdout: str) -> dict:
    """The JSON document a benchmark printed (text before it, such as warnings, is skipped)."""
    text = stdout.strip()
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON document on stdout")
    doc, _ = json.JSONDecoder().raw_decode(text[start:])
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, found {type(doc).__name__}")
    return doc


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def extract_ratios(doc: dict, benchmark: str | None = None) -> list[dict]:
    """``[{"name", "baseline", "ours", "unit", "ratio"}]`` from a benchmark's document (see the module docstring)."""
    if benchmark in KNOWN_KEYS and not isinstance(doc.get("ratios"), list):
        rows = []
        for name, base_key, ours_key, unit, ratio_key in KNOWN_KEYS[benchmark]:
            b, o = doc.get(base_key), doc.get(ours_key)
            if ratio_key is not None and _number(doc.get(ratio_key)):
                ratio = float(doc[ratio_key])
            elif ratio_key is None and _number(b) and _number(o) and o > 0:
                ratio = float(b) / float(o)
            else:
                continue
            rows.append({"name": name, "baseline": b if _number(b) else None, "ours": o if _number(o) else None,
                         "unit": unit, "ratio": ratio})
        if rows:
            return rows
    if isinstance(doc.get("ratios"), list):
        rows = []
        for r in doc["ratios"]:
            if isinstance(r, dict) and _number(r.get("ratio")):
                rows.append({"name": str(r.get("name", "")), "baseline": r.get("baseline"), "ours": r.get("ours"),
                             "unit": str(r.get("unit", "")), "ratio": float(r["ratio"])})
        return rows
    ours = sorted((k for k in doc if k.startswith("ours_") and _number(doc[k])), key=len)
    rows = []
    for key, value in doc.items():
        if not _number(value):
            continue
        if key == "speedup":
            base = "baseline"
        elif key.startswith("speedup_vs_"):
            base = key[len("speedup_vs_"):]
        else:
            continue
        row = {"name": f"vs {base.replace('_', ' ')}", "baseline": None, "ours": None, "unit": "", "ratio": float(value)}
        for ok in ours:  # the shortest matching unit: ours_s_per_patch before ours_s_per_patch_single_process
            unit = ok[len("ours_"):]
            if _number(doc.get(f"{base}_{unit}")):
                row.update(baseline=doc[f"{base}_{unit}"], ours=doc[ok], unit=unit.replace("_", " "))
                break
        rows.append(row)
    return rows


def run_one(root: Path, name: str, *, quick: bool, timeout: float) -> dict:
    script = root / f"{name}.py"
    args = script_args(script, name, quick)
    entry: dict = {"name": name, "script": str(script), "args": args}
    t0 = time.perf_counter()
    try:
        # stderr is not captured: the benchmark's own progress shows as it runs.
        proc = subprocess.run([sys.executable, str(script), *args], cwd=root.parent, stdout=subprocess.PIPE,
                              text=True, encoding="utf-8", timeout=timeout, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        entry.update(seconds=round(time.perf_counter() - t0, 1), error=f"timed out after {timeout:g} s", ratios=[])
        return entry
    entry["seconds"] = round(time.perf_counter() - t0, 1)
    if proc.returncode != 0:
        entry.update(error=f"exit code {proc.returncode}", ratios=[])
        return entry
    try:
        doc = parse_document(proc.stdout)
    except ValueError as exc:
        entry.update(error=f"unreadable output: {exc}", ratios=[])
        return entry
    entry["case"] = doc.get("case")
    entry["ratios"] = extract_ratios(doc, name)
    if not entry["ratios"]:
        entry["error"] = "its JSON reports no ratio (see kmsr_cli/bench_ops.py for the keys expected)"
    entry["document"] = doc
    return entry


def run_ops(root: Path, names: list[str], *, quick: bool = False, timeout: float = 3600,
            on_done: Callable[[str, dict], None] | None = None) -> dict:
    """Run ``names`` one after the other (never in parallel: they time themselves)."""
    benchmarks = []
    for name in names:
        entry = run_one(root, name, quick=quick, timeout=timeout)
        benchmarks.append(entry)
        if on_done:
            on_done(name, entry)
    ratios = [{"benchmark": b["name"], **r} for b in benchmarks for r in b["ratios"]]
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "quick": quick,
        "ratios": ratios,
        "benchmarks": benchmarks,
        "not_present": [n for n in SPEED_BENCHMARKS if not (root / f"{n}.py").is_file()],
    }
