"""The composition root: builds drivers, supervisor, pipeline, spool and writer from a SiteConfig and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType

from alerting.db import Clock, wall_clock
from alerting.engine import AlarmEngine
from alerting.notifiers import MqttTarget
from drivers.modbus.driver import ModbusDevice
from drivers.modbus.link import ModbusLink
from drivers.modbus.plan import plan_device
from drivers.mqtt.payloads import PayloadDecoder
from drivers.mqtt.session import BrokerParams, MqttDeviceRoute, MqttSession
from drivers.profile import ModbusProfile, MqttProfile
from drivers.timefmt import TimestampSpec, parse_zone
from gateway.config import ConfigError, InfluxV1Sink, SiteConfig, TlsVerify
from gateway.history import History
from gateway.influx import InfluxV1Writer, InfluxV2Writer, SeriesTags, series_tags
from gateway.metrics import Metrics
from gateway.model import Reading
from gateway.pipeline import Pipeline
from gateway.selfmon import run_selfmon
from gateway.spool import Spool
from gateway.supervisor import LineOwner, Liveness, watch_liveness
from gateway.surveys import SurveyImporter
from gateway.writer import SpoolDrainer

log = logging.getLogger("sitegw")


def _env(name: str | None, what: str) -> str | None:
    if name is None:
        return None
    v = os.environ.get(name)
    if v is None:
        raise ConfigError(f"{what}: environment variable {name} is not set")
    return v


def build_writer(cfg: SiteConfig) -> InfluxV1Writer | InfluxV2Writer:
    s = cfg.sink
    if isinstance(s, InfluxV1Sink):
        return InfluxV1Writer(
            s.url,
            s.database,
            s.retention_policy,
            s.username,
            _env(s.password_env, "sink.password_env"),
            s.timeout_s,
            s.create_database,
        )
    return InfluxV2Writer(s.url, s.org, s.bucket, _env(s.token_env, "sink.token_env"), s.timeout_s)


def build_series(cfg: SiteConfig) -> dict[str, SeriesTags]:
    return {d.id: series_tags(cfg.kind_of(d).value, cfg.site.id, d.id, d.zone) for d in cfg.devices}


def expected_series(cfg: SiteConfig) -> int:
    """How many (device, quantity) series the site makes: its profiles' points, plus `up` and a derived value."""
    n = 0
    for d in cfg.devices:
        prof = cfg.profile_of(d)
        n += len(prof.quantity_names()) + 2
    return n


def build_line_devices(cfg: SiteConfig) -> dict[str, list[tuple[ModbusDevice, float]]]:
    out: dict[str, list[tuple[ModbusDevice, float]]] = {ln.id: [] for ln in cfg.lines}
    for d in cfg.devices:
        prof = cfg.profile_of(d)
        if isinstance(prof, ModbusProfile):
            assert d.line is not None and d.unit_id is not None
            plan = plan_device(prof, cfg.modbus.max_gap, cfg.modbus.max_block)
            zone = parse_zone(prof.clock.zone, cfg.site.timezone) if prof.clock else None
            dev = ModbusDevice(d.id, d.unit_id, plan, d.timeout_s, d.retries, zone)
            out[d.line].append((dev, d.poll_interval_s))
    return out


def broker_params(cfg: SiteConfig) -> dict[str, BrokerParams]:
    out = {}
    for b in cfg.brokers:
        tls = b.tls
        if tls is not None:
            for f in (tls.ca_file, tls.cert_file, tls.key_file):
                if f is not None and not f.is_file():
                    raise ConfigError(f"brokers.{b.id}.tls: {f} does not exist")
            if tls.verify is TlsVerify.NONE:
                log.warning(
                    "broker %s: TLS certificate verification is OFF (tls.verify: none); use it only for a "
                    "broker on this host",
                    b.id,
                )
        out[b.id] = BrokerParams(
            id=b.id,
            host=b.host,
            port=b.port,
            client_id=b.client_id or f"sitegw-{cfg.site.id}-{b.id}",
            username=b.username,
            password=b.password(),
            protocol_v5=b.protocol.value == "5",
            keepalive_s=b.keepalive_s,
            dead_letter_topic=b.dead_letter_topic,
            tls_ca=str(tls.ca_file) if tls and tls.ca_file else None,
            tls_cert=str(tls.cert_file) if tls and tls.cert_file else None,
            tls_key=str(tls.key_file) if tls and tls.key_file else None,
            tls_verify=not tls or tls.verify is TlsVerify.FULL,
            use_tls=tls is not None,
        )
    return out


def mqtt_target(p: BrokerParams) -> MqttTarget:
    """The same broker connection for the alarm siren / LED-board channels as for the devices (own client id)."""
    return MqttTarget(
        host=p.host,
        port=p.port,
        username=p.username,
        password=p.password,
        tls_ca=p.tls_ca,
        tls_cert=p.tls_cert,
        tls_key=p.tls_key,
        tls_verify=p.tls_verify,
        use_tls=p.use_tls,
        client_id=f"{p.client_id}-notify",
    )


def build_routes(cfg: SiteConfig) -> dict[str, list[MqttDeviceRoute]]:
    decoders: dict[str, PayloadDecoder] = {}
    out: dict[str, list[MqttDeviceRoute]] = {b.id: [] for b in cfg.brokers}
    own_time: dict[str, dict[str, TimestampSpec]] = {}  # profile -> device -> its own time spec
    for d in cfg.devices:
        prof = cfg.profile_of(d)
        if isinstance(prof, MqttProfile) and d.timestamp is not None:
            own_time.setdefault(prof.id, {})[d.id] = d.timestamp.apply(prof.payload.timestamp)
    for d in cfg.devices:
        prof = cfg.profile_of(d)
        if isinstance(prof, MqttProfile):
            assert d.broker is not None and d.topic is not None
            dec = decoders.get(prof.id)
            if dec is None:
                dec = decoders[prof.id] = PayloadDecoder(prof, cfg.site.timezone, own_time.get(prof.id))
            out[d.broker].append(MqttDeviceRoute(d.id, d.key, d.topic, dec))
    return out


class Gateway:
    """`async with Gateway(cfg) as gw:` runs everything in one TaskGroup until the block exits."""

    def __init__(self, cfg: SiteConfig, fsync: bool = True, clock: Clock = wall_clock) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.spool = Spool(
            cfg.spool.dir,
            cfg.spool.max_bytes,
            cfg.spool.segment_bytes,
            fsync=fsync,
            sync_interval_s=cfg.spool.sync_interval_s,
        )
        self.series = build_series(cfg)
        self.pipeline = Pipeline(self.spool, self.series, self.metrics, clock_limits=cfg.clock_limits(), now_ns=clock)
        params = broker_params(cfg)
        try:
            self.alarms = AlarmEngine(cfg, clock, {bid: mqtt_target(p) for bid, p in params.items()}, self.metrics)
        except ValueError as err:  # a missing secret in the environment, an unusable override
            raise ConfigError(str(err)) from None
        self.pipeline.derive = self.alarms.derive
        self.alarms.event_sink = self.spool.append
        self.pipeline.listeners.append(self.alarms.on_readings)
        self.history = History(series=expected_series(cfg))  # recent values and live events for the console
        self.pipeline.listeners.append(self.history.add)
        self.writer = build_writer(cfg)
        self.drainer = SpoolDrainer(
            self.spool,
            self.writer,
            self.metrics,
            cfg.spool.batch_lines,
            cfg.spool.replay_lines_per_s,
            cfg.spool.dir / "rejected.lp",
        )
        self.liveness = Liveness(self.metrics, {d.id: d.stale_after_s for d in cfg.devices})
        line_devices = build_line_devices(cfg)
        self.lines = [
            LineOwner(
                ModbusLink(ln),
                devs,
                self.pipeline.submit,
                self.liveness,
                self.metrics,
                cfg.modbus.breaker_failures,
                cfg.modbus.breaker_max_backoff_s,
            )
            for ln in cfg.lines
            if (devs := line_devices[ln.id])
        ]
        self.sessions = [
            MqttSession(params[bid], routes, self._mqtt_submit, self._dead_letter, self._on_message)
            for bid, routes in build_routes(cfg).items()
            if routes
        ]
        self.surveys = SurveyImporter(cfg, self.alarms.conn, self.alarms.baselines, self._survey_submit, clock)
        self._stack = AsyncExitStack()

    async def _mqtt_submit(self, readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        self.metrics.readings_by_driver["mqtt"] += len(readings)
        now = time.monotonic()
        ups = []
        for dev in {r.device for r in readings}:
            up = self.liveness.seen(dev, now)
            if up:
                ups.append(up)
        ups.extend(self.liveness.take())
        await self.pipeline.submit(readings + ups if ups else readings, on_spooled)

    async def _survey_submit(self, readings: list[Reading]) -> None:
        self.metrics.readings_by_driver["survey"] += len(readings)
        now = time.monotonic()
        ups = [up for dev in sorted({r.device for r in readings}) if (up := self.liveness.seen(dev, now))]
        await self.pipeline.submit(readings + ups)

    def _dead_letter(self, kind: str, message: str, device: str | None = None) -> None:
        self.metrics.dead_letters[kind] += 1
        self.metrics.dead_letters_by_device[device or ""] += 1
        if device is not None:
            self.liveness.decode_error(device, time.monotonic())

    def _on_message(self, n: int) -> None:
        self.metrics.mqtt_messages += n

    async def __aenter__(self) -> Gateway:
        self.spool.open()
        self._stack.callback(self.spool.close)
        self._stack.push_async_callback(self.alarms.aclose)
        self._stack.push_async_callback(self.writer.aclose)
        tg = asyncio.TaskGroup()
        await self._stack.enter_async_context(tg)
        self._owned = [
            tg.create_task(self.pipeline.run(), name="pipeline"),
            tg.create_task(self.drainer.run(), name="spool-drainer"),
            tg.create_task(watch_liveness(self.liveness, self.pipeline.submit), name="liveness"),
            tg.create_task(self.alarms.run(), name="alarms"),
            tg.create_task(run_selfmon(self), name="selfmon"),
        ]
        for lo in self.lines:
            self._owned.append(tg.create_task(lo.run(), name=f"modbus-line-{lo.link.line.id}"))
        for s in self.sessions:
            self._owned.append(tg.create_task(s.run(), name=f"mqtt-{s.p.id}"))
        if self.cfg.http is not None:
            from gateway.api import serve_api

            self._owned.append(tg.create_task(serve_api(self, self.cfg.http.host, self.cfg.http.port), name="http"))
        log.info(
            "gateway %s: %d devices, %d Modbus line(s), %d broker(s), sink %s, spool %s",
            self.cfg.site.id,
            len(self.cfg.devices),
            len(self.lines),
            len(self.sessions),
            self.writer.target,
            self.cfg.spool.dir,
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for t in self._owned:
            t.cancel()
        await self._stack.__aexit__(et, e, tb)

    async def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every reading received so far is in the database (tests, graceful shutdown)."""
        deadline = time.monotonic() + timeout_s
        await asyncio.wait_for(self.pipeline.drained(), timeout_s)
        while self.spool.pending_bytes() and (left := deadline - time.monotonic()) > 0:
            self.spool.ack_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.spool.ack_event.wait(), left)
        return self.spool.pending_bytes() == 0

    def metrics_text(self) -> str:
        return self.metrics.render(self.spool.pending_bytes(), self.spool.dropped_lines, self.spool.disk_bytes())
