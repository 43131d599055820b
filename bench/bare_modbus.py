"""A bare pymodbus poller in a process of its own: the per-reading CPU baseline of the Modbus sweep.

`python -m bench.bare_modbus --ports P1,P2,... --interval 0.1 --count-file F` keeps one `AsyncModbusTcpClient` per
port and reads holding registers 0..19 of unit 1 every `--interval` seconds on a fixed schedule (as a gateway
would), turning them into ten float32 values with struct, and nothing else: no timestamps, no storage. F holds 0
once it has started its clients, and the number of values read so far after each SIGUSR1.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

VALUES = 10
FLOATS = struct.Struct(f">{VALUES}f")


async def poll(port: int, interval: float, counter: list[int]) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0)
    await client.connect()
    loop = asyncio.get_running_loop()
    due = loop.time()
    try:
        while True:
            rr = await client.read_holding_registers(0, count=2 * VALUES, device_id=1)
            if not rr.isError():
                FLOATS.unpack(struct.pack(f">{2 * VALUES}H", *rr.registers))
                counter[0] += VALUES
            due += interval
            await asyncio.sleep(max(0.0, due - loop.time()))
    finally:
        client.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", required=True, help="comma-separated TCP ports of the devices (unit 1 each)")
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--count-file", type=Path, required=True)
    a = ap.parse_args()
    counter = [0]
    f: Path = a.count_file

    def report() -> None:  # whole or not at all: the reader waits for the file to exist
        tmp = f.with_suffix(".tmp")
        tmp.write_text(str(counter[0]))
        tmp.replace(f)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, report)
    tasks = [asyncio.create_task(poll(int(p), a.interval, counter)) for p in a.ports.split(",")]
    report()
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
