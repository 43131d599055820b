"""The composition root: builds drivers, supervisor, pipeline, spool and writer from a SiteConfig and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING

from alerting.engine import AlarmEngine
from alerting.notices import Notices
from alerting.schema import SchemaError
from alerting.uplink import UplinkOutbox
from drivers.modbus.driver import ModbusDevice
from drivers.modbus.plan import plan_device
from drivers.mqtt.client import BrokerParams, HeldPublisher
from drivers.mqtt.config import Broker, TlsVerify
from drivers.mqtt.payloads import PayloadDecoder
from drivers.mqtt.session import MqttDeviceRoute, MqttSession
from drivers.profile import ModbusProfile, MqttProfile
from drivers.timefmt import TimestampSpec, parse_zone
from gateway.api.deps import alarm_json
from gateway.auth import Auth
from gateway.config import ConfigError, InfluxV1Sink, Sink, SiteConfig
from gateway.daily import DailyValues
from gateway.faults import FaultNotices
from gateway.heard import SeenSubmit, marking_seen
from gateway.history import History
from gateway.influx import InfluxV1Writer, InfluxV2Writer
from gateway.liveness import Liveness, watch_liveness
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline, SpoolIn
from gateway.second_sink import SecondSink, SpoolTee, second_sink_metrics
from gateway.selfmon import live_figures, run_selfmon
from gateway.spool import Spool
from gateway.supervisor import LineOwner, run_stream
from gateway.surveys import SurveyImporter
from gateway.tasks import Recancel, TaskSupervisor
from gateway.writer import SpoolDrainer
from telemetry.clock import Clock, wall_clock
from telemetry.lineproto import SeriesTags, series_tags
from telemetry.secrets import MissingSecret, secret

if TYPE_CHECKING:
    from gateway.uplink import Uplink

log = logging.getLogger("sitegw")


def _env(name: str | None, what: str) -> str | None:
    try:
        return None if name is None else secret(name, what)
    except MissingSecret as err:  # a config error like any other: `sitegw run` says it and exits 2
        raise ConfigError(str(err)) from None


def build_writer(s: Sink, where: str = "sink") -> InfluxV1Writer | InfluxV2Writer:
    if isinstance(s, InfluxV1Sink):
        return InfluxV1Writer(
            s.url,
            s.database,
            s.retention_policy,
            s.username,
            _env(s.password_env, f"{where}.password_env"),
            s.timeout_s,
            s.create_database,
        )
    return InfluxV2Writer(s.url, s.org, s.bucket, _env(s.token_env, f"{where}.token_env"), s.timeout_s)


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
            client_id=b.session_id(cfg.site.id),
            username=b.username,
            password=_password(b),
            protocol_v5=b.protocol.value == "5",
            keepalive_s=b.keepalive_s,
            dead_letter_topic=b.dead_letter_topic,
            tls_ca=str(tls.ca_file) if tls and tls.ca_file else None,
            tls_cert=str(tls.cert_file) if tls and tls.cert_file else None,
            tls_key=str(tls.key_file) if tls and tls.key_file else None,
            tls_verify=not tls or tls.verify is TlsVerify.FULL,
            use_tls=tls is not None,
            receive_maximum=b.window or 0,
            read_window_s=b.read_window_ms / 1000,
            read_window_above=b.read_window_above,
        )
    return out


def _password(b: Broker) -> str | None:
    return _env(b.password_env, f"brokers.{b.id}")


def publisher_for(params: dict[str, BrokerParams]) -> Callable[[str, float], HeldPublisher | None]:
    """An MQTT notify channel's own held connection to a broker of the site (a `-notify` client id)."""
    return lambda broker, timeout_s: HeldPublisher(params[broker], timeout_s=timeout_s) if broker in params else None


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
        """The one place the parts are connected, each given what it uses when it is built (nothing is set on a
        part afterwards). The topology, in the order a reading travels:

            drivers (Modbus lines, MQTT sessions) ─▶ Liveness (`up`) ─▶ Pipeline ─┬▶ AlarmEngine.derive (inline)
                                                                                ├▶ listeners: AlarmEngine; later
                                                                                │  (at the spool): History, DailyValues
                                                                                └▶ Spool ─▶ SpoolDrainer ─▶ writer
            AlarmEngine ─▶ Lifecycle hooks: Escalation, alarm_events lines (─▶ Spool), History's live hub (SSE)
            TaskSupervisor ─▶ FaultNotices (sirens, no database); API and /health read GatewayParts
        """
        self.cfg = cfg
        self.metrics = Metrics(live=lambda: live_figures(self))  # the figures read at render time (/metrics)
        self.spool = Spool(
            cfg.spool.dir,
            cfg.spool.max_bytes,
            cfg.spool.segment_bytes,
            fsync=fsync,
            sync_interval_s=cfg.spool.sync_interval_s,
        )
        # a second database for the same readings, behind a spool of its own (second_sink:)
        self.second: SecondSink | None = None
        spool_in: SpoolIn = self.spool
        if cfg.second_sink is not None:
            self.second = SecondSink(cfg.second_sink, build_writer(cfg.second_sink.sink, "second_sink.sink"), fsync)
            spool_in = SpoolTee(self.spool, self.second)
        self.series = build_series(cfg)
        # recent values and live events for the console; an alarm is sent as the API shows it (units of its rule)
        self.history = History(series=expected_series(cfg), alarm_json=lambda a: alarm_json(a, self.alarms.site.units))
        params = broker_params(cfg)
        # alarm events and hazard changes for a regional hub, written in the transaction of each change
        self.outbox = UplinkOutbox(cfg.site.id) if cfg.uplink is not None else None
        try:
            self.alarms = AlarmEngine(
                cfg.alarm_setup(),
                clock,
                publisher_for(params),
                self.metrics,
                event_sink=spool_in.append,
                event_write=spool_in.write,  # the pipeline's own fsync follows (its sync rules, docs/configuration.md)
                alarm_hooks=[self.history.hub.on_alarm, *([self.outbox.on_alarm] if self.outbox else [])],
                hazard_hooks=[self.outbox.on_hazard] if self.outbox else [],
            )
            self.auth = Auth(self.alarms.conn, cfg.auth, clock)  # the API's logins share the state database
        except (ValueError, SchemaError) as err:  # a missing secret, an unusable override, a newer state file
            raise ConfigError(str(err)) from None
        # excavation points' last value per day, for the console's trends over days (kept in the state database)
        pits = [d.id for d in cfg.devices if cfg.kind_of(d).value == "excavation"]
        self.daily = DailyValues(self.alarms.conn, cfg.site.timezone, pits)
        self.pipeline = Pipeline(
            spool_in,
            self.series,
            self.metrics,
            clock_limits=cfg.clock_limits(),
            now_ns=clock,
            derive=self.alarms.derive,
            listeners=[self.alarms.on_readings],
            later=[self.history.add, self.daily.add],
            ack_linger_s=cfg.spool.ack_linger_s,
            ack_linger_messages=cfg.spool.ack_linger_messages,
            poll_linger_s=cfg.spool.sync_interval_s if cfg.spool.write_polls_at_fsync else 0.0,
        )
        self.writer = build_writer(cfg.sink)
        self.drainer = SpoolDrainer(
            self.spool,
            self.writer,
            self.metrics,
            cfg.spool.batch_lines,
            cfg.spool.replay_lines_per_s,
            cfg.spool.dir / "rejected.lp",
            linger_s=cfg.spool.write_linger_s,
        )
        self.liveness = Liveness(self.metrics, {d.id: d.stale_after_s for d in cfg.devices})
        line_devices = build_line_devices(cfg)
        if cfg.lines:  # pymodbus and pyserial load only here: an MQTT-only site does without them (1.5 MB of RSS)
            from drivers.modbus.link import ModbusLink
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

        def heard(driver: str) -> Callable[[int], None]:  # readings counted by the driver they came from
            by_driver = self.metrics.readings_by_driver

            def counted(n: int) -> None:
                by_driver[driver] += n  # (Counter.update with a dict cost 3 µs a message)

            return counted

        p = self.pipeline
        mqtt_in = SeenSubmit(self.liveness, p.submit, heard("mqtt"), p.ready_now, p.take_now)
        survey_in = marking_seen(self.liveness, p.submit, heard("survey"))
        self.sessions = [
            MqttSession(params[bid], routes, mqtt_in, self._dead_letter, self._on_message, mqtt_in, self.liveness.heard)
            for bid, routes in build_routes(cfg).items()
            if routes
        ]
        self.surveys = SurveyImporter(
            cfg, self.alarms.conn, self.alarms.baselines, lambda rs: survey_in(rs, None), clock
        )
        # supervision notices from the regional hub (none arrive without an uplink; the API lists them anyway)
        self.notices = Notices(self.alarms.conn, clock, self.outbox.on_notice if self.outbox else None)
        self.uplink: Uplink | None = None
        if self.outbox is not None and cfg.uplink is not None:
            from gateway.selfmon import site_status

            for f in (cfg.uplink.ca_file, cfg.uplink.cert_file, cfg.uplink.key_file):
                if f is not None and not f.is_file():
                    raise ConfigError(f"uplink: {f} does not exist")
            _env(cfg.uplink.password_env, "uplink.password_env")  # set, or `sitegw run` says so and exits 2
            from gateway.uplink import Uplink  # nats-py only where a hub is configured

            self.uplink = Uplink(
                self.outbox,
                self.alarms.conn,
                cfg.uplink,
                cfg.site.id,
                self.metrics,
                lambda: site_status(self),
                self.notices,
            )
        self.faults = FaultNotices(self.metrics, self.alarms.gateway_fault, cfg.site.name or cfg.site.id)
        self.tasks = TaskSupervisor(self.metrics, on_fault=[self.faults.task_changed])
        self._stack = AsyncExitStack()

    def _flush_state(self) -> None:  # what waits in memory for the state database, written before it closes
        for what, flush in (("daily values", self.daily.flush), ("throttled logins' count", self.auth.tell_held)):
            try:
                flush()
            except (sqlite3.Error, OSError):  # a full disk at shutdown: what the last periodic write had remains
                log.exception("writing the last %s at shutdown failed", what)

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
        if self.second is not None:
            self.second.spool.open()
            self._stack.callback(self.second.spool.close)
            self._stack.push_async_callback(self.second.writer.aclose)
        self._stack.push_async_callback(self.alarms.aclose)
        self._stack.callback(self._flush_state)  # before the database closes (the stack unwinds in reverse)
        self._stack.push_async_callback(self.writer.aclose)
        tg = asyncio.TaskGroup()
        await self._stack.enter_async_context(tg)
        # every long-running task under the supervisor: failures logged, counted, in /health, on the sirens; restarted
        spawn = self.tasks.spawn
        self._owned = [
            spawn(tg, "pipeline", self.pipeline.run),
            spawn(tg, "spool-drainer", self.drainer.run),
            spawn(tg, "liveness", lambda: watch_liveness(self.liveness, self.pipeline.submit)),
            spawn(tg, "alarm-clock", self.alarms.run_ticks),
            spawn(tg, "escalation", self.alarms.run_escalation),
            spawn(tg, "state-checkpoint", self.alarms.checkpoints.run),
            spawn(tg, "evaluator-memory", self.alarms.memory.run),
            spawn(tg, "gateway-faults", self.faults.run),
            spawn(tg, "selfmon", lambda: run_selfmon(self)),
            spawn(tg, "daily-values", self.daily.run),
        ]
        # start-up jobs: done once they succeed (not in _owned, whose tasks must all keep running)
        self._jobs = [spawn(tg, "siren-connect", self.alarms.warm_sirens, once=True)]
        if self.uplink is not None:
            self._owned.append(spawn(tg, "uplink", self.uplink.run))
        if self.second is not None:
            self._owned.append(spawn(tg, "second-sink-drainer", self.second.drainer.run))
        for lo in self.lines:
            self._owned.append(spawn(tg, f"modbus-line-{lo.link.line.id}", lo.run))
        for s in self.sessions:
            self._owned.append(spawn(tg, f"mqtt-{s.p.id}", functools.partial(run_stream, s)))
        if self.cfg.http is not None:
            from gateway.api import serve_api

            http = self.cfg.http
            self._owned.append(spawn(tg, "http", lambda: serve_api(self, http.host, http.port)))
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
        with Recancel(self._owned + self._jobs):  # cancelled, and again while any goes on (see the class)
            await self._stack.__aexit__(et, e, tb)

    async def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every reading received so far is in the (first) database (tests, graceful shutdown). A
        second sink's lines are waited for by `stop_flush`; what is left waits in its spool for the next start."""
        deadline = time.monotonic() + timeout_s
        async with asyncio.timeout(timeout_s):  # not wait_for: on 3.11 it can lose a cancel (CPython gh-86296)
            for s in self.sessions:  # messages already counted may still be on their way to the pipeline
                await s.settled.wait()
            await self.pipeline.drained()
        return await self.spool.written_by(deadline)

    async def stop_flush(self, timeout_s: float) -> None:
        """Graceful shutdown: the first database, then the second sink's in what is left of `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with contextlib.suppress(TimeoutError):
            await self.flush(timeout_s)
        if rest := self.spool.pending_bytes():  # (its database down or slow) kept on disk, as the second sink says
            log.warning("database: %d bytes left in the spool, written at the next start", rest)
        if self.second is not None:
            await self.second.drained(deadline - time.monotonic())

    def metrics_text(self) -> str:
        first = self.metrics.render(self.spool.pending_bytes(), self.spool.dropped_lines, self.spool.disk_bytes())
        return first + second_sink_metrics(self.second)
