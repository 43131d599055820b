"""The closing account of a soak: readings, dead letters, alarms, notifications, and the gateway's RSS and fds.

Readings are counted per device and quantity; `up` (written by the gateway's liveness) and derived quantities
(the crane's `load_ratio`) are not device readings and are left out.

- MQTT devices publish: produced = every distinct message the witness saw on the device topics (the broker
  accepted it) × the quantities in it (decoded with the simulators' own payload map).
- Modbus devices are polled, so a reading exists only when the gateway asks. The simulators' ledger records every
  answer; a poll is the answer to the device's first block (its arrival is the row's timestamp). Every row in
  InfluxDB must match one answered poll just before it. An answered poll without a row is either in flight at a
  `kill -9` (answered < KILL_WINDOW_S before the kill: the reading was only in the gateway's memory, nothing had
  acknowledged it, the device still holds the value) or superseded by a retry (the same request again within the
  device's timeout: the gateway had given up on that answer). Anything else is unexplained and fails the account.
  produced = rows matched + unexplained, × the device's points.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from drivers.modbus.plan import plan_reads
from drivers.mqtt.payloads import PayloadDecoder
from drivers.profile import ModbusProfile, MqttProfile
from services.local import rows
from simulators.payloads import decode_payload, topic_for
from soak.observer import MALFORMED_MARK

if TYPE_CHECKING:
    from soak.run import Soak

NS = 1_000_000_000
KILL_WINDOW_S = 3.0
MATCH_S = 2.0


@dataclass
class Account:
    lines: list[tuple[bool | None, str]] = field(default_factory=list)  # (passed, text); None: information

    def check(self, ok: bool, text: str) -> None:
        self.lines.append((ok, text))

    def info(self, text: str) -> None:
        self.lines.append((None, text))

    @property
    def balanced(self) -> bool:
        return all(ok is not False for ok, _ in self.lines)

    def render(self) -> str:
        mark = {True: "  ok ", False: "FAIL ", None: "     "}
        return "\n".join(f"{mark[ok]}{text}" for ok, text in self.lines)


def field_counts(port: int, db: str, measurement: str) -> dict[str, dict[str, int]]:
    """device -> field -> number of points holding that field."""
    out: dict[str, dict[str, int]] = {}
    for r in rows(port, db, f'SELECT count(*) FROM "{measurement}" GROUP BY device'):
        out[str(r["device"])] = {k[len("count_") :]: int(v) for k, v in r.items() if k.startswith("count_") and v}
    return out


def match_polls(answers: list[int], stamps: list[int], window_ns: int) -> tuple[int, list[int], int]:
    """Match each row to the latest unmatched answer at or before it (within `window_ns`): (matched, unmatched
    answers, unmatched rows). A retried request leaves its earlier answer unmatched, as it should."""
    answers, stamps = sorted(answers), sorted(stamps)
    stack: list[int] = []
    i = matched = orphans = 0
    unmatched: list[int] = []
    for r in stamps:
        while i < len(answers) and answers[i] <= r:
            stack.append(answers[i])
            i += 1
        if stack and r - stack[-1] <= window_ns:
            stack.pop()
            matched += 1
        else:
            orphans += 1
    unmatched = stack + answers[i:]
    return matched, sorted(unmatched), orphans


def _missing_where(soak: Soak, device: str, published: list[int], exp: Counter[str]) -> str:
    """Which published messages are not in InfluxDB, and the fault step nearest to each (for diagnosis)."""
    cfg, site = soak.cfg, soak.site
    q = next(iter(exp))
    kind = cfg.kind_of(next(d for d in cfg.devices if d.id == device)).value
    got = {
        int(r["time"])
        for r in rows(site.influx_port, site.db, f'SELECT "{q}" FROM "{kind}" WHERE device = \'{device}\'')
    }
    lost = sorted(set(published) - got)
    out = []
    for t in lost[:8]:
        ev = min(soak.script.events, key=lambda e: min(abs(t - e.start_ns), abs(t - (e.end_ns or e.start_ns))))
        out.append(f"{(t - ev.start_ns) / NS:+.1f} s from {ev.kind} start ({(t - ev.end_ns) / NS:+.1f} s from its end)")
    return f"{len(lost)} messages missing: " + "; ".join(out)


def _retried(s: int, answers: list[tuple[int, int]], window_ns: int) -> bool:
    """True when a request the device answered at `s` (or just after) was asked again within `window_ns`."""
    seen: set[int] = set()
    for t, fc in answers:
        if t < s:
            continue
        if t > s + window_ns:
            break
        if fc in seen:
            return True
        seen.add(fc)
    return False


def build(soak: Soak) -> Account:
    acc = Account()
    cfg, site = soak.cfg, soak.site
    counts: dict[str, dict[str, int]] = {}
    for kind in sorted({cfg.kind_of(d).value for d in cfg.devices}):
        counts.update(field_counts(site.influx_port, site.db, kind))
    produced = stored = 0

    # ---- MQTT: published messages × quantities --------------------------------------------------------------
    by_topic = {}
    for d in cfg.devices:
        prof = cfg.profile_of(d)
        if isinstance(prof, MqttProfile):
            by_topic[topic_for(d, prof)] = (d.id, prof)
    expected: dict[str, Counter[str]] = defaultdict(Counter)
    messages: Counter[str] = Counter()
    stamps_of: dict[str, list[int]] = defaultdict(list)
    for topic, payload in list(soak.observer.seen.device_msgs):
        if MALFORMED_MARK.encode() in payload or topic not in by_topic:
            continue
        dev, prof = by_topic[topic]
        messages[dev] += 1
        doc = json.loads(payload)
        expected[dev].update(decode_payload(prof, doc).keys())
        stamps_of[dev].append(PayloadDecoder(prof).timestamp_ns(doc, 0))
    for did, _prof in sorted(by_topic.values(), key=lambda v: v[0]):
        exp, got = expected[did], counts.get(did, {})
        got_n = sum(got.get(q, 0) for q in exp)
        missing = {q: exp[q] - got.get(q, 0) for q in exp if exp[q] != got.get(q, 0)}
        acc.check(
            not missing,
            f"MQTT {did}: {messages[did]} messages × {len(exp)} quantities = {sum(exp.values())} readings published; "
            f"{got_n} stored" + (f"; differences (published − stored) {missing}" if missing else ""),
        )
        if missing:
            acc.info(f"  {did}: " + _missing_where(soak, did, stamps_of[did], exp))
        produced += sum(exp.values())
        stored += got_n

    # ---- Modbus: answered polls against rows ---------------------------------------------------------------
    ledger = json.loads((soak.run / "modbus-ledger.json").read_text())
    by_dev: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for dev_id, fc, t in ledger:
        by_dev[dev_id].append((int(t), int(fc)))
    kills = [int(e.detail["killed_at_ns"]) for e in soak.script.of("gateway_kill9")]  # type: ignore[call-overload]
    for d in cfg.devices:
        prof = cfg.profile_of(d)
        if not isinstance(prof, ModbusProfile):
            continue
        blocks = plan_reads(prof, cfg.modbus.max_gap, cfg.modbus.max_block)
        points = [p.quantity for b in blocks for p in b.points]
        first_fc, first_q = blocks[0].table.function_code, blocks[0].points[0].quantity
        answers = sorted(by_dev[d.id])
        polls = [t for t, fc in answers if fc == first_fc]
        kind = cfg.kind_of(d).value
        q = f'SELECT "{first_q}" FROM "{kind}" WHERE device = \'{d.id}\''
        stamps = [int(r["time"]) for r in rows(site.influx_port, site.db, q)]
        matched, unmatched, orphans = match_polls(polls, stamps, int(MATCH_S * NS))
        at_kill = [s for s in unmatched if any(k - KILL_WINDOW_S * NS <= s <= k for k in kills)]
        rest = [s for s in unmatched if s not in set(at_kill)]
        window = int((d.timeout_s + 0.3) * NS)
        retried = [s for s in rest if _retried(s, answers, window)]
        unexplained = len(rest) - len(retried)
        got = counts.get(d.id, {})
        incomplete = {p: got.get(p, 0) for p in points if got.get(p, 0) != len(stamps)}
        acc.check(
            orphans == 0 and unexplained == 0 and not incomplete,
            f"Modbus {d.id}: {len(polls)} polls answered = {matched} stored rows + {len(at_kill)} in flight at "
            f"kill -9 + {len(retried)} superseded by a retry + {unexplained} unexplained; rows without an answer: "
            f"{orphans}; {len(points)} points per row"
            + (f"; incomplete fields {incomplete} of {len(stamps)} rows" if incomplete else ""),
        )
        produced += (matched + unexplained) * len(points)
        stored += sum(got.get(p, 0) for p in points)

    dropped = sum(soak.dropped_by_pid.values())
    acc.check(
        produced == stored + dropped and dropped == 0,
        f"readings: produced {produced} = stored {stored} + dropped {dropped} (spool dropped lines, summed over "
        f"{len(soak.dropped_by_pid)} gateway lives; must be 0 within the spool bound)",
    )

    # ---- dead letters --------------------------------------------------------------------------------------
    seen = soak.observer.seen
    injected = set(soak.injected)
    got_dl = seen.dead_letters & injected
    other_dl = seen.dead_letters - injected
    acc.check(
        got_dl == injected and not other_dl,
        f"dead letters: {len(injected)} malformed payloads injected, {len(got_dl)} distinct dead letters for them "
        f"({seen.dead_letter_copies} copies published; a copy again after a kill -9 is the same letter); "
        f"{len(other_dl)} other",
    )

    # ---- alarms --------------------------------------------------------------------------------------------
    _alarms(soak, acc)

    # ---- notifications -------------------------------------------------------------------------------------
    keys = seen.siren_keys
    twice = {k: n for k, n in keys.items() if n > 1}
    acc.check(
        not twice and bool(keys),
        f"siren: {sum(keys.values())} messages, {len(keys)} idempotency keys, delivered more than once: "
        + (", ".join(f"{k} ×{n}" for k, n in sorted(twice.items())) or "none"),
    )

    # ---- the gateway process -------------------------------------------------------------------------------
    _process(soak, acc)
    return acc


def _alarms(soak: Soak, acc: Account) -> None:
    """Every "raised" event must come from the script. Expected exactly: one raise of the one gas.lel alarm per
    leak (nobody acknowledges, so it is re-raised from RTN_UNACKED on the same row) and one health.stale raise per
    flap. Allowed, not counted exactly: health.stale of an MQTT device during a broker restart (it may or may
    not stay silent past its stale limit) and of any device at the shutdown (the simulators stop first). Value
    alarms other than gas.lel come from the normal scenario itself (a crane lifting near its rating) and are
    listed; a health alarm, or a gas.lel raise, that no fault step explains fails the account."""
    conn = sqlite3.connect(f"file:{soak.site.state_file}?mode=ro", uri=True)
    try:
        raised = conn.execute(
            "SELECT a.rule, a.device, l.at_ns, a.id FROM alarm_log l JOIN alarm_alarms a ON a.id = l.alarm_id "
            "WHERE l.kind = 'raised' ORDER BY l.at_ns"
        ).fetchall()
    finally:
        conn.close()
    mqtt_devices = {d.id for d in soak.cfg.devices if d.broker is not None}
    script = soak.script

    def inside(at: int, kind: str, device: str | None = None, slack_s: float = 0.0) -> bool:
        return any(e.start_ns <= at <= (e.end_ns or at) + slack_s * NS for e in script.of(kind, device))

    scripted: Counter[tuple[str, str]] = Counter()
    allowed: Counter[tuple[str, str]] = Counter()
    natural: Counter[tuple[str, str]] = Counter()
    unexpected: list[tuple[str, str, int]] = []
    for rule, device, at, _id in raised:
        if rule == "gas.lel" and device == "GAS-01" and inside(at, "gas", device):
            scripted[(rule, device)] += 1
        elif rule == "health.stale" and inside(at, "flap", device):
            scripted[(rule, device)] += 1
        elif rule == "health.stale" and (
            (device in mqtt_devices and inside(at, "broker_restart", slack_s=10)) or inside(at, "shutdown")
        ):
            allowed[(rule, device)] += 1
        elif not rule.startswith("health.") and rule != "gas.lel":
            natural[(rule, device)] += 1  # the simulated site's own work (a crane lifting near its rating)
        else:
            unexpected.append((rule, device, at))
    gas_rows = {i for r, d, _at, i in raised if r == "gas.lel" and d == "GAS-01"}
    want = {("gas.lel", "GAS-01"): len(script.of("gas"))}
    for e in script.of("flap"):
        key = ("health.stale", str(e.device))
        want[key] = want.get(key, 0) + 1
    for key, n in sorted(want.items()):
        acc.check(scripted[key] == n, f"alarms {key[0]}@{key[1]}: {scripted[key]} raised, {n} expected by the script")
    acc.check(len(gas_rows) == 1, f"gas.lel@GAS-01: {len(gas_rows)} alarm row(s), re-raised (lifecycle: 1 expected)")
    if allowed:
        acc.info("allowed, not scripted: " + ", ".join(f"{r}@{d} ×{n}" for (r, d), n in sorted(allowed.items())))
    if natural:
        acc.info("value alarms of the normal scenario: " + ", ".join(f"{r}@{d} ×{n}" for (r, d), n in natural.items()))
    acc.check(
        not unexpected,
        f"health alarms not caused by the script: {len(unexpected)}"
        + ("" if not unexpected else " — " + ", ".join(f"{r}@{d}" for r, d, _ in unexpected[:10])),
    )


def _process(soak: Soak, acc: Account) -> None:
    """RSS and fds per gateway life. Judged flat on lives of 5 min or more: after a 60 s warm-up, the last
    minute's median against the first minute's (RSS within +25 %, fds within +10)."""
    for n, life in enumerate(soak.procmon.lives, 1):
        s = life.samples
        if not s:
            continue
        rss = [x[1] for x in s]
        fds = [x[2] for x in s]
        text = (
            f"gateway life {n} (pid {life.pid}, {s[-1][0]:.0f} s, {len(s)} samples): RSS kB first/last/max "
            f"{rss[0]}/{rss[-1]}/{max(rss)}; open fds first/last/max {fds[0]}/{fds[-1]}/{max(fds)}"
        )
        warm = [x for x in s if x[0] >= 60]
        if s[-1][0] < 300 or len(warm) < 60:
            acc.info(text + " (too short to judge)")
            continue
        head = [x for x in warm if x[0] < warm[0][0] + 60]
        tail = [x for x in warm if x[0] > warm[-1][0] - 60]
        r0, r1 = statistics.median(x[1] for x in head), statistics.median(x[1] for x in tail)
        f0, f1 = statistics.median(x[2] for x in head), statistics.median(x[2] for x in tail)
        flat = r1 <= r0 * 1.25 and f1 <= f0 + 10
        acc.check(flat, text + f"; warm medians RSS {r0:.0f}→{r1:.0f}, fds {f0:.0f}→{f1:.0f}")


def dump(acc: Account, path: Path) -> None:
    path.write_text(acc.render() + "\n", encoding="utf-8")
