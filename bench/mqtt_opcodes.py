"""Bytecodes the MQTT path runs per message, by function: an exact count, the same on every run of a tree.

`python -m bench.mqtt_opcodes [--messages 300] [--top 30]` builds `bench/mqtt_cost.py`'s gateway (the sweep's site,
200 tower cranes, ten fields a message), hands it one message per event-loop turn 1 ms apart as the reader's
callback does at site rates, and after a warm-up counts with Python's tracer (`sys.settrace`, opcode events) the
bytecodes each function of the tree runs for `--messages` messages, the pipeline task's held writes included.
It prints bytecodes per message in the tree's code and the top functions. The count moves by a few per cent
between runs (how many held writes fall in the window depends on the fsync's timer) where every timing on this
machine moves by a sixth: what a change to the per-message path takes away or adds, as work;
what that work costs in time is `bench/mqtt_cost.py`'s (about 1–3 ns a bytecode on this path, README,
Performance, twelfth session). No services; under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Any

from bench import common, mqtt_cost
from gateway import eventloop

WARM = 1000  # messages before the count: the decoder's topic cache, the evaluator's tables and the rings are made
ROOT = str(common.ROOT) + "/"
OWN = tuple(ROOT + d + "/" for d in ("drivers", "gateway", "alerting", "telemetry"))


def count(messages: int) -> collections.Counter[tuple[str, str]]:
    """Bytecodes per (file, function) of the tree for `messages` messages of the paced path."""
    by_fn: collections.Counter[tuple[str, str]] = collections.Counter()

    def tracer(frame: FrameType, event: str, _arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        if event == "opcode":
            code = frame.f_code
            by_fn[(code.co_filename, code.co_qualname)] += 1
        return tracer

    async def drive(one: Callable[[int], Awaitable[None]], n: int, gap_s: float, hot: bool) -> float:
        del hot  # paced only: a message finds the loop woken from its sleep, as at site rates
        for k in range(n - messages):
            await one(k)
            await asyncio.sleep(gap_s)
        # the thread's tracer: the pipeline task's turns between the messages (its held writes) are counted too
        sys.settrace(tracer)
        try:
            for k in range(n - messages, n):
                await one(k)
                await asyncio.sleep(gap_s)
        finally:
            sys.settrace(None)
        return 0.0

    # the harness's `_drive` swapped for one that counts (the same gateway, messages and hand-over)
    before = mqtt_cost._drive
    mqtt_cost._drive = drive
    try:
        eventloop.run(lambda: mqtt_cost.gateway_path(WARM + messages, 0.001, False), "asyncio")
    finally:
        mqtt_cost._drive = before
    return collections.Counter({k: v for k, v in by_fn.items() if k[0].startswith(OWN)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.mqtt_opcodes", description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args(argv)
    got = count(a.messages)
    total = sum(got.values())
    print(f"bytecodes per message in the tree's code: {total / a.messages:.0f} ({a.messages} messages)")
    for (path, fn), n in got.most_common(a.top):
        print(f"{n / a.messages:8.1f}  {Path(path).relative_to(common.ROOT)}:{fn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
