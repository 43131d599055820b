"""The read window's timing (drivers/mqtt/window.py) on a clock of the test's: when a window opens, holds, is cut
by a message's wake and ends, at given message rates."""

from __future__ import annotations

from drivers.mqtt.window import PACE_TICK_S, ReadWindow

WINDOW_S = 0.002


def paced(w: ReadWindow, rate: float, seconds: float, start: float = 10.0) -> list[str]:
    """One message a wake, `rate` a second for `seconds`, each handed over or held as `w` says, a window's timer
    firing before the first message after its end (and after the last): the actions."""
    out = []
    for i in range(round(rate * seconds)):
        now = start + i / rate
        if w.open_until is not None and w.open_until <= now:
            w.ended()
        out.append(w.wake(now, 1, True))
    if w.open_until is not None:
        w.ended()
    return out


def test_below_the_rate_every_message_is_handed_over_as_it_comes() -> None:
    w = ReadWindow(WINDOW_S, above=1500)
    assert set(paced(w, 1000, 1.0)) == {"now"}
    assert w.windows == 0


def test_above_the_rate_what_comes_during_a_window_waits_for_its_end() -> None:
    # 3 700 msg/s, 0.27 ms apart, 2 ms windows: a window opens and holds what comes until its timer
    w = ReadWindow(WINDOW_S, above=1500)
    t = 10.0
    assert set(paced(w, 3700, 0.5, start=t)) >= {"open", "hold"}
    t = 10.5001
    assert w.wake(t, 1, True) == "open"
    assert w.open_until == t + WINDOW_S
    assert [w.wake(t + i / 3700, 1, True) for i in range(1, 8)] == ["hold"] * 7  # (the 8th due after the end)
    w.ended()  # the timer: the eight are handed over
    assert w.open_until is None
    assert w.wake(t + 8 / 3700, 1, True) == "open"  # the next message opens a window of its own


def test_a_window_opens_only_where_messages_come_closer_than_its_length() -> None:
    # above the rate (800 msg/s) but 1.25 ms apart against a 1 ms window: each window would hold its first
    # message alone until its timer woke the process
    w = ReadWindow(0.001, above=500)
    assert set(paced(w, 800, 1.0)) == {"now"}
    # the same rate with a 2 ms window: windows open (two messages each)
    w = ReadWindow(WINDOW_S, above=500)
    actions = paced(w, 800, 1.0)
    assert actions[-4:] == ["open", "hold", "open", "hold"]


def test_after_a_quiet_spell_the_first_message_is_handed_over_at_once() -> None:
    w = ReadWindow(WINDOW_S, above=1500)
    paced(w, 4000, 0.5, start=10.0)
    # the tick in progress ends at the next wake, 5 s later: its messages over 5 s are a low rate
    assert w.wake(15.5, 1, True) == "now"
    assert w.wake(15.5 + PACE_TICK_S / 2, 1, True) == "now"


def test_no_window_when_nothing_waits_or_the_window_is_off() -> None:
    w = ReadWindow(WINDOW_S, above=1500)
    paced(w, 4000, 0.5, start=10.0)
    assert w.wake(10.5002, 0, False) == "now"  # (a wake that read a PINGRESP)
    off = ReadWindow(0.0, above=1)
    assert set(paced(off, 4000, 0.5)) == {"now"}
