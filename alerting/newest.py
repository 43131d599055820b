"""Each device's newest reading time, and when it came: to the alarm levels an older reading is history."""

from __future__ import annotations

NS = 1_000_000_000


class NewestReadings:
    """A device's readings share its clock: one older than its newest (its buffer sent after an outage, a QoS 1
    message delivered again) is history (domain.md §1.4), kept and stored but neither raising nor clearing a level.
    When the newest came is the gateway's time, not the device's: a device clock behind the gateway's is guarded
    too, and one set back (or set right after running ahead) is judged again once its newest is 3 expected intervals
    old, not frozen until its clock catches up."""

    __slots__ = ("_by_device",)

    def __init__(self) -> None:
        self._by_device: dict[str, tuple[int, int]] = {}  # device -> (newest reading time, gateway time it came)

    def heard(self, device: str, ts_ns: int, now_ns: int) -> None:
        got = self._by_device.get(device)
        if got is None or ts_ns > got[0]:
            self._by_device[device] = (ts_ns, now_ns)

    def history(self, device: str, ts_ns: int, now_ns: int, every_s: float | None) -> bool:
        """The reading at `ts_ns` is older than the device's newest, which is still current."""
        got = self._by_device.get(device)
        if got is None or ts_ns >= got[0]:
            return False
        return every_s is None or now_ns - got[1] <= 3 * every_s * NS
