"""The one progress protocol of the pipeline: entry points take ``progress: ProgressSink | None``.

A long entry point (``run_quality``, ``run_real``, ``run_training``, ``train_gan``, ...) calls
``progress(ProgressEvent(...))`` as it goes and never prints; the command decides what to show
(a bar, a line per set, nothing under ``--json``). ``stage`` names what the event is about
(``"bench.model"``, ``"bench.set"``, ``"train.step"``, ``"train.epoch"``, ``"gan.iteration"``,
``"adapt.log"``, ...); ``done``/``total`` count it where that makes sense; ``message`` is a finished sentence for a
log; ``data`` carries the stage's figures (a summary, a step's loss) for a sink that wants them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long run: what (``stage``), how far (``done`` of ``total``), and its figures."""

    stage: str
    done: int | None = None
    total: int | None = None
    message: str | None = None
    data: Any = None


ProgressSink = Callable[[ProgressEvent], None]


def emit(sink: ProgressSink | None, stage: str, *, done: int | None = None, total: int | None = None,
         message: str | None = None, data: Any = None) -> None:
    """Send one event to ``sink``; no sink, no cost beyond the call."""
    if sink is not None:
        sink(ProgressEvent(stage, done, total, message, data))


def fan_out(*sinks: ProgressSink | None) -> ProgressSink | None:
    """One sink calling each given sink in turn (None when none is given)."""
    live = [s for s in sinks if s is not None]
    if not live:
        return None
    if len(live) == 1:
        return live[0]

    def sink(event: ProgressEvent) -> None:
        for s in live:
            s(event)

    return sink


def on_stage(stage: str, callback: Callable[[ProgressEvent], None] | None) -> ProgressSink | None:
    """A sink that passes only the events of ``stage`` to ``callback`` (adapting an old keyword)."""
    if callback is None:
        return None

    def sink(event: ProgressEvent) -> None:
        if event.stage == stage:
            callback(event)

    return sink


def message_logger(stage: str, sink: ProgressSink | None, legacy: Callable[[str], None] | None = None) -> Callable[[str], None]:
    """A ``say(message)`` for a stage-by-stage entry point (``adapt``, ``demo``): each line goes to
    ``sink`` as a ``ProgressEvent(stage, message=line)`` and to the older ``say=`` callback."""

    def say(message: str) -> None:
        emit(sink, stage, message=message)
        if legacy is not None:
            legacy(message)

    return say
