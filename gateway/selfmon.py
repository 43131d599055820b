"""Gateway self-monitoring: /health (ready / degraded / starting), live /metrics figures, the `sitegw` health line."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.metrics import LiveFigures
from gateway.second_sink import second_sink_reasons
from telemetry.lineproto import encode_line
from telemetry.reading import Reading

if TYPE_CHECKING:
    from fastapi import FastAPI

    from gateway.parts import GatewayParts

log = logging.getLogger("sitegw.selfmon")

SWEEP_S = 1.0  # health bookkeeping; cheap (counters only)
PERIOD_S = 10.0  # the `sitegw` line for the gateway-health dashboard
HISTORY_STEP_S = 10.0  # granularity of the counter history behind the "in the last hour" reasons
SPOOL_FULL_RATIO = 0.5  # above half its bound, the spool is on its way to dropping data
SPOOL_AGE_LIMIT_S = 300.0  # a line older than this in the spool: the database is not keeping up (or is down)
RECENT_S = 3600.0  # window for alarm-engine errors and failed notifications
STALL_WINDOW_S = 600.0  # window for event-loop stalls

OnSpooled = Callable[[], object]
MqttSubmit = Callable[[list[Reading], OnSpooled | None], Awaitable[None]]


@dataclass(frozen=True)
class _Snapshot:
    at: float  # time.monotonic()
    alarm_errors: int
    notify_failed: int
    loop_stalls: int
    rejected_lines: int
    dropped_lines: int  # the spool's, over its bound or on a full disk
    set_aside: int  # uplink events too large for the hub's cluster, kept on the site (a gauge that only grows)


def _reason(code: str, detail: dict[str, Any], zh: str, en: str) -> dict[str, Any]:
    return {"code": code, "detail": detail, "zh": zh, "en": en}


def _listed(code: str, names: list[str], detail: dict[str, Any], zh: str, en: str) -> dict[str, Any]:
    """A reason naming the devices, lines or brokers at fault: `{n}` is their count, `{names}` the list."""
    n = len(names)
    return _reason(code, detail, zh.format(n=n, names="、".join(names)), en.format(n=n, names=", ".join(names)))


class SelfMonitor:
    """Per-gateway state of self-monitoring: whether the first sweep ran, and a short history of counters."""

    def __init__(self, gw: GatewayParts) -> None:
        self._gw = weakref.ref(gw)  # kept in a WeakKeyDictionary keyed by the gateway: no strong cycle
        self.swept = False
        self.db_down_since: float | None = None
        # the gateway's counters start at 0 with it, so a zero snapshot is the honest baseline
        self.history: deque[_Snapshot] = deque([_Snapshot(time.monotonic(), 0, 0, 0, 0, 0, 0)])

    @property
    def gw(self) -> GatewayParts:
        gw = self._gw()
        assert gw is not None, "gateway gone"
        return gw

    def _snapshot(self, now: float) -> _Snapshot:
        m = self.gw.metrics
        failed = sum(_failed(m.deliveries).values())
        dropped = self.gw.spool.dropped_lines
        return _Snapshot(now, m.alarm_errors, failed, m.loop_stalls, m.rejected_lines, dropped, m.uplink_set_aside)

    def sweep(self, now: float) -> None:
        gw = self.gw
        if not gw.drainer.db_up:
            if self.db_down_since is None:
                self.db_down_since = now
        else:
            self.db_down_since = None
        if now - self.history[-1].at >= HISTORY_STEP_S:
            self.history.append(self._snapshot(now))
        horizon = now - max(RECENT_S, STALL_WINDOW_S)
        while len(self.history) > 1 and self.history[1].at <= horizon:
            self.history.popleft()  # the one kept is the baseline at (or just before) the horizon
        self.swept = True

    def _base(self, now: float, window_s: float) -> _Snapshot:
        """The newest snapshot at least `window_s` old (or the oldest there is): counts since it are 'recent'."""
        base = self.history[0]
        for s in self.history:
            if s.at > now - window_s:
                break
            base = s
        return base

    def reasons(self, now: float) -> list[dict[str, Any]]:
        gw = self.gw
        m = gw.metrics
        out: list[dict[str, Any]] = []
        if not gw.drainer.db_up:
            down = round(now - self.db_down_since, 1) if self.db_down_since is not None else 0.0
            out.append(
                _reason(
                    "database_down",
                    {"target": gw.writer.target, "down_for_s": down, "write_failures": m.write_failures},
                    f"数据库无法写入（{gw.writer.target}），数据暂存在本地缓存中，恢复后补写",
                    f"database not writable ({gw.writer.target}); readings wait in the spool until it is back",
                )
            )
        disk, bound = gw.spool.disk_bytes(), gw.spool.max_bytes
        if disk > bound * SPOOL_FULL_RATIO:
            pct = round(100.0 * disk / bound, 1)
            out.append(
                _reason(
                    "spool_filling",
                    {"disk_bytes": disk, "max_bytes": bound, "percent": pct},
                    f"本地缓存已用 {pct}%（上限 {bound} 字节）；满后将丢弃最早的数据",
                    f"spool at {pct} % of its bound ({bound} bytes); when full, the oldest data is dropped",
                )
            )
        out += second_sink_reasons(gw.second, SPOOL_FULL_RATIO)
        age = gw.spool.oldest_pending_age_s()
        if age > SPOOL_AGE_LIMIT_S:
            out.append(
                _reason(
                    "spool_stale",
                    {"oldest_age_s": round(age, 1), "limit_s": SPOOL_AGE_LIMIT_S},
                    f"缓存中最早的数据已等待 {age:.0f} 秒仍未写入数据库（限值 {SPOOL_AGE_LIMIT_S:.0f} 秒）",
                    f"the oldest spooled line waited {age:.0f} s for the database (limit {SPOOL_AGE_LIMIT_S:.0f} s)",
                )
            )
        offline = sorted(d for d, v in m.up.items() if v == 0)
        if offline:
            detail = {"devices": offline, "count": len(offline), "total": len(gw.cfg.devices)}
            out.append(
                _listed("devices_offline", offline, detail, "{n} 台设备离线：{names}", "{n} device(s) offline: {names}")
            )
        failing = sorted(m.decode_failing)
        if failing:
            detail = {"devices": failing, "dead_letters": {d: m.dead_letters_by_device[d] for d in failing}}
            zh = "{n} 台设备的数据无法解析（消息在到达，见死信）：{names}"
            out.append(
                _listed(
                    "decode_errors",
                    failing,
                    detail,
                    zh,
                    "{n} device(s) send messages that do not decode (see the dead letters): {names}",
                )
            )
        skewed = sorted(m.clock_skewed)
        if skewed:
            zh = "{n} 台设备时钟偏差过大（数据已保存并标记为可疑）：{names}"
            out.append(
                _listed(
                    "clock_skew",
                    skewed,
                    {"devices": skewed},
                    zh,
                    "{n} device clock(s) off (readings kept, marked uncertain): {names}",
                )
            )
        if m.lines_down:
            lines_down = sorted(m.lines_down)
            out.append(
                _reason(
                    "lines_down",
                    {"lines": {ln: m.lines_down[ln] for ln in lines_down}},
                    f"{len(lines_down)} 条 Modbus 线路无法打开："
                    + "；".join(f"{ln}: {m.lines_down[ln]}" for ln in lines_down),
                    f"{len(lines_down)} Modbus line(s) cannot be opened: "
                    + "; ".join(f"{ln}: {m.lines_down[ln]}" for ln in lines_down),
                )
            )
        brokers = sorted(s.p.id for s in gw.sessions if not s.connected.is_set())
        if brokers:
            zh, en = "MQTT 服务器未连接：{names}", "MQTT broker(s) not connected: {names}"
            out.append(_listed("mqtt_disconnected", brokers, {"brokers": brokers}, zh, en))
        up = gw.cfg.uplink
        if up is not None and m.uplink_oldest_ns is not None:
            behind_s = (time.time_ns() - m.uplink_oldest_ns) / 1e9
            if behind_s > up.behind_after_s:
                out.append(
                    _reason(
                        "uplink_behind",
                        {"events": m.uplink_backlog, "oldest_age_s": round(behind_s, 1), "servers": up.servers},
                        f"{m.uplink_backlog} 条事件未能上报区域监管平台，最早的已等待 {behind_s:.0f} 秒"
                        "（本地保存，恢复后按序补报）",
                        f"{m.uplink_backlog} event(s) not yet sent to the regional hub, the oldest {behind_s:.0f} s "
                        "old (kept here, sent in order once it is reachable)",
                    )
                )
        broken = gw.tasks.failing()
        if broken:
            tasks = [h.report(now) for h in broken]
            out.append(
                _reason(
                    "tasks_failing",
                    {"tasks": tasks},
                    "网关任务故障（自动重启中）："
                    + "；".join(f"{t['task']}: {t['error']}（已重启 {t['restarts']} 次）" for t in tasks),
                    "gateway task(s) failing (restarting with backoff): "
                    + "; ".join(f"{t['task']}: {t['error']} ({t['restarts']} restart(s))" for t in tasks),
                )
            )
        if m.state_store_error is not None:
            out.append(
                _reason(
                    "alarm_store_failing",
                    {"error": m.state_store_error, "state_file": str(gw.cfg.alarms.state_file)},
                    f"报警数据库无法写入（{m.state_store_error}）：新报警待写入后才会记录和通知，数据照常存储",
                    f"the alarm database refuses writes ({m.state_store_error}): new alarms are raised and notified "
                    "once it takes writes again; readings are stored",
                )
            )
        # counts over a recent window: how many since the snapshot that old (the counters only ever grow)
        base, stall_base = self._base(now, RECENT_S), self._base(now, STALL_WINDOW_S)
        failed = _failed(m.deliveries)
        channels = sorted(failed)
        recent: tuple[tuple[str, int, float, dict[str, Any], str, str], ...] = (
            ("alarm_engine_errors", m.alarm_errors - base.alarm_errors, RECENT_S, {},
             "近 1 小时报警引擎出错 {n} 次（数据照常存储，报警可能漏判）",
             "{n} alarm engine error(s) in the last hour (readings are stored; alarms may be missed)"),
            ("notification_failures", sum(failed.values()) - base.notify_failed, RECENT_S, {"channels": channels},
             "近 1 小时有 {n} 条报警通知发送失败或有收件人被拒收（通道：{zh_names}）",
             "{n} notification(s) failed or refused for a recipient in the last hour (channels: {names})"),
            ("loop_stalls", m.loop_stalls - stall_base.loop_stalls, STALL_WINDOW_S, {},
             "近 10 分钟网关自身卡顿 {n} 次（主机过载或磁盘阻塞）",
             "the gateway itself stalled {n} time(s) in the last 10 minutes (host overloaded or disk blocked)"),
            # refused as invalid (a field's type changed with a profile, a time beyond the retention policy): kept
            # in rejected.lp, not in the database; the gateway's own writes go on, so nothing else would show it
            ("rejected_lines", m.rejected_lines - base.rejected_lines, RECENT_S, {"file": "rejected.lp"},
             "近 1 小时数据库拒收 {n} 行数据（未入库，保存在缓存目录的 rejected.lp 中）",
             "the database refused {n} line(s) in the last hour (not stored; kept in rejected.lp in the spool "
             "directory)"),
            # at the spool's bound "spool_filling" says so, but a disk that fills below it does not
            ("spool_dropped", gw.spool.dropped_lines - base.dropped_lines, RECENT_S, {"max_bytes": gw.spool.max_bytes},
             "近 1 小时本地缓存已满（达到上限或磁盘已满），丢弃了最早的 {n} 行数据",
             "the spool was full (its bound or the disk) and dropped the oldest {n} line(s) in the last hour"),
            # kept in the state file's uplink_set_aside table; the hub never gets them (after a restart, those set
            # aside before count once more for an hour)
            ("uplink_set_aside", m.uplink_set_aside - base.set_aside, RECENT_S, {"table": "uplink_set_aside"},
             "近 1 小时有 {n} 条事件超过区域平台消息上限，未上传，保存在本站状态文件中",
             "{n} event(s) too large for the regional hub's cluster in the last hour: not sent, kept on this site "
             "(state file table uplink_set_aside)"),
        )  # fmt: skip
        for code, n, window_s, extra, zh, en in recent:
            if n > 0:
                detail = {"count": n, "window_s": window_s, **extra}
                words = {"n": n, "zh_names": "、".join(channels), "names": ", ".join(channels)}
                out.append(_reason(code, detail, zh.format(**words), en.format(**words)))
        return out


def _failed(deliveries: Counter[tuple[str, str]]) -> Counter[str]:
    """Deliveries given up on (retries exhausted or not retryable) or that reached only some of their recipients (a
    mail server refused one: a full mailbox refuses the next alarm too), by channel."""
    return Counter({ch: n for (ch, outcome), n in deliveries.items() if outcome in ("failed", "partial") and n})


_monitors: weakref.WeakKeyDictionary[GatewayParts, SelfMonitor] = weakref.WeakKeyDictionary()


def monitor_of(gw: GatewayParts) -> SelfMonitor:
    mon = _monitors.get(gw)
    if mon is None:
        mon = _monitors[gw] = SelfMonitor(gw)
    return mon


def live_figures(gw: GatewayParts) -> LiveFigures:
    return LiveFigures(
        spool_oldest_age_s=round(gw.spool.oldest_pending_age_s(), 3),
        spool_max_bytes=gw.spool.max_bytes,
        spool_torn_bytes=gw.spool.torn_bytes,
        mqtt_reconnects={s.p.id: s.reconnects for s in gw.sessions},
        mqtt_connected={s.p.id: int(s.connected.is_set()) for s in gw.sessions},
        mqtt_read_windows={s.p.id: s.read_windows for s in gw.sessions},
        mqtt_read_pauses={s.p.id: s.read_pauses for s in gw.sessions},
        mqtt_retained={s.p.id: s.retained for s in gw.sessions},
        mqtt_heartbeats={s.p.id: s.heartbeats for s in gw.sessions},
        devices_total=len(gw.cfg.devices),
    )


def health_report(gw: GatewayParts) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for GET /health: `starting` 503 before the first sweep, else `ready` or `degraded` 200."""
    mon = monitor_of(gw)
    site = gw.cfg.site.id
    if not mon.swept:
        return 503, {"status": "starting", "site": site, "reasons": [], "zh": "网关启动中", "en": "gateway starting"}
    reasons = mon.reasons(time.monotonic())
    if reasons:
        zh, en = (
            "网关降级运行：" + "；".join(r["zh"] for r in reasons),
            "degraded: " + "; ".join(r["en"] for r in reasons),
        )
        return 200, {"status": "degraded", "site": site, "reasons": reasons, "zh": zh, "en": en}
    return 200, {"status": "ready", "site": site, "reasons": [], "zh": "网关运行正常", "en": "gateway ready"}


def site_status(gw: GatewayParts) -> dict[str, Any]:
    """What a regional hub shows of this site between its events: health and its reasons, each device's link."""
    _code, health = health_report(gw)
    m = gw.metrics
    return {
        "name": gw.cfg.site.name or gw.cfg.site.id,
        "health": health["status"],
        "reasons": [r["code"] for r in health["reasons"]],
        "zh": health["zh"],
        "devices": {d.id: bool(m.up.get(d.id, 0)) for d in gw.cfg.devices},
        "uplink_backlog": m.uplink_backlog or 0,
    }


def add_health_routes(app: FastAPI, gw: GatewayParts) -> None:
    """GET /health, open like /healthz (load balancers and the site's monitoring call it without a login)."""
    from fastapi.responses import JSONResponse  # here: a gateway without an HTTP section never loads FastAPI

    # response_model=None: this module's annotations are strings (PEP 563) and JSONResponse is imported locally,
    # so FastAPI could not resolve the return type and /openapi.json answered 500
    @app.get("/health", response_model=None, response_class=JSONResponse)
    def health() -> JSONResponse:
        code, body = health_report(gw)
        return JSONResponse(body, status_code=code, headers={"Cache-Control": "no-store"})


def health_line(gw: GatewayParts, ts_ns: int | None = None) -> str:
    """The `sitegw` line; field names are the contract with the gateway-health Grafana dashboard."""
    m = gw.metrics
    fields: dict[str, float | int | str | bool] = {
        "readings_total": m.readings_in,
        "lines_written_total": m.lines_written,
        "spool_pending_bytes": gw.spool.pending_bytes(),
        "spool_dropped_lines_total": gw.spool.dropped_lines,
        "write_failures_total": m.write_failures,
        "rejected_lines_total": m.rejected_lines,
        "alarm_transitions_total": m.alarm_transitions,
        "loop_stalls_total": m.loop_stalls,
        "mqtt_messages_total": m.mqtt_messages,
        "devices_up": sum(m.up.values()),
        "devices_total": len(gw.cfg.devices),
    }
    return encode_line("sitegw", {"site": gw.cfg.site.id}, fields, ts_ns or time.time_ns())


async def run_selfmon(gw: GatewayParts, period_s: float | None = None) -> None:
    """Sweep every SWEEP_S; every `period_s` (default PERIOD_S) append the `sitegw` line to the spool, so the
    gateway's own figures survive a database outage like the readings do."""
    period = PERIOD_S if period_s is None else period_s
    mon = monitor_of(gw)
    next_line = 0.0
    disk_warned = False
    while True:
        await asyncio.sleep(SWEEP_S)
        now = time.monotonic()
        mon.sweep(now)
        if now < next_line:
            continue
        next_line = now + period
        try:
            # to both sinks where there are two: the region's dashboards read every site's figures centrally
            gw.pipeline.spool.append(health_line(gw).encode(), 1)
        except OSError as err:  # the pipeline meets the same disk and reports it; never stop the gateway here
            if not disk_warned:
                log.error("selfmon: could not append the sitegw line to the spool: %s", err)
                disk_warned = True
