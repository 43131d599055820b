"""Self-observability counters of the gateway, rendered in the Prometheus text format."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Metrics:
    readings_in: int = 0  # readings accepted by the pipeline (and spooled)
    readings_implausible: int = 0
    lines_spooled: int = 0
    lines_written: int = 0
    lines_replayed: int = 0
    write_batches: int = 0
    write_seconds: float = 0.0
    write_failures: int = 0
    rejected_lines: int = 0
    mqtt_messages: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)  # by reason class
    protocol_errors: Counter[str] = field(default_factory=Counter)  # by device
    polls: Counter[str] = field(default_factory=Counter)  # by device
    poll_failures: Counter[str] = field(default_factory=Counter)  # by device
    up: dict[str, int] = field(default_factory=dict)
    loop_stalls: int = 0  # the liveness timer woke up > 1 s late: the gateway itself was stalled
    alarm_transitions: int = 0
    alarm_errors: int = 0  # exceptions in alarm evaluation (readings are stored regardless)
    deliveries: Counter[tuple[str, str]] = field(default_factory=Counter)  # by (channel, outcome)

    def observe_write(self, seconds: float, lines: int, replay: bool) -> None:
        self.write_batches += 1
        self.write_seconds += seconds
        self.lines_written += lines
        if replay:
            self.lines_replayed += lines

    def render(self, spool_pending_bytes: int, spool_dropped_lines: int, spool_disk_bytes: int) -> str:
        def esc(v: str) -> str:
            return v.replace("\\", "\\\\").replace('"', '\\"')

        out = [
            f"sitegw_readings_total {self.readings_in}",
            f"sitegw_readings_implausible_total {self.readings_implausible}",
            f"sitegw_lines_spooled_total {self.lines_spooled}",
            f"sitegw_lines_written_total {self.lines_written}",
            f"sitegw_lines_replayed_total {self.lines_replayed}",
            f"sitegw_write_batches_total {self.write_batches}",
            f"sitegw_write_seconds_total {self.write_seconds:.6f}",
            f"sitegw_write_failures_total {self.write_failures}",
            f"sitegw_rejected_lines_total {self.rejected_lines}",
            f"sitegw_mqtt_messages_total {self.mqtt_messages}",
            f"sitegw_spool_pending_bytes {spool_pending_bytes}",
            f"sitegw_spool_disk_bytes {spool_disk_bytes}",
            f"sitegw_spool_dropped_lines_total {spool_dropped_lines}",
            f"sitegw_loop_stalls_total {self.loop_stalls}",
            f"sitegw_alarm_transitions_total {self.alarm_transitions}",
            f"sitegw_alarm_errors_total {self.alarm_errors}",
        ]
        for (ch, outcome), n in sorted(self.deliveries.items()):
            out.append(f'sitegw_notifications_total{{channel="{esc(ch)}",outcome="{esc(outcome)}"}} {n}')
        for reason, n in sorted(self.dead_letters.items()):
            out.append(f'sitegw_dead_letters_total{{reason="{esc(reason)}"}} {n}')
        for dev, n in sorted(self.protocol_errors.items()):
            out.append(f'sitegw_protocol_errors_total{{device="{esc(dev)}"}} {n}')
        for dev, n in sorted(self.polls.items()):
            out.append(f'sitegw_polls_total{{device="{esc(dev)}"}} {n}')
        for dev, n in sorted(self.poll_failures.items()):
            out.append(f'sitegw_poll_failures_total{{device="{esc(dev)}"}} {n}')
        for dev, v in sorted(self.up.items()):
            out.append(f'sitegw_device_up{{device="{esc(dev)}"}} {v}')
        return "\n".join(out) + "\n"
