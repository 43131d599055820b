"""Heartbeats (gateway/liveness.py `Liveness.heard`): a device is up while it is heard, with or without data, and
a heartbeat never says its data decodes: a crane whose renamed fields are all dead-lettered stays flagged."""

from __future__ import annotations

from gateway.liveness import Liveness
from gateway.metrics import Metrics


def test_heartbeats_keep_a_device_up_without_data_and_their_silence_takes_it_down() -> None:
    m = Metrics()
    lv = Liveness(m, {"TC": 90.0})
    lv.seen("TC", 0.0)
    for t in range(30, 600, 30):  # an idle crane at night: heartbeats only
        lv.heard("TC", float(t))
        assert lv.sweep(float(t) + 1) == []
    assert m.up["TC"] == 1
    (down,) = lv.sweep(570.0 + 91)
    assert (down.quantity, down.value) == ("up", 0.0)
    lv.heard("TC", 700.0)  # one heartbeat brings it back
    assert [(r.quantity, r.value) for r in lv.take()] == [("up", 1.0)] and m.up["TC"] == 1


def test_heartbeats_do_not_hide_data_that_never_decodes() -> None:
    """Data every 10 s, all dead-lettered (a firmware renamed its fields), heartbeats every 30 s: decode_errors is
    raised and stays raised; the device is neither offline nor reported decoding again. Before, each heartbeat
    cleared it ("its messages decode again") and kept it from being raised."""
    m = Metrics()
    lv = Liveness(m, {"TC": 90.0})
    lv.seen("TC", 0.0)
    events = []
    for t in range(1, 1000):
        if t % 10 == 0:
            lv.decode_error("TC", float(t))
        if t % 30 == 0:
            lv.heard("TC", float(t))
        events += [(t, r.quantity, r.value) for r in lv.sweep(float(t))]
    assert events == [(91, "decode_errors", 1.0)]
    assert m.decode_failing == {"TC"} and m.up["TC"] == 1
    lv.seen("TC", 1000.0)  # a data message decodes again
    assert [(r.quantity, r.value) for r in lv.take()] == [("decode_errors", 0.0)] and not m.decode_failing
