"""Session fixtures: real Mosquitto, InfluxDB 1.x and VictoriaMetrics on free loopback ports; task-leak guard."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import local as services
from services.demo_region import Region
from services.regional import NatsCluster, Postgres, nats_cluster, postgres


def _running(svc: services.Service) -> Iterator[services.Service]:
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Service]:
    yield from _running(services.mosquitto(tmp_path_factory.mktemp("mosquitto")))


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Service]:
    yield from _running(services.influxdb(tmp_path_factory.mktemp("influxdb")))


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Service]:
    yield from _running(services.victoria_metrics(tmp_path_factory.mktemp("victoria")))


@pytest.fixture
def own_influx(tmp_path: Path) -> Iterator[services.Service]:
    """An InfluxDB of the test's own, for tests that kill it."""
    yield from _running(services.influxdb(tmp_path / "own-influx"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> None:  # type: ignore[misc]
    """Fail a test that leaves asyncio tasks running (pymodbus's conftest does the same)."""
    before = set(asyncio.all_tasks())
    yield

    def running() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]

    # a task finishing its last step (an HTTP connection's cycle after its server stopped: seen once in CI under
    # load) is not a leak: up to 1 s to end by itself; one still running then is
    for i in range(20):
        await asyncio.sleep(0 if i == 0 else 0.05)
        if not running():
            break
    leaked = running()
    for t in leaked:
        t.cancel()
    if leaked:
        await asyncio.gather(*leaked, return_exceptions=True)
    assert not leaked, f"leaked tasks: {[t.get_name() for t in leaked]}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A 3-node NATS JetStream cluster of the test's own (the regional hub's broker)."""
    c = nats_cluster(tmp_path / "nats")
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def pg() -> Iterator[Postgres]:
    """A PostgreSQL cluster of the test's own, started (the regional hub's store)."""
    p = postgres()
    try:
        p.start()
        yield p
    finally:
        p.stop()
        p.remove()


@pytest.fixture
def region(tmp_path: Path) -> Iterator[Region]:
    """The demo region (services/demo_region.py), started: three site gateways with simulators, a 3-node NATS
    cluster, PostgreSQL and two hub replicas; sites show offline at the hub 6 s after their last status."""
    r = Region(tmp_path / "region", offline_after_s=6.0)
    try:
        r.start()
        yield r
    finally:
        r.stop()
