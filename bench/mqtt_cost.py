"""The MQTT path's CPU per message in process, paced as a site sends (a wake per message) and hot (back to back).

`python -m bench.mqtt_cost [--messages 5000] [--gap-ms 1] [--repeat 3] [--loop auto]` builds the MQTT sweep's
gateway (200 tower cranes, the ten-field JSON message of `bench/publisher.py`) without a broker and hands its session
one message per event-loop turn, as the reader's callback does at site rates (`MqttSession.handle_now`: decode,
liveness, quality, alarms, then the spool's held write and fsync in the pipeline's task). Two ways, alternated per
repeat:

- `paced`: the loop sleeps `--gap-ms` between messages (1 ms: 1 000 msg/s), so each message finds the CPU as a
  site's does: woken from idle;
- `hot`: the same gap spent spinning instead, so each message finds the caches as the last one left them.

Beside it, the same two ways for a bare baseline: `orjson.loads` of the message and its ten values as ten tuples.
It prints CPU-µs per message (the gap's own sleeping or spinning left out: paced counts the loop's wake, hot does
not) and each way's ratio paced / hot. No services; about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

from bench import common, publisher
from drivers.mqtt.session import MqttSession, _with_acks
from gateway import eventloop
from gateway.app import Gateway
from gateway.cli import GC_YOUNG
from gateway.config import load_config
from services import local

DEVICES = 200


async def _drive(one: Callable[[int], Awaitable[None]], n: int, gap_s: float, hot: bool) -> float:
    """CPU-µs per call of `one` over n calls, a gap between calls (slept, or spun and left out)."""
    gc.collect()
    spun = 0
    t0 = time.process_time_ns()
    for k in range(n):
        await one(k)
        if hot:
            s0 = time.thread_time_ns()
            end = time.perf_counter() + gap_s
            while time.perf_counter() < end:
                pass
            spun += time.thread_time_ns() - s0
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(gap_s)
    return (time.process_time_ns() - t0 - spun) / n / 1000


def _messages(n: int) -> list[tuple[str, bytes]]:
    topics = [f"bench/crane/{publisher.device_id(i)}/data" for i in range(DEVICES)]
    ms = time.time_ns() // 1_000_000
    return [(topics[k % DEVICES], publisher.payload(ms + k, k)) for k in range(n)]


async def gateway_path(n: int, gap_s: float, hot: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        site = common.write_site(wd, local.free_port(), local.free_port(), 0, common.crane_devices(DEVICES))
        cwd, threshold = os.getcwd(), gc.get_threshold()
        os.chdir(wd)  # the spool and the state database are relative to the site file's directory
        try:
            gw = Gateway(load_config(site))
            gw.spool.open()
            # the collector as `sitegw run` sets it (gateway/cli.py): what was built at start frozen, gen 0 at 10 000
            gc.freeze()
            gc.set_threshold(GC_YOUNG, *threshold[1:])
            session: MqttSession = gw.sessions[0]
            # what a connection sets (drivers/mqtt/session.py `stream`): its acknowledger; there is no broker here
            session._ack = ack = lambda mid, qos: None
            task = asyncio.create_task(gw.pipeline.run(), name="pipeline")
            await asyncio.sleep(0)
            msgs = _messages(n)

            async def one(k: int) -> None:
                batch = [(*msgs[k], k, 1, False)]
                if not session.handle_now(batch):  # the pipeline's task in its fsync: the session's task hands it
                    await session.handle_batch(_with_acks(batch, ack), True)  # over (queued), as on a connection

            try:
                return await _drive(one, n, gap_s, hot)
            finally:
                await gw.pipeline.drained()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                gw.spool.close()
                await gw.alarms.aclose()
        finally:
            gc.unfreeze()
            gc.set_threshold(*threshold)
            os.chdir(cwd)


async def bare(n: int, gap_s: float, hot: bool) -> float:
    msgs = _messages(n)
    out: list[list[tuple[str, str, float, int]]] = []

    async def one(k: int) -> None:
        topic, body = msgs[k]
        doc = orjson.loads(body)
        ts = doc["ts"] * 1_000_000
        out.append([(topic, q, float(v), ts) for q, v in doc["d"].items()])

    return await _drive(one, n, gap_s, hot)


async def measure(n: int, gap_s: float, repeat: int) -> dict[tuple[str, str], list[float]]:
    got: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeat):
        for way, hot in (("paced", False), ("hot", True)):
            got.setdefault(("sitegw", way), []).append(await gateway_path(n, gap_s, hot))
            got.setdefault(("bare", way), []).append(await bare(n, gap_s, hot))
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.mqtt_cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--gap-ms", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--loop", choices=eventloop.CHOICES, default="auto", help="the event loop (as sitegw run --loop)")
    a = ap.parse_args(argv)
    got = eventloop.run(lambda: measure(a.messages, a.gap_ms / 1000, a.repeat), a.loop)
    print(f"CPU-µs per message (median of {a.repeat}), {a.gap_ms:g} ms between messages, loop {a.loop}:")
    for subject in ("sitegw", "bare"):
        paced, hot = (statistics.median(got[(subject, w)]) for w in ("paced", "hot"))
        every = ", ".join(f"{w} {[round(x, 1) for x in got[(subject, w)]]}" for w in ("paced", "hot"))
        print(f"  {subject:7s} paced {paced:7.1f}  hot {hot:7.1f}  paced / hot {paced / hot:.2f}   ({every})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
