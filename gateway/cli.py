"""`sitegw`: run the gateway, check a site config and print its plan, poll every device once, or push dashboards."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.errors import DriverError
from drivers.modbus.plan import plan_reads
from drivers.profile import ModbusProfile, MqttProfile
from gateway import dashboards, eventloop
from gateway.config import ConfigError, SiteConfig, load_config
from gateway.rule_view import rule_plan
from gateway.survey_cli import import_survey
from hub import cli as hub_cli  # argparse only at import; psycopg and nats-py load when the hub runs
from telemetry import quantities

log = logging.getLogger("sitegw")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # one INFO line per HTTP request would bury what matters; the writer logs outages and recoveries itself
    for noisy in ("httpx", "httpcore", "aiomqtt", "influxdb_client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def unmapped_bits(prof: ModbusProfile) -> list[str]:
    """Status words of which only some bits are mapped and the word itself is not stored: the rest would be lost."""
    from drivers.registers import DataType

    bits: dict[tuple[str, int], set[int]] = {}
    whole: set[tuple[str, int]] = set()
    for p, table, addr, _order in prof.resolved():
        if p.type is DataType.BIT:
            bits.setdefault((table.value, addr), set()).add(p.bit or 0)
        elif p.type in (DataType.UINT16, DataType.INT16):
            whole.add((table.value, addr))
    out = []
    for (tname, addr), used in sorted(bits.items()):
        if (tname, addr) in whole:
            continue
        free = [b for b in range(16) if b not in used]
        if free:
            out.append(
                f"{tname} {addr}: bits {_ranges(free)} are not mapped and the word is not stored "
                f"(add a uint16 point on it, e.g. an auxiliary 'status_word', to keep them)"
            )
    return out


def _ranges(xs: list[int]) -> str:
    out: list[str] = []
    start = prev = xs[0]
    for x in [*xs[1:], -1]:
        if x != prev + 1:
            out.append(f"{start}" if start == prev else f"{start}–{prev}")
            start = x
        prev = x
    return ", ".join(out)


def sample_problems(cfg: SiteConfig) -> list[str]:
    """Golden samples of every profile the site uses that no longer decode to their expectations."""
    from drivers.testbench import check_samples, load_samples, profile_samples

    out: list[str] = []
    for pid in sorted({d.profile for d in cfg.devices}):
        path = profile_samples(pid, list(cfg.profile_dirs))
        if path is None:
            continue
        try:
            problems = check_samples(cfg.profiles()[pid], load_samples(path))
        except ValueError as err:
            problems = [str(err)]
        out += [f"profile {pid} ({path}): {p}" for p in problems]
    return out


def check_config(cfg: SiteConfig, path: Path) -> str:
    """The resolved plan, as a technician wants to see it before going on site."""
    out = [f"{path}: OK", f"site {cfg.site.id} · {cfg.site.name} · {cfg.site.timezone}"]
    sink = cfg.sink
    where = getattr(sink, "database", None) or getattr(sink, "bucket", "")
    out.append(f"sink {sink.type} {sink.url} -> {where}")
    out.append(
        f"spool {cfg.spool.dir} (bound {cfg.spool.max_bytes} bytes, replay <= {cfg.spool.replay_lines_per_s:g} lines/s)"
    )
    for ln in cfg.lines:
        devs = [d for d in cfg.devices if d.line == ln.id]
        addr = getattr(ln, "port", "")
        host = getattr(ln, "host", None)
        out.append(f"\nline {ln.id} [{ln.type}] {host + ':' if host else ''}{addr} — {len(devs)} device(s)")
        for d in devs:
            prof = cfg.profile_of(d)
            assert isinstance(prof, ModbusProfile)
            blocks = plan_reads(prof, cfg.modbus.max_gap, cfg.modbus.max_block)
            out.append(
                f"  device {d.id} unit {d.unit_id} ({prof.id}, {prof.kind}) every {d.poll_interval_s:g} s, "
                f"timeout {d.timeout_s:g} s x {d.retries + 1}: {len(blocks)} request(s) for {len(prof.points)} points"
            )
            for b in blocks:
                out.append(f"    {b.describe()}")
            if prof.clock is not None:
                c = prof.clock
                out.append(f"    device clock: {c.encoding} {c.packing} {'-'.join(c.fields)} in zone {c.zone}")
            for note in unmapped_bits(prof):
                out.append(f"    NOTE {note}")
    for br in cfg.brokers:
        devs = [d for d in cfg.devices if d.broker == br.id]
        tls = "TLS" if br.tls else "plain"
        auth = f"user {br.username}" if br.username else "anonymous"
        out.append(
            f"\nbroker {br.id} mqtt://{br.host}:{br.port} ({tls}, {auth}, MQTT {br.protocol.value}, "
            f"client id {br.session_id(cfg.site.id)}, QoS 1, "
            f"dead letters -> {br.dead_letter_topic})"
        )
        for topic in sorted({d.topic for d in devs if d.topic}):
            out.append(f"  subscribe {topic}")
            for d in devs:
                if d.topic != topic:
                    continue
                prof = cfg.profile_of(d)
                assert isinstance(prof, MqttProfile)
                q = ", ".join(f"{n} [{quantities.lookup(n).unit}]" for n in prof.quantity_names())
                out.append(f"    device {d.id} (key {d.key!r}, {prof.id}, {prof.kind}): {q}")
    out.extend(_rule_summary(cfg))
    return "\n".join(out)


def _rule_summary(cfg: SiteConfig) -> list[str]:
    """Effective alarm rules per device kind (defaults + the site's overrides), and the project values still owed."""
    from alerting.escalation.roster import uncovered
    from alerting.overrides import idle_entries, missing_values, resolve_rules
    from alerting.rules import default_rules

    devices = cfg.device_contexts()
    by_device = resolve_rules(default_rules(), cfg.rules, devices)
    kinds = sorted({cfg.kind_of(d).value for d in cfg.devices})
    seen: dict[str, Any] = {}
    for rs in by_device.values():
        for r in rs:
            seen.setdefault(r.id, r)
    out = [f"\nalarm rules (packs in alerting/packs/, overrides under rules:): {len(seen)} for {', '.join(kinds)}"]
    out.extend(rule_plan(by_device, devices))
    for note in idle_entries(default_rules(), cfg.rules, devices):
        out.append(f"  NOTE: {note}: it changes nothing here")
    owed = missing_values(by_device, devices)
    if owed:
        out.append(f"  NOTE: {len(owed)} rule(s) lack project values (no number in the standards we could verify);")
        out.append(
            "        they stay inactive until configured (the designer's 预警值, the formwork plan's control values):"
        )
        out.extend(f"    - {m}" for m in owed)
    esc = cfg.escalation
    out.append(
        f"\nescalation: {len(esc.policies)} polic(ies), {len(esc.channels)} channel(s), {len(esc.people)} people"
    )
    for p in esc.policies:
        out.append(f"  policy {p.id}: {p.match.model_dump(exclude_none=True)}")
        for i, t in enumerate(p.tiers, 1):
            rep = f", repeat every {t.repeat_every_s:g} s x{t.repeats}" if t.repeat_every_s and t.repeats else ""
            rep += " + propose hazard" if t.propose_hazard else ""
            out.append(
                f"    tier {i}: after {t.after_s:g} s from {('预警', '报警', '危险')[t.min_level - 1]} -> "
                f"{', '.join(t.roles)} via {', '.join(t.channels)}{rep}"
            )
    if not esc.policies:
        out.append("  NOTE: no escalation policy: alarms are recorded and shown, but nobody is notified")
    for role, gaps in uncovered(esc).items():  # an alarm then reaches the sirens and robots, and nobody by email
        out.append(f"  NOTE: nobody on duty as {role}: {', '.join(gaps)}")
    out.append(f"users: {', '.join(f'{u.name} ({u.role})' for u in cfg.auth.users) or 'none (the API refuses logins)'}")
    return out


def _print_dead_letter(kind: str, message: str, device: str | None) -> None:
    print(f"dead letter: {message}")


async def _once(cfg: SiteConfig, timeout_s: float) -> int:
    """Poll each Modbus device once and wait for one message per MQTT device; print the readings."""
    from drivers.modbus.link import ModbusLink
    from drivers.mqtt.session import MqttSession
    from gateway.app import broker_params, build_line_devices, build_routes
    from gateway.liveness import Liveness
    from gateway.metrics import Metrics
    from gateway.supervisor import LineOwner, run_stream
    from telemetry.reading import Reading

    found: dict[str, list[Reading]] = {}
    failed: dict[str, str] = {}
    metrics = Metrics()
    liveness = Liveness(metrics, {})

    all_heard = asyncio.Event()
    mqtt_devices: set[str] = set()

    async def collect(rs: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        for r in rs:
            found.setdefault(r.device, []).append(r)
        if mqtt_devices and mqtt_devices <= found.keys():
            all_heard.set()
        if on_spooled:
            on_spooled()

    lines = build_line_devices(cfg)
    for ln in cfg.lines:
        owner = LineOwner(ModbusLink(ln), lines[ln.id], collect, liveness, metrics, 1, 1.0)
        for dev, _ in lines[ln.id]:
            try:
                await collect(await owner.poll_once(dev))
            except DriverError as err:
                failed[dev.device_id] = str(err)
        owner.link.close()
    routes = build_routes(cfg)
    params = broker_params(cfg)
    mqtt_devices.update(r.device_id for rs in routes.values() for r in rs)
    if mqtt_devices:
        sessions = [MqttSession(params[b], rs, collect, _print_dead_letter) for b, rs in routes.items() if rs]
        tasks = [asyncio.create_task(run_stream(s), name=f"once-mqtt-{s.p.id}") for s in sessions]
        try:  # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancel (CPython gh-86296)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await all_heard.wait()
        finally:  # also when the command itself is interrupted: no session outlives it
            for t in tasks:
                t.cancel()
        # bounded and owned here (this command, not the gateway's supervisor): a session that failed by itself is
        # said, with its traceback, and charged to its devices rather than reported as silence
        ended = await asyncio.gather(*tasks, return_exceptions=True)
        for (broker, rs), end in zip(((b, rs) for b, rs in routes.items() if rs), ended, strict=True):
            if isinstance(end, Exception):
                log.error("broker %s: the MQTT session failed", broker, exc_info=end)
                for route in rs:
                    if route.device_id not in found:
                        failed.setdefault(route.device_id, f"MQTT session failed: {type(end).__name__}: {end}")
        for silent in mqtt_devices - found.keys():
            failed.setdefault(silent, f"no message within {timeout_s:g} s")
    for d in cfg.devices:
        if d.id in found:
            print(f"{d.id} ({d.name})")
            for r in found[d.id]:
                unit = quantities.lookup(r.quantity).unit
                flag = "" if r.quality.name == "GOOD" else f"  [{r.quality.name}]"
                print(f"  {r.quantity:<28} {r.value:>14.6g} {unit}{flag}")
        else:
            print(f"{d.id} ({d.name}): FAILED: {failed.get(d.id, 'no data')}")
    return 0 if not failed else 1


# Allocations between two collections of the youngest generation (Python's default: 700). At 1 000 msg/s that
# default collected every ~20 ms, so readings held ~100 ms for their fsync survived two or three collections and were
# promoted to the oldest generation, whose full pass (~6 ms, the event loop stopped) then came every 5-7 s: four in
# each alarm-latency run. With 10 000 most are gone before their first collection: one full pass per run, and
# 3-12 % less CPU per reading at 1 000-4 000 msg/s (README, Performance). `/metrics` shows the collections.
GC_YOUNG = 10_000


async def _run(cfg: SiteConfig) -> None:
    from gateway.app import Gateway

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Gateway(cfg) as gw:
        # Everything built at start (modules, config, FastAPI, pydantic schemas: ~100k objects) lives as long as
        # the process: keep it out of the collector's full passes, which otherwise stalled the event loop ~80 ms
        # each and were the tail of the alarm latency (bench/alarm_latency.py).
        gc.freeze()
        gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
        await stop.wait()
        log.info("stopping: flushing to the database(s) for up to 5 s (the rest stays in the spool)")
        await gw.stop_flush(5.0)


LOOP_HELP = "event loop: uvloop (auto: when installed; less CPU per message) or Python's own asyncio"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sitegw", description="SiteGW edge telemetry gateway for construction sites")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="run the gateway")
    p_run.add_argument("config", type=Path)
    p_run.add_argument("--loop", choices=eventloop.CHOICES, default="auto", help=LOOP_HELP)
    p_chk = sub.add_parser("check-config", help="validate a site config and print the resolved plan")
    p_chk.add_argument("config", type=Path)
    p_once = sub.add_parser("once", help="poll/receive once per device and print the readings")
    p_once.add_argument("config", type=Path)
    p_once.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for MQTT devices")
    p_once.add_argument("--loop", choices=eventloop.CHOICES, default="auto", help=LOOP_HELP)
    p_tp = sub.add_parser(
        "test-profile", help="decode sample payloads or a register dump with a profile; check its golden samples"
    )
    p_tp.add_argument("profile", help="a profile id (built-in or in --profile-dir) or a profile YAML file")
    src = p_tp.add_mutually_exclusive_group()
    src.add_argument("--payload", type=Path, help="MQTT: one payload, or JSON lines / one HJ 212 frame per line")
    src.add_argument("--registers", type=Path, help="Modbus: lines '<table> <address>: <hex words>'")
    p_tp.add_argument("--topic", default="sample/DEVICE", help="the topic the payload arrived on")
    p_tp.add_argument("--timezone", default="Asia/Shanghai", help="the site's timezone (zone-less device times)")
    p_tp.add_argument("--profile-dir", type=Path, action="append", default=[], help="extra profile folder")
    p_imp = sub.add_parser("import", help="import a surveyor's results (CSV / XLSX) into a running gateway")
    p_imp.add_argument("file", type=Path)
    p_imp.add_argument("--url", default="http://127.0.0.1:8780", help="the gateway's HTTP endpoint")
    p_imp.add_argument("--token-env", default="SITEGW_TOKEN", help="environment variable holding an API token")
    p_imp.add_argument("--quantity", help="the item of every row, for a file without a 监测项目 column")
    hub_cli.add_cli(sub)
    dashboards.add_cli(sub)
    args = ap.parse_args(argv)
    _setup_logging(args.log_level)
    if args.cmd == "dashboards":  # talks to Grafana, needs no site config
        return dashboards.run_cli(args)
    if args.cmd == "hub":  # no site config either; psycopg and nats-py only here
        return hub_cli.run_cli(args)
    if args.cmd == "import":
        return import_survey(args)
    if args.cmd == "test-profile":
        from gateway.profile_bench import run_test_profile

        return run_test_profile(args)
    try:
        cfg = load_config(args.config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.cmd == "check-config":
        bad = sample_problems(cfg)
        if bad:
            print(f"error: {args.config}: profile samples no longer decode as expected:", file=sys.stderr)
            for b in bad:
                print(f"  {b}", file=sys.stderr)
            return 2
        print(check_config(cfg, args.config))
        return 0
    try:
        if args.cmd == "once":
            return eventloop.run(lambda: _once(cfg, args.timeout), args.loop)
        eventloop.run(lambda: _run(cfg), args.loop)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
