"""The progress protocol: one event type, sinks combined, the old keyword callbacks adapted."""

from __future__ import annotations

from kmsr_cli.bench import bench_progress
from kmsr_cli.progress import ProgressEvent, emit, fan_out, message_logger, on_stage


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


def test_message_logger_sends_each_line_as_an_event_and_to_the_old_say():
    events, lines = [], []
    say = message_logger("adapt.log", events.append, lines.append)
    say("[1/5] blur kernels")
    say("  12 kernels")
    assert events == [ProgressEvent("adapt.log", message="[1/5] blur kernels"), ProgressEvent("adapt.log", message="  12 kernels")]
    assert lines == ["[1/5] blur kernels", "  12 kernels"]
    message_logger("demo.log", None, None)("nothing listens")  # neither: nothing happens
