"""The read window's timing: the message rate per tick, and when a window opens and ends (drivers/mqtt/reader.py)."""

from __future__ import annotations

from typing import Literal

PACE_TICK_S = 0.1  # the message rate that decides the read window is counted over this long

# what a wake of the socket does with the messages it left waiting (`ReadWindow.wake`)
Action = Literal["now", "hold", "open"]


class ReadWindow:
    """Above `above` messages a second, what a wake reads waits for the end of a window of `window_s` from the first
    of it (brokers[].read_window_ms, read_window_above), so that several messages make one pipeline batch.

    - The rate is what the last tick took in over its length: PACE_TICK_S, or longer after a quiet spell or
      between bursts (a tick ends at the first wake after its time). A burst of 1 000 devices publishing together
      once a second is 1 000 msg/s, not its count in one tick: it opened windows below `above` before, and an alarm
      in it waited (a review). Its mean gap is the tick's length over its count.
    - A window opens only where messages come closer than its length: one alone would only wait, and cost a wake
      of its own for its timer (read_window_above set low, or read_window_ms short).
    - It ends with its timer, so no message waits more than `window_s`. Ended sooner, by the wake of a message
      after which the next was due beyond the window's end, it saved the timer's wake but made smaller batches:
      at 2 000 msg/s with the bench's even pacing (a message due with every timer) 14.0, 14.3, 14.9 CPU-ms per
      1 000 readings against 12.9, 12.6, 13.7 in turns, the same at 4 000 (README, performance): not kept."""

    __slots__ = ("_above", "_counted", "_gap", "_per_tick", "_tick_end", "open_until", "window_s", "windows")

    def __init__(self, window_s: float, above: int) -> None:
        self.window_s = window_s
        self._per_tick = above * PACE_TICK_S
        self._counted = 0  # messages in the current tick, which ends at `_tick_end`
        self._tick_end = 0.0
        self._above = False  # the last tick's rate was above `above`
        self._gap = PACE_TICK_S  # the last tick's mean time between messages
        self.open_until: float | None = None  # the open window's end (monotonic), when one is open
        self.windows = 0  # windows opened (metrics, tests)

    def wake(self, now: float, taken: int, waiting: bool) -> Action:
        """After a wake (at `now`, monotonic) that took `taken` messages, with messages `waiting` to be handed over:
        "now" hand them over; "hold" they wait for the open window; "open" a window opens (start its timer of
        `window_s`, then call `ended`)."""
        self._counted += taken
        if now >= self._tick_end:
            length = now - self._tick_end + PACE_TICK_S  # longer than a tick after a quiet spell, or between bursts
            self._above = self._counted >= self._per_tick * length / PACE_TICK_S
            self._gap = length / max(self._counted, 1)
            self._counted, self._tick_end = 0, now + PACE_TICK_S
        if self.open_until is not None:
            return "hold"
        if not self.window_s or not self._above or not waiting or self._gap >= self.window_s:
            return "now"
        self.open_until = now + self.window_s
        self.windows += 1
        return "open"

    def ended(self) -> None:
        """The open window's timer fired: its messages are handed over."""
        self.open_until = None
