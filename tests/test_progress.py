"""The progress protocol: one event type, sinks combined, the old keyword callbacks adapted."""

from __future__ import annotations

from kmsr_cli.bench import bench_progress
from kmsr_cli.progress import ProgressEvent, emit, fan_out, on_stage


def test_emit_fan_out_and_stage_filter():
    seen, models = [], []
    sink = fan_out(seen.append, None, on_stage("bench.model", models.append))
    emit(sink, "bench.model", done=1, total=2)
    emit(sink, "bench.set", data={"scale": 2})
    assert seen == [ProgressEvent("bench.model", 1, 2), ProgressEvent("bench.set", data={"scale": 2})]
    assert models == [ProgressEvent("bench.model", 1, 2)]
    assert fan_out(None, None) is None
    emit(None, "anything")  # no sink: nothing happens


def test_the_old_bench_callbacks_get_the_same_events():
    steps, sets = [], []
    sink = bench_progress(None, lambda: steps.append(1), lambda s, group, summary: sets.append((s, group, summary)))
    emit(sink, "bench.model", done=1, total=1)
    emit(sink, "bench.set", data={"scale": 2, "set": "bicubic", "summary": []})
    assert steps == [1] and sets == [(2, "bicubic", [])]
