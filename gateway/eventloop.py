"""The event loop `sitegw run` and `sitegw once` run on: uvloop by default, Python's own asyncio loop on request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from importlib import metadata
from typing import Any, TypeVar

from gateway.config import ConfigError

log = logging.getLogger("sitegw")

T = TypeVar("T")
Factory = Callable[[], asyncio.AbstractEventLoop]

# auto: uvloop where it is installed (a dependency on every platform it supports), else asyncio's. uvloop took 17 %
# less of the gateway's CPU a second at 1 000 MQTT messages a second (six pairs in turns) and 22 % less per Modbus
# reading at 200 devices (README, Performance). Its timers run before it reads the sockets (asyncio's after): a
# deadline that would judge an answer must look at the socket once more (drivers/modbus/mbap.py)
CHOICES = ("auto", "uvloop", "asyncio")


def loop_factory(choice: str) -> tuple[str, Factory | None]:
    """(the loop's name and version, the factory asyncio.Runner takes; None for asyncio's own loop)."""
    if choice not in CHOICES:
        raise ConfigError(f"--loop {choice!r}: choose one of {', '.join(CHOICES)}")
    if choice == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError as err:
        if choice == "uvloop":
            why = f"--loop uvloop: uvloop cannot be imported ({err}); install it or use --loop asyncio"
            raise ConfigError(why) from err
        return "asyncio (uvloop is not installed)", None
    return f"uvloop {metadata.version('uvloop')}", uvloop.new_event_loop


def run(main: Callable[[], Coroutine[Any, Any, T]], choice: str = "auto") -> T:
    """Run `main()` to its end on the loop `choice` names; the coroutine is made only once that loop is there."""
    name, factory = loop_factory(choice)
    log.info("event loop: %s", name)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())
