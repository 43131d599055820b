"""The read window's timing (drivers/mqtt/window.py) on a clock of the test's: when a window opens, holds, is cut
by a message's wake and ends, at given message rates."""

from __future__ import annotations

import pytest

from drivers.mqtt.window import PACE_TICK_S, ReadWindow

WINDOW_S = 0.002


class OldPace:
    """drivers/mqtt/reader.py Inbox._pace at 5ac2d64, before ReadWindow (a review's model), on the test's clock."""

    def __init__(self, window_s: float, above: int) -> None:
        self.window_s, self._per_tick = window_s, above * PACE_TICK_S
        self._counted, self._tick_end, self._above, self.windows = 0, 0.0, False, 0
        self.open_until: float | None = None

    def wake(self, now: float, taken: int, waiting: bool) -> str:
        self._counted += taken
        if now >= self._tick_end:
            self._above = self._counted >= self._per_tick
            self._counted, self._tick_end = 0, now + PACE_TICK_S
        if self.open_until is not None:
            return "hold"
        if not self._above or not waiting:
            return "now"
        self.open_until = now + self.window_s
        self.windows += 1
        return "open"

    def ended(self) -> None:
        self.open_until = None


def bursts(w: ReadWindow | OldPace, per_burst: int, period_s: float, n: int = 10, per_wake: int = 50) -> int:
    """`n` bursts of `per_burst` messages every `period_s`, read in wakes of `per_wake` 0.3 ms apart, a window's
    timer firing before the first wake after its end: the windows opened."""
    for b in range(n):
        left, k = per_burst, 0
        while left:
            now = 100.0 + b * period_s + k * 0.0003
            if w.open_until is not None and w.open_until <= now:
                w.ended()
            take = min(per_wake, left)
            left, k = left - take, k + 1
            w.wake(now, take, True)
        if w.open_until is not None:
            w.ended()
    return w.windows


def paced(w: ReadWindow | OldPace, rate: float, seconds: float, start: float = 10.0) -> list[str]:
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


def test_below_the_rate_nothing_waits_when_messages_come_in_bursts() -> None:
    # 1 000 devices publishing together once a second: 1 000 msg/s, below 1 500. A tick ends at the first wake after
    # its time, so the one ending at a burst spans the quiet second: its count (1 000 of 150 a tick) was read as a
    # rate, and every burst waited in windows (3 each; a review). Counted over the tick's length, none
    assert bursts(OldPace(WINDOW_S, 1500), 1000, 1.0) == 27  # (none in the first: no tick before it)
    assert bursts(ReadWindow(WINDOW_S, 1500), 1000, 1.0) == 0
    # bursts above the rate on average still make windows
    assert bursts(ReadWindow(WINDOW_S, 1500), 1000, 0.5) > 0


@pytest.mark.parametrize("rate", [500, 1000, 1600, 2000, 4000, 8000])
def test_steady_traffic_opens_the_windows_it_did_before(rate: int) -> None:
    assert paced(ReadWindow(WINDOW_S, 1500), rate, 2.0) == paced(OldPace(WINDOW_S, 1500), rate, 2.0)
