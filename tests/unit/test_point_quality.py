"""Quality per point: status codes, sentinels and flags decide it; a BAD reading neither raises nor clears a
threshold alarm but opens the point's fault condition (ISA-18.2); no two readings merge; silent decoders named."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import yaml

from alerting.derived import DeviceContext
from alerting.evaluator import Evaluator
from alerting.rules import Level, default_rules
from drivers.mqtt.client import BrokerParams
from drivers.mqtt.payloads import PayloadDecoder
from drivers.mqtt.session import RETAINED, MqttDeviceRoute, MqttSession
from drivers.profile import MqttProfile, load_profile_file
from gateway.liveness import Liveness
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.spool import Spool
from telemetry.lineproto import encode_readings, series_tags
from telemetry.reading import Quality, Reading

NS = 1_000_000_000
T0 = 1_795_224_600 * NS


def gas_evaluator() -> Evaluator:
    rules = [r for r in default_rules().values() if r.kind.value in ("gas", "any")]
    return Evaluator({"G": rules}, {"G": DeviceContext("gas")})


def levels(ev: Evaluator) -> dict[tuple[str, str], Level]:
    return {(k[0], k[2]): s.level for k, s in ev._state.items() if s.level is not Level.NORMAL}


def test_a_bad_reading_neither_clears_nor_raises_and_opens_a_point_fault() -> None:
    ev = gas_evaluator()
    ev.observe(Reading("G", "lel", 30.0, T0), T0)
    assert levels(ev) == {("gas.lel", "lel"): Level.ALARM}
    # the channel faults and reads 0: the alarm stays, a point fault opens beside it
    (t,) = ev.observe(Reading("G", "lel", 0.0, T0 + NS, Quality.BAD), T0 + NS)
    assert (t.rule, t.quantity, t.new) == ("health.point_fault", "lel", Level.ALARM)
    assert levels(ev) == {("gas.lel", "lel"): Level.ALARM, ("health.point_fault", "lel"): Level.ALARM}
    # a faulted channel reading 60 %LEL raises nothing either
    assert ev.observe(Reading("G", "lel", 60.0, T0 + 2 * NS, Quality.BAD), T0 + 2 * NS) == []
    # the next valid reading clears the fault and is evaluated as usual
    out = ev.observe(Reading("G", "lel", 3.0, T0 + 3 * NS), T0 + 3 * NS)
    assert {(t.rule, t.new) for t in out} == {("health.point_fault", Level.NORMAL), ("gas.lel", Level.NORMAL)}


def test_a_point_fault_open_at_a_restart_is_cleared_by_the_next_valid_reading() -> None:
    # the alarm store restores the open fault into a fresh evaluator, which has seen no BAD reading of its own
    ev = gas_evaluator()
    ev.restore("health.point_fault", "G", "lel", Level.ALARM)
    assert ev.observe(Reading("G", "o2", 20.9, T0), T0) == []  # another point: its fault is not open
    (t,) = ev.observe(Reading("G", "lel", 3.0, T0 + NS), T0 + NS)
    assert (t.rule, t.quantity, t.new) == ("health.point_fault", "lel", Level.NORMAL)


def test_not_ready_opens_nothing_and_clears_nothing() -> None:
    ev = gas_evaluator()
    ev.observe(Reading("G", "h2s", 15.0, T0), T0)
    before = levels(ev)
    assert before  # h2s at 15 ppm is above its alarm value
    assert ev.observe(Reading("G", "h2s", math.nan, T0 + NS, Quality.NOT_READY), T0 + NS) == []
    assert ev.observe(Reading("G", "h2s", 0.0, T0 + 2 * NS, Quality.NOT_READY), T0 + 2 * NS) == []
    assert levels(ev) == before


def test_uncertain_readings_are_evaluated_both_ways() -> None:
    ev = gas_evaluator()
    ev.observe(Reading("G", "lel", 30.0, T0, Quality.UNCERTAIN), T0)
    assert levels(ev) == {("gas.lel", "lel"): Level.ALARM}
    ev.observe(Reading("G", "lel", 1.0, T0 + NS, Quality.UNCERTAIN), T0 + NS)
    assert levels(ev) == {}


def _profile(tmp_path: Path, doc: dict[str, Any]) -> MqttProfile:
    f = tmp_path / f"{doc['id']}.yaml"
    f.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    p = load_profile_file(f)
    assert isinstance(p, MqttProfile)
    return p


def test_channel_status_and_sentinels_decide_each_points_quality(tmp_path: Path) -> None:
    prof = _profile(
        tmp_path,
        {
            "id": "t_gas",
            "kind": "gas",
            "title": "t",
            "transport": "mqtt",
            "quality_maps": {"st": {"codes": {0: "good", 2: "bad", 3: "not_ready"}, "other": "uncertain"}},
            "payload": {
                "device_key": {"source": "payload", "path": "sn"},
                "timestamp": {"path": "time", "format": "pattern", "pattern": "yyyy-MM-dd HH:mm:ss", "zone": "site"},
                "sentinels": {"--": "not_ready", "ERR": "bad", "": "bad", -9999: "bad"},
                "points": {
                    "path": "ch", "name_key": "g", "value_key": "v", "status_key": "st", "quality": "st",
                    "names": {"EX": "lel", "O2": "o2", "H2S": "h2s", "CO": "co"},
                },
            },
        },
    )  # fmt: skip
    dec = PayloadDecoder(prof, "Asia/Shanghai")
    doc = {
        "sn": "X",
        "time": "2026-11-21 08:15:02",
        "ch": [
            {"g": "EX", "v": 5.0, "st": 2},
            {"g": "O2", "v": "--", "st": 3},
            {"g": "H2S", "v": "ERR", "st": 0},
            {"g": "CO", "v": -9999, "st": 7},
        ],
    }
    ts = dec.timestamp_ns(doc, 0)
    readings, errors = dec.readings("G", doc, ts)
    assert errors == []
    got = {r.quantity: (r.value if math.isfinite(r.value) else None, r.quality) for r in readings}
    assert got == {
        "lel": (5.0, Quality.BAD),
        "o2": (None, Quality.NOT_READY),
        "h2s": (None, Quality.BAD),
        "co": (None, Quality.BAD),  # the sentinel's bad is worse than the unknown code's uncertain
    }
    line = encode_readings(readings, {"G": series_tags("gas", "s", "G", "")})[0].decode()
    assert "lel=5.0,lel_q=2i" in line and "o2_q=3i" in line and "h2s_q=2i" in line


def test_one_receive_time_per_message_in_arrival_order() -> None:
    prof = _profile_receive()
    got: list[list[Reading]] = []

    async def submit(rs: list[Reading], cb: Any = None) -> None:
        got.append(rs)

    params = BrokerParams("b", "127.0.0.1", 1, "c", None, None, False, 30, "dl")
    s = MqttSession(params, [MqttDeviceRoute("D", "D", "t/+", PayloadDecoder(prof))], submit, lambda *a: None)
    batch = [("t/D", json.dumps({"v": i}).encode(), None) for i in range(5)]
    asyncio.run(s.handle_batch(batch))
    asyncio.run(s.handle_batch(batch[:2]))
    stamps = [r.ts_ns for rs in got for r in rs]
    assert len(set(stamps)) == 7 and stamps == sorted(stamps)  # never one stamp for a batch


def _profile_receive() -> MqttProfile:
    return MqttProfile.model_validate(
        {
            "id": "t_recv",
            "kind": "formwork",
            "title": "t",
            "transport": "mqtt",
            "payload": {
                "device_key": {"source": "topic", "segment": 1},
                "fields": [{"path": "v", "quantity": "settlement"}],
            },
        }
    )


def test_two_readings_of_one_series_at_one_timestamp_are_both_kept(tmp_path: Path) -> None:
    m = Metrics()
    spool = Spool(tmp_path / "spool", 1 << 20, 1 << 16, fsync=False)
    spool.open()
    try:
        p = Pipeline(spool, {"D": series_tags("formwork", "s", "D", "")}, m)
        p.process([Reading("D", "settlement", 1.0, T0), Reading("D", "settlement", 2.0, T0)])
        p.process([Reading("D", "settlement", 3.0, T0 + 1)])  # a later batch meets the moved one
        p.process([Reading("D", "settlement", 4.0, T0 + 5), Reading("D", "settlement", 4.0, T0 + 5)])
        lines = b"".join(seg.path.read_bytes() for seg in spool.segments).decode().splitlines()
    finally:
        spool.close()
    assert [ln.split(" ", 1)[1] for ln in lines] == [
        f"settlement=1.0 {T0}",
        f"settlement=2.0 {T0 + 1}",
        f"settlement=3.0 {T0 + 2}",
        f"settlement=4.0 {T0 + 5}",  # the same value twice (a redelivery) loses nothing: one point
    ]
    assert m.series_collisions["D"] == 2


def test_a_device_whose_messages_arrive_but_never_decode_is_decode_errors_not_offline() -> None:
    m = Metrics()
    lv = Liveness(m, {"G": 3.0})
    lv.seen("G", 0.0)
    for t in (1.0, 2.0, 3.0, 4.0):
        lv.decode_error("G", t)
    out = lv.sweep(4.5)
    assert [(r.quantity, r.value) for r in out] == [("decode_errors", 1.0)]
    assert lv.state["G"] == 1 and m.decode_failing == {"G"}
    lv.seen("G", 5.0)  # a message decodes again
    assert [(r.quantity, r.value) for r in lv.take()] == [("decode_errors", 0.0)]
    assert lv.sweep(20.0)[-1].quantity == "up"  # then silence: offline, as before


def test_a_retained_message_beside_a_dead_letter_is_counted_once() -> None:
    # the reader's callback decodes a wake's messages, and hands them to the session's task when one is to be
    # dead-lettered, which decodes them again: the retained one among them is counted by whoever hands it on
    prof = _profile_receive()
    got: list[list[Reading]] = []

    async def submit(rs: list[Reading], cb: Any = None) -> None:
        got.append(rs)

    class Ready:  # the pipeline taking a batch at once (gateway/heard.py SeenSubmit)
        def ready(self) -> bool:
            return True

        def now(self, rs: list[Reading], cb: Any) -> None:
            got.append(rs)

    params = BrokerParams("b", "127.0.0.1", 1, "c", None, None, False, 30, "dl")
    route = MqttDeviceRoute("D", "D", "t/+", PayloadDecoder(prof))
    s = MqttSession(params, [route], submit, lambda *a: None, now=Ready())
    s._ack = lambda mid, qos: None
    wake = [("t/D", b'{"v": 1}', 1, 1, True), ("t/D", b"not json", 2, 1, False), ("t/D", b'{"v": 2}', 3, 1, False)]
    assert s.handle_now(wake) is False  # a dead letter to publish: the task's
    assert s.retained == 0
    asyncio.run(s.handle_batch([(t, p, None) if not r else (t, RETAINED, None) for t, p, _, _, r in wake]))
    assert s.retained == 1 and [r.value for rs in got for r in rs] == [2.0]  # the retained one not read
    assert s.handle_now([("t/D", b'{"v": 3}', 4, 1, True)]) is True and s.retained == 2
