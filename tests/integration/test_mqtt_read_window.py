"""The read window on a real Mosquitto: above brokers[].read_window_above messages a second the session's reader
hands over what came during a window as one batch (not one per message); below it, every message is handed over
as it comes; not a message is lost or reordered either way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.supervisor import run_stream
from services.local import Service
from telemetry.reading import Reading
from tests.integration.test_mqtt_ack import device, publish_settlement, session

N = 60
GAP_S = 0.005  # 200 messages a second, each far apart for a gateway that takes one in well under a ms


async def paced(port: int, window_s: float, above: int) -> tuple[list[float], list[int], int]:
    """N messages published GAP_S apart to a session with this window: (values in order, messages per batch, read
    windows)."""
    values: list[float] = []
    sizes: list[int] = []
    all_in = asyncio.Event()

    async def submit(readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        values.extend(r.value for r in readings)
        sizes.append(len(readings))
        if on_spooled:
            on_spooled()
        if len(values) >= N:
            all_in.set()

    s = session(port, submit, client_id=f"sitegw-window-{above}", read_window_s=window_s, read_window_above=above)
    task = asyncio.create_task(run_stream(s), name="mqtt-session")
    try:
        await asyncio.wait_for(s.connected.wait(), 10)
        with device(port) as dev:
            loop = asyncio.get_running_loop()
            for i in range(N):
                # from a worker thread, so the event loop is free to take each message as it comes
                await loop.run_in_executor(None, publish_settlement(dev, float(i), 1795224600_000 + i).wait_for_publish)
                await asyncio.sleep(GAP_S)
            await asyncio.wait_for(all_in.wait(), 10)
        return values, sizes, s.read_windows
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_above_the_rate_messages_come_in_windows_and_none_is_lost(mosquitto: Service) -> None:
    values, sizes, windows = await paced(mosquitto.port, window_s=0.05, above=20)
    assert values == [float(i) for i in range(N)]  # every message, in order
    assert windows > 0
    # the first tick (0.1 s) counts the rate, message by message; then each window holds several
    assert max(sizes) >= 4, sizes
    assert len(sizes) < N * 2 // 3, sizes


async def test_below_the_rate_every_message_is_read_as_it_comes(mosquitto: Service) -> None:
    values, sizes, windows = await paced(mosquitto.port, window_s=0.05, above=10_000)
    assert values == [float(i) for i in range(N)]
    assert windows == 0
    assert len(sizes) >= N * 2 // 3, sizes  # a message a batch (two now and then, as the machine's timing has it)
