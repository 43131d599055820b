"""Self-observability counters of the gateway, rendered in the Prometheus text format (0.0.4, HELP and TYPE)."""

from __future__ import annotations

import gc
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from alerting.counters import AlarmCounters

# the drivers whose readings are counted apart (sitegw_driver_readings_total); always rendered, even at 0
DRIVERS = ("modbus", "mqtt", "survey", "derived", "liveness")


@dataclass
class Summary:
    """A Prometheus summary without quantiles (count, sum) plus the maximum: cheap enough for every poll."""

    count: int = 0
    sum: float = 0.0
    max: float = 0.0

    def observe(self, v: float) -> None:
        self.count += 1
        self.sum += v
        self.max = max(self.max, v)


@dataclass(frozen=True)
class LiveFigures:
    """Figures read from the running gateway at render time (gateway/selfmon.py installs the provider)."""

    spool_oldest_age_s: float
    spool_max_bytes: int
    mqtt_reconnects: Mapping[str, int]  # by broker id
    mqtt_connected: Mapping[str, int]  # by broker id: 1 connected, 0 not
    mqtt_read_windows: Mapping[str, int]  # by broker id (drivers/mqtt/reader.py)
    mqtt_read_pauses: Mapping[str, int]  # by broker id: the broker sent beyond the window (drivers/mqtt/reader.py)
    mqtt_retained: Mapping[str, int]  # by broker id: retained messages not decoded (drivers/mqtt/session.py)
    mqtt_heartbeats: Mapping[str, int]  # by broker id: devices' heartbeats (PayloadMap.heartbeat)
    devices_total: int
    spool_torn_bytes: int = 0  # cut from the last segment on start (Spool.torn_bytes)


Labels = tuple[tuple[str, str], ...]


@dataclass
class Metrics(AlarmCounters):
    readings_in: int = 0  # readings accepted by the pipeline (and spooled)
    readings_implausible: int = 0
    readings_unspooled: int = 0  # polled readings the spool's disk refused: lost (an MQTT message comes again)
    lines_spooled: int = 0
    lines_written: int = 0
    lines_replayed: int = 0
    write_batches: int = 0
    write_seconds: float = 0.0
    write_failures: int = 0
    rejected_lines: int = 0
    mqtt_messages: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)  # by reason class
    dead_letters_by_device: Counter[str] = field(default_factory=Counter)  # by device ("" when unattributed)
    decode_failing: set[str] = field(default_factory=set)  # devices whose messages arrive and none decodes
    clock_skew_readings: Counter[str] = field(default_factory=Counter)  # by device
    clock_skewed: set[str] = field(default_factory=set)  # devices whose clock is off now
    series_collisions: Counter[str] = field(default_factory=Counter)  # by device
    line_failures: Counter[str] = field(default_factory=Counter)  # by Modbus line: failed opens / uses
    # by HTTP status: bodies too large (413), slow (408), cross-site writes (403-cross-site), streams (429-streams)
    http_refused: Counter[str] = field(default_factory=Counter)
    lines_down: dict[str, str] = field(default_factory=dict)  # line id -> reason, while it cannot be opened
    protocol_errors: Counter[str] = field(default_factory=Counter)  # by device
    blocks_split: Counter[str] = field(default_factory=Counter)  # by device: merged reads refused, read in parts
    polls: Counter[str] = field(default_factory=Counter)  # by device
    poll_failures: Counter[str] = field(default_factory=Counter)  # by device
    up: dict[str, int] = field(default_factory=dict)
    task_failures: Counter[str] = field(default_factory=Counter)  # supervised tasks that raised or ended, by task
    task_restarts: Counter[str] = field(default_factory=Counter)  # by task
    loop_stalls: int = 0  # the liveness timer woke up > 1 s late: the gateway itself was stalled
    readings_by_driver: Counter[str] = field(default_factory=Counter)  # handed to the pipeline, by DRIVERS
    poll_seconds: dict[str, Summary] = field(default_factory=dict)  # Modbus poll latency by line
    uplink_sent: int = 0  # events the regional hub's cluster acknowledged
    uplink_failures: int = 0  # failed connects and publishes (retried)
    uplink_backlog: int | None = None  # events in the outbox; None: no uplink configured
    uplink_oldest_ns: int | None = None
    uplink_set_aside: int = 0  # events kept on the site, never sent: larger than the cluster's max_payload
    live: Callable[[], LiveFigures] | None = field(default=None, repr=False)

    def observe_write(self, seconds: float, lines: int, replay: bool) -> None:
        self.write_batches += 1
        self.write_seconds += seconds
        self.lines_written += lines
        if replay:
            self.lines_replayed += lines

    def observe_poll(self, line: str, seconds: float) -> None:
        s = self.poll_seconds.get(line)
        if s is None:
            s = self.poll_seconds[line] = Summary()
        s.observe(seconds)

    def render(self, spool_pending_bytes: int, spool_dropped_lines: int, spool_disk_bytes: int) -> str:
        out: list[str] = []
        live = self.live() if self.live is not None else None

        def family(name: str, kind: str, help_: str, samples: list[tuple[str, Labels, float]]) -> None:
            # a labelled family with no series yet is left out entirely (README: "appear once known")
            if not samples:
                return
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for suffix, labels, v in samples:
                lab = ",".join(f'{k}="{_esc(val)}"' for k, val in labels)
                out.append(f"{name}{suffix}{{{lab}}} {_num(v)}" if lab else f"{name}{suffix} {_num(v)}")

        def one(name: str, kind: str, help_: str, v: float) -> None:
            family(name, kind, help_, [("", (), v)])

        def by(label: str, values: Mapping[str, float]) -> list[tuple[str, Labels, float]]:
            return [("", ((label, k),), v) for k, v in sorted(values.items())]

        c, g = "counter", "gauge"
        one("sitegw_readings_total", c, "Readings accepted by the pipeline and spooled.", self.readings_in)
        family(
            "sitegw_driver_readings_total",
            c,
            "Readings handed to the pipeline, by source (modbus, mqtt, derived, liveness up/down).",
            by("driver", {d: self.readings_by_driver.get(d, 0) for d in DRIVERS} | dict(self.readings_by_driver)),
        )
        one(
            "sitegw_readings_implausible_total", c, "Readings outside their plausible range.", self.readings_implausible
        )
        one("sitegw_lines_spooled_total", c, "Line-protocol lines appended to the spool.", self.lines_spooled)
        one(
            "sitegw_readings_unspooled_total",
            c,
            "Polled readings lost: the spool's disk refused their write (full of other files, read-only).",
            self.readings_unspooled,
        )
        one("sitegw_lines_written_total", c, "Lines the database acknowledged.", self.lines_written)
        one("sitegw_lines_replayed_total", c, "Lines written from the backlog after an outage.", self.lines_replayed)
        one("sitegw_write_batches_total", c, "Write requests the database acknowledged.", self.write_batches)
        one("sitegw_write_seconds_total", c, "Time spent in acknowledged writes.", self.write_seconds)
        one("sitegw_write_failures_total", c, "Retryable write failures (database down).", self.write_failures)
        one("sitegw_rejected_lines_total", c, "Lines the database refused, kept in rejected.lp.", self.rejected_lines)
        one("sitegw_mqtt_messages_total", c, "MQTT messages received.", self.mqtt_messages)
        if self.uplink_backlog is not None:
            one("sitegw_uplink_sent_total", c, "Events the regional hub's cluster acknowledged.", self.uplink_sent)
            one("sitegw_uplink_failures_total", c, "Failed sends to the regional hub (retried).", self.uplink_failures)
            one("sitegw_uplink_backlog", g, "Events waiting in the uplink outbox.", self.uplink_backlog)
            one("sitegw_uplink_set_aside", g, "Events too large for the hub's cluster, kept on the site.",
                self.uplink_set_aside)  # fmt: skip
        one("sitegw_spool_pending_bytes", g, "Spooled bytes not yet acknowledged by the database.", spool_pending_bytes)
        one("sitegw_spool_disk_bytes", g, "Bytes of the spool segments on disk.", spool_disk_bytes)
        one(
            "sitegw_spool_dropped_lines_total",
            c,
            "Lines dropped at the spool bound (oldest first).",
            spool_dropped_lines,
        )
        if live is not None:
            one(
                "sitegw_spool_oldest_age_seconds",
                g,
                "Age of the oldest line not yet acknowledged by the database; 0 when drained.",
                live.spool_oldest_age_s,
            )
            one("sitegw_spool_bound_bytes", g, "The spool's bound on disk (spool.max_bytes).", live.spool_max_bytes)
            one(
                "sitegw_spool_torn_bytes_total",
                c,
                "Bytes of a torn last line (kill -9, power cut) cut from the spool when it was opened.",
                live.spool_torn_bytes,
            )
        one("sitegw_loop_stalls_total", c, "Times the gateway's event loop was stalled for over 1 s.", self.loop_stalls)
        # the collector stops the event loop for its passes (a full one: ~6 ms at site rates); gateway/cli.py tunes it
        gens = [str(i) for i in range(3)]
        family(
            "python_gc_collections_total",
            c,
            "Collections of each generation of Python's garbage collector.",
            [("", (("generation", gn),), st["collections"]) for gn, st in zip(gens, gc.get_stats(), strict=True)],
        )
        family(
            "sitegw_gc_threshold",
            g,
            "Python's collector thresholds (gateway/cli.py GC_YOUNG for generation 0).",
            [("", (("generation", gn),), v) for gn, v in zip(gens, gc.get_threshold(), strict=True)],
        )
        family(
            "sitegw_task_failures_total",
            c,
            "Failures of the gateway's supervised tasks (an exception, or the task ended), by task.",
            by("task", self.task_failures),
        )
        family(
            "sitegw_task_restarts_total", c, "Restarts of supervised tasks, by task.", by("task", self.task_restarts)
        )
        one(
            "sitegw_state_store_failures_total",
            c,
            "Writes the alarm database refused (disk full, locked); each is retried.",
            self.state_store_failures,
        )
        one(
            "sitegw_state_store_ok",
            g,
            "1 while the alarm database accepts writes; 0 after a refused write until one succeeds.",
            int(self.state_store_error is None),
        )
        one("sitegw_alarm_transitions_total", c, "Alarm state transitions.", self.alarm_transitions)
        one("sitegw_alarm_errors_total", c, "Exceptions in alarm evaluation.", self.alarm_errors)
        family(
            "sitegw_notifications_total",
            c,
            "Notification delivery attempts by channel and outcome (sent, retry, failed, partial: one refused).",
            [("", (("channel", ch), ("outcome", oc)), n) for (ch, oc), n in sorted(self.deliveries.items())],
        )
        family(
            "sitegw_dead_letters_total", c, "MQTT messages dead-lettered, by reason.", by("reason", self.dead_letters)
        )
        family(
            "sitegw_device_dead_letters_total",
            c,
            "MQTT messages (or parts of them) dead-lettered, by device ('' when no device could be named).",
            by("device", self.dead_letters_by_device),
        )
        family(
            "sitegw_clock_skew_readings_total",
            c,
            "Readings whose device time was ahead of the gateway or older than the device's limits, by device.",
            by("device", self.clock_skew_readings),
        )
        family(
            "sitegw_series_collisions_total",
            c,
            "Readings of one series that met another at the same timestamp with another value (moved 1 ns).",
            by("device", self.series_collisions),
        )
        family(
            "sitegw_line_failures_total",
            c,
            "Failures to open or use a Modbus line (serial settings refused, no such port, DNS), by line.",
            by("line", self.line_failures),
        )
        family(
            "sitegw_http_refused_total",
            c,
            "HTTP requests refused by the API's bounds: 413 body too large, 408 too slow, 403-cross-site, "
            "429-streams (live streams over their limit).",
            by("code", self.http_refused),
        )
        family(
            "sitegw_protocol_errors_total", c, "Modbus exception answers by device.", by("device", self.protocol_errors)
        )
        family(
            "sitegw_modbus_blocks_split_total",
            c,
            "Merged Modbus reads a device refused with exception 02, read since as their gap-free parts, by device.",
            by("device", self.blocks_split),
        )
        family("sitegw_polls_total", c, "Modbus polls started by device (failed ones too).", by("device", self.polls))
        family("sitegw_poll_failures_total", c, "Failed Modbus polls by device.", by("device", self.poll_failures))
        lines = sorted(self.poll_seconds.items())
        family(
            "sitegw_poll_seconds",
            "summary",
            "Modbus poll latency (one device poll with all its requests; failed polls included) by line.",
            [s for ln, p in lines for s in (("_sum", (("line", ln),), p.sum), ("_count", (("line", ln),), p.count))],
        )
        family(
            "sitegw_poll_seconds_max",
            g,
            "Longest Modbus poll since start, by line.",
            [("", (("line", ln),), p.max) for ln, p in lines],
        )
        if live is not None:
            family(
                "sitegw_mqtt_reconnects_total",
                c,
                "Successful MQTT reconnects after a lost connection, by broker.",
                by("broker", live.mqtt_reconnects),
            )
            family("sitegw_mqtt_connected", g, "1 while connected to the broker.", by("broker", live.mqtt_connected))
            family(
                "sitegw_mqtt_read_windows_total",
                c,
                "Windows whose messages were handed over together (above read_window_above msg/s), by broker.",
                by("broker", live.mqtt_read_windows),
            )
            family(
                "sitegw_mqtt_read_pauses_total",
                c,
                "Times the broker's socket was not read: more messages unacknowledged than the window, by broker.",
                by("broker", live.mqtt_read_pauses),
            )
            family(
                "sitegw_mqtt_retained_ignored_total",
                c,
                "Retained messages (the broker's copies of earlier ones, sent on subscribing): acknowledged, not read.",
                by("broker", live.mqtt_retained),
            )
            family(
                "sitegw_mqtt_heartbeats_total",
                c,
                "Messages that were a device's heartbeat (no data; the device is heard), by broker.",
                by("broker", live.mqtt_heartbeats),
            )
        family("sitegw_device_up", g, "1 while the device delivers data, 0 when offline.", by("device", self.up))
        one("sitegw_devices_up", g, "Devices online.", sum(self.up.values()))
        one(
            "sitegw_devices_total",
            g,
            "Devices configured.",
            live.devices_total if live is not None else len(self.up),
        )
        return "\n".join(out) + "\n"


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)
