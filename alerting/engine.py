"""The alarm engine's composition: derive -> evaluate -> lifecycle -> escalation, hazards and baselines on one DB."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from alerting.alarms import Alarm, AlarmEvent, AlarmState, Hook, Lifecycle, UnknownAlarm
from alerting.baselines import Baselines
from alerting.checkpoint import WalCheckpointer
from alerting.counters import AlarmCounters
from alerting.db import connect, tx
from alerting.derived import Deriver, DeviceContext
from alerting.escalation import Escalation
from alerting.evaluator import Evaluator
from alerting.hazards import Hazards
from alerting.hazards.store import HazardHook
from alerting.memory import EvaluatorMemory, memory_path
from alerting.messages import Notice, local_time
from alerting.notifiers import Message, MqttNotifier, Notifier, Publisher, build_notifier
from alerting.notifiers.config import MqttChannel
from alerting.overrides import idle_entries, resolve_rules
from alerting.roles import Role
from alerting.rules import Level, Rule, default_rules
from alerting.setup import AlarmSetup
from alerting.transition import Transition
from telemetry.clock import Clock, to_next_tick, wall_clock
from telemetry.lineproto import encode_line
from telemetry.quantities import quantity_zh
from telemetry.reading import Reading

log = logging.getLogger("sitegw.alarms")

_OFFLINE = "offline"  # suppression-by-design reason while a device's `up` is 0


class AlarmEngine:
    """Owns the state database and every alarm component. `on_readings` runs inline in the pipeline (no network
    I/O: rare SQLite writes on transitions only); `run()` drives time (delays, shelving, escalation, hazard clocks)."""

    def __init__(
        self,
        cfg: AlarmSetup,
        clock: Clock = wall_clock,
        mqtt_publisher: Callable[[str, float], Publisher | None] | None = None,
        metrics: AlarmCounters | None = None,
        event_sink: Callable[[bytes, int], None] | None = None,
        alarm_hooks: Sequence[Hook] = (),
        hazard_hooks: Sequence[HazardHook] = (),
        event_write: Callable[[bytes, int], None] | None = None,
    ) -> None:
        """`event_sink` takes the alarm_events lines (the gateway's spool, durable when it returns); `event_write`,
        if given, those of changes made inline in the pipeline without the fsync, which the pipeline does with its
        batch's (an fsync in the loop before each siren, ~0.3 ms, up to 5 on a busy disk); `alarm_hooks` run after
        the engine's own on every alarm change, inside its transaction (the console's live stream)."""
        self.cfg = cfg
        self.metrics = metrics or AlarmCounters()
        self.clock = clock
        self.conn = connect(cfg.alarms.state_file)
        self.checkpoints = WalCheckpointer(self.conn, cfg.alarms.state_file, cfg.alarms.checkpoint_s)  # (app.py)
        self.devices: dict[str, DeviceContext] = dict(cfg.devices)
        self.rules: dict[str, Rule] = default_rules()
        self.rules_by_device = resolve_rules(self.rules, cfg.rules, self.devices)
        for note in idle_entries(self.rules, cfg.rules, self.devices):
            log.warning("%s: it changes nothing here", note)
        self.baselines = Baselines(self.conn, clock)
        self.evaluator = Evaluator(self.rules_by_device, self.devices, self.baselines, cfg.timezone)
        self.memory = EvaluatorMemory(self.evaluator, memory_path(cfg.alarms.state_file), cfg.alarms.memory_s)
        self.memory.load()  # (app.py runs its saving task; the open alarms' levels are given back below)
        self.deriver = Deriver(self.devices)
        self.site = cfg.site_info({rid: r.measured_unit for rid, r in self.rules.items()})
        self.notifiers: dict[str, Notifier] = {}
        for ch in cfg.escalation.channels:
            # an MQTT channel (the site's siren) gets its own held connection to its broker, with its own timeout
            pub = mqtt_publisher(ch.broker, ch.timeout_s) if isinstance(ch, MqttChannel) and mqtt_publisher else None
            self.notifiers[ch.id] = build_notifier(ch, os.environ, pub, clock=clock)
        self.escalation = Escalation(
            self.conn,
            cfg.escalation,
            self.notifiers,
            clock,
            self.site,
            on_delivery=self._delivered,
            hazard_source=self._hazard_notices,
            propose_hazard=lambda a: self.propose_hazard(a, "system", Role.ADMIN),
        )
        # alarm events also go to InfluxDB (measurement alarm_events) for Grafana annotations and tables; the hook
        # runs inside the SQLite transaction, so it only queues the line; `store_events` hands them to the spool
        self.event_sink = event_sink
        self.event_write = event_write
        self._event_lines: list[str] = []
        self._last_event = (0, 0)  # (alarm id, ns) of the last queued event line
        self._offline: dict[str, bool] = {}  # device -> offline, a suppression change not yet stored
        self.lifecycle = Lifecycle(
            self.conn,
            self.rules,
            clock,
            chatter_count=cfg.alarms.chatter_count,
            chatter_window_s=cfg.alarms.chatter_window_s,
            max_shelve_s=cfg.alarms.max_shelve_s,
            hooks=[self.escalation.on_event, self._queue_event_line, *alarm_hooks],
        )
        self.hazards = Hazards(self.conn, clock, cfg.hazards, alarm_state=self._alarm_state, hooks=hazard_hooks)
        # after a restart the evaluator starts from NORMAL: give it back the level of every open alarm, so a value
        # still above its threshold does not raise a duplicate and a value back to normal does clear it; and the time
        # of the reading behind its level, so no older one clears or lowers it
        now = clock()
        for a in self.lifecycle.open_alarms():
            if a.state in (AlarmState.ACTIVE_UNACKED, AlarmState.ACTIVE_ACKED):
                # judged when its reading came (`raised_ns` is the first raise's: a level_up since is younger)
                at = min(now, max(a.raised_ns or 0, a.source_ns or 0))
                self.evaluator.restore(a.rule, a.device, a.quantity, a.level, a.source_ns, at, a.value)
            elif a.state is AlarmState.PENDING:
                # the evaluator's on-delay candidate did not survive the restart: close the pending row; if the
                # condition is still there, the next reading starts the on-delay again
                self.lifecycle.apply(
                    Transition(a.rule, a.device, a.quantity, Level.NORMAL, a.level, a.value, None, now, "cancelled")
                )

    def _alarm_state(self, alarm_id: int) -> str | None:
        try:
            return str(self.lifecycle.get(alarm_id).state)
        except UnknownAlarm:
            return None

    def _queue_event_line(self, conn: object, ev: AlarmEvent) -> None:
        a = ev.alarm
        tags = {
            "site": self.cfg.site_id,
            "device": a.device,
            "rule": a.rule,
            "kind": self.site.device_kinds.get(a.device, a.kind),
        }
        fields: dict[str, float | int | str | bool] = {
            "level": int(a.level),
            "event": ev.kind,
            "alarm_id": int(a.id),
            "title": a.title_zh,
            "actor": ev.actor,
        }
        if math.isfinite(a.value):
            fields["value"] = float(a.value)
        # one change can emit several events at the same instant (cleared + closed): same series and timestamp
        # would overwrite each other in InfluxDB, so later ones move by a nanosecond
        last_id, last_ns = self._last_event
        ts = ev.at_ns if last_id != a.id else max(ev.at_ns, last_ns + 1)
        self._last_event = (a.id, ts)
        self._event_lines.append(encode_line("alarm_events", tags, fields, ts))

    def store_events(self, inline: bool = False) -> None:
        """The queued alarm-event lines to the spool, after their transactions; `inline`: from the pipeline."""
        sink = self.event_write if inline and self.event_write is not None else self.event_sink
        if self._event_lines and sink is not None:
            lines, self._event_lines = self._event_lines, []
            sink("".join(lines).encode(), len(lines))

    def _delivered(self, channel: str, outcome: str) -> None:
        self.metrics.deliveries[(channel, outcome)] += 1

    # ---- inline, from the pipeline ----

    def derive(self, batch: list[Reading]) -> list[Reading]:
        try:
            return self.deriver.derive(batch)
        except Exception:  # a bug in a derivation must never stop readings from reaching the database
            self.metrics.alarm_errors += 1
            log.exception("deriving readings failed; batch stored without derived values")
            return []

    def on_readings(self, batch: list[Reading]) -> None:
        try:
            if self._event_lines:  # an operator's action since the last tick: its events are durable when stored
                self.store_events()
            now = self.clock()
            for r in batch:
                if r.quantity == "up":
                    self._offline[r.device] = r.value == 0
            if self._offline:  # (nearly always empty: no list of it made per batch)
                self._apply_offline()
            self._apply(self.evaluator.observe_batch(batch, now))
            self.store_events(inline=True)
        except Exception:
            self.metrics.alarm_errors += 1
            log.exception("alarm evaluation failed for a batch of %d readings; readings are stored anyway", len(batch))

    def _apply_offline(self) -> None:
        """Suppress (or release) the alarms of devices that went offline (came back); kept and retried on the next
        tick while the database refuses the write."""
        for device, offline in list(self._offline.items()):
            try:
                if offline:
                    self.lifecycle.suppress(device, _OFFLINE)
                else:
                    self.lifecycle.unsuppress(device, _OFFLINE)
            except sqlite3.OperationalError as err:
                self._store_failed(err, f"{'suppressing' if offline else 'releasing'} the alarms of {device}")
                return
            del self._offline[device]
            self._store_ok()

    def _apply(self, transitions: list[Transition]) -> None:
        """A batch's transitions in one transaction, with the escalation tiers they make due at once (a siren's):
        one commit before the siren's message goes out, not one per transition and another for the tier; its fsync
        is made beside the siren by the checkpointer's thread (checkpoint.py fsync_behind). A transition the
        database refuses is rolled back alone (a savepoint) and asked for again; if SQLite gives up the whole
        transaction, all of them are."""
        if not transitions:
            return
        mark = len(self._event_lines)
        by_key: dict[tuple[str, str, str], list[Transition]] = {}
        for t in transitions:
            by_key.setdefault((t.rule, t.device, t.quantity), []).append(t)
        failed: dict[tuple[str, str, str], list[Transition]] = {}  # first unstored transition and later ones
        stored: list[AlarmEvent] = []
        applied = 0
        try:
            with self.checkpoints.fsync_behind(), self.lifecycle.transaction():
                for t in transitions:
                    key = (t.rule, t.device, t.quantity)
                    if key in failed:  # rewound below: the evaluator asks for the change again
                        failed[key].append(t)
                        continue
                    part = len(self._event_lines)
                    try:
                        stored.extend(self.lifecycle.apply(t))
                    except sqlite3.Error as err:  # the store refused it (full, locked, I/O); a bug still propagates
                        if not self.conn.in_transaction:
                            raise  # SQLite rolled back the whole batch: handled below
                        del self._event_lines[part:]  # its savepoint rolled back: its alarm events did not happen
                        failed[key] = [t]
                        self._store_failed(err, f"{t.rule} on {t.device}, {t.old.name} -> {t.new.name}")
                        continue
                    applied += 1
                if stored:
                    self.escalation.fire_at_once(self.lifecycle.get)
        except BaseException as err:  # the whole transaction is gone (or its commit failed): none of it happened
            del self._event_lines[mark:]
            for ts in by_key.values():
                self._rewind(ts)
            if not isinstance(err, sqlite3.Error):
                raise  # a bug (in a hook, in escalation): on_readings counts and logs it
            self._store_failed(err, f"{len(transitions)} alarm change(s), the first {transitions[0].rule} on "
                               f"{transitions[0].device}")  # fmt: skip
            return
        self.metrics.alarm_transitions += applied
        if applied:
            self._store_ok()
        for ev in stored:
            log.info(
                "alarm %s %s: %s on %s (%s) level %s value %s",
                ev.alarm.id,
                ev.kind,
                ev.alarm.rule,
                ev.alarm.device,
                ev.alarm.quantity,
                ev.alarm.level.name,
                ev.alarm.value,
            )
        for ts in failed.values():
            self._rewind(ts)

    def _rewind(self, ts: list[Transition]) -> None:
        """The evaluator asks again for a rule's unstored transitions `ts` (in order): from the first confirmed one,
        if any (a cancelled candidate ahead of it, e.g. before a clear, changes no level to rewind)."""
        first = next((t for t in ts if t.phase == "confirmed"), ts[0])
        self.evaluator.unstored(first, ts[-1])

    def _store_failed(self, err: Exception, what: str) -> None:
        """A write the database refused (disk full, locked): counted, in /health, retried (transitions by the
        evaluator, the rest on the next tick)."""
        self.metrics.state_store_failures += 1  # not alarm_errors: /health shows this one while it lasts
        why = f"{type(err).__name__}: {err}"[:300]
        if self.metrics.state_store_error is None:  # the traceback once per episode; every refusal is counted
            log.error("alarm database refused a write (%s); it is retried until it is stored", what, exc_info=err)
        else:
            log.debug("alarm database still refuses writes (%s): %s", what, why)
        self.metrics.state_store_error = why

    def _store_ok(self) -> None:
        if self.metrics.state_store_error is not None:
            log.warning("alarm database accepts writes again (after: %s)", self.metrics.state_store_error)
            self.metrics.state_store_error = None

    # ---- hazards ----

    def propose_hazard(self, a: Alarm, actor: str, role: Role) -> int:
        """A hazard record (found) from an alarm; the rule's 判定依据 is proposed, a manager confirms it."""
        existing = self.hazards.open_for_alarm(a.id)
        if existing is not None:  # one open hazard per alarm: a second click shows the same record
            return existing
        unit = self.site.units.get(a.rule, "")
        return self.hazards.propose_from_alarm(
            actor=actor,
            role=role,
            unit_name=self.cfg.hazards.reporting_unit or self.cfg.site_name,
            alarm_id=a.id,
            device=self.site.device_names.get(a.device, a.device),
            point=a.quantity,
            point_zh=quantity_zh(a.quantity),
            title_zh=a.title_zh,
            level=a.max_level,
            value=a.value,
            threshold=a.threshold,
            value_unit=unit,
            provenance=a.source,
            hazard_basis=self.rules[a.rule].hazard_basis if a.rule in self.rules else None,
            alarm_at_ns=a.raised_ns,
            measured_ns=a.source_ns,
        )

    # ---- time ----

    def _probe_store(self) -> None:
        """While the database refuses writes, try a one-row write each tick: health clears when it works again,
        even when no alarm changes to prove it."""
        with tx(self.conn):
            self.conn.execute("INSERT OR REPLACE INTO store_probe(id, at_ns) VALUES (1, ?)", (self.clock(),))
        self._store_ok()

    def tick(self) -> None:
        try:
            if self.metrics.state_store_error is not None:
                self._probe_store()
            self._apply_offline()
            self._apply(self.evaluator.tick(self.clock()))
            self.lifecycle.tick()
            self.store_events()  # also the events of operator actions (ack, shelve ...) taken through the API
        except sqlite3.OperationalError as err:  # the database (full, locked): shown in /health while it lasts
            self._store_failed(err, "the alarm clock's tick")
        except Exception:
            self.metrics.alarm_errors += 1
            log.exception("alarm tick failed")

    async def run_ticks(self, tick_s: float = 1.0) -> None:
        """Time for the evaluator and the lifecycle (delays, shelving, retries of unstored transitions), on the grid
        of `tick_s` (telemetry/clock.py to_next_tick: with the polls and the other periodic tasks)."""
        loop = asyncio.get_running_loop()
        while True:
            self.tick()
            await asyncio.sleep(to_next_tick(loop.time(), tick_s))

    async def run_escalation(self) -> None:
        """The escalation loop. Supervised by the gateway: if its database fails it is restarted, and everything that
        fell due meanwhile is delivered once it runs again (steps and deliveries are rows, not in-memory timers)."""
        await self.escalation.run(self.lifecycle.get)

    async def warm_sirens(self) -> None:
        """The siren channels connect now, not at the first alarm."""
        await asyncio.gather(*(n.warm() for n in self.notifiers.values() if isinstance(n, MqttNotifier)))

    async def gateway_fault(self, subject: str, text: str, data: dict[str, Any]) -> None:
        """Tell the sirens directly that the gateway itself is failing: this path uses no database, so it works when
        the alarm database is the component that failed. Sent once per fault episode and once on recovery."""
        msg = Message(f"sitegw:gateway:{data.get('task')}:{self.clock()}", 1, subject, text, data)
        for n in self.notifiers.values():
            if isinstance(n, MqttNotifier):
                # send() reports broker and TLS failures as its result; anything else is a bug, which the task's
                # supervisor logs and restarts
                res = await n.send(msg, [])
                if not res.ok:
                    log.error("channel %s: the gateway-fault message could not be sent: %s", n.id, res.detail)

    def _hazard_notices(self, now: int) -> list[Notice]:
        out = []
        what = {
            "rectify_deadline": "整改期限已过",
            "listing_deadline": "挂牌督办期限已过",
            "report_same_day": "重大隐患当日上报期限已过",
        }
        for c in self.hazards.fire_overdue(now):
            h = self.hazards.get(c.hazard_id)
            subject = f"【隐患逾期】#{c.hazard_id} {what.get(c.kind, c.kind)}: {h.get('description', '')[:40]}"
            text = "\n".join(
                [
                    f"{self.site.site_name} · 隐患 #{c.hazard_id} ({h.get('status')})",
                    f"{what.get(c.kind, c.kind)}: {local_time(c.due_ns, self.site.tz)}",
                    f"隐患内容: {h.get('description', '')}",
                    f"责任人: {h.get('responsible') or '-'}",
                ]
            )
            out.append(
                (c.hazard_id, subject, text, {"type": "hazard_clock", "hazard_id": c.hazard_id, "clock": c.kind})
            )
        return out

    async def aclose(self) -> None:
        for n in self.notifiers.values():
            try:
                await n.aclose()
            except Exception:
                log.exception("closing a notifier failed")
        self.memory.stop()
        self.conn.close()
