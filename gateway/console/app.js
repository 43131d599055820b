// SiteGW live console: login, device tiles, alarm banner with sound and acknowledgement, device history, hazards.
// Plain JS, no framework and no CDN: the site LAN may have no internet. Every visible string is in I18N below.
"use strict";

const I18N = {
  zh: {
    login_title: "登录 SiteGW", username: "用户名", password: "密码", login: "登录", logout: "退出",
    login_failed: "登录失败", devices: "设备", hazards: "隐患", lang_switch: "English",
    mute: "静音", unmute: "取消静音", live: "实时", reconnecting: "连接中断，重连中…", resyncing: "同步中…",
    online: "在线", offline: "离线", no_data: "无数据", ack: "确认", acked: "已确认", ack_needs_officer: "需要安全员权限",
    forbidden: "无权限 (403)", ack_failed: "确认失败", no_alarms: "无活动告警", back: "← 返回",
    threshold: "阈值", source: "依据", value: "值", since: "发生于", by: "确认人",
    change: "累计变化", rate: "速率", baseline: "初始值", history: "近期曲线", minutes: "分钟",
    no_hazards: "无未销号隐患", deadline: "整改期限", days_left: "剩余 {n} 天", overdue: "超期 {n} 天", due_today: "今日到期",
    sound_blocked: "点击页面以启用告警声音", stream_stale: "数据流超时",
    measured: "测于", surveys: "监测数据导入", survey_import: "导入测量成果（CSV / XLSX，整份文件要么全部导入，要么全部拒绝）",
    survey_ok: "已导入 {n} 行：{points}（导入编号 {id}）", survey_refused: "整份文件未导入：",
    row_col: "第 {row} 行，{col} 列：", survey_sending: "正在导入…",
    decode_errors: "解码错误", clock_skew: "时钟偏差",
    gw_degraded: "网关降级运行", gw_unreachable: "无法连接网关",
    page_of: "第 {p}/{n} 页", alarm_count: "告警 {n} 条",
    flag_on: "触发", flag_off: "正常",
    site_plan: "现场平面图", crane_plan: "塔吊平面图", slew: "回转", radius_l: "幅度", hook: "吊钩高度", wind: "风速",
    limit: "限值", load_pct: "载荷", moment_pct: "力矩", reading: "读数", days_trend: "近 30 天（每日末次值）",
    days_rate: "近 30 天变化速率",
  },
  en: {
    login_title: "Sign in to SiteGW", username: "User name", password: "Password", login: "Sign in", logout: "Sign out",
    login_failed: "Sign-in failed", devices: "Devices", hazards: "Hazards", lang_switch: "中文",
    mute: "Mute", unmute: "Unmute", live: "Live", reconnecting: "Connection lost, reconnecting…", resyncing: "Resyncing…",
    online: "online", offline: "offline", no_data: "no data", ack: "Acknowledge", acked: "Acknowledged",
    ack_needs_officer: "needs the officer role", forbidden: "Not allowed (403)", ack_failed: "Acknowledge failed",
    no_alarms: "No active alarms", back: "← Back", threshold: "threshold", source: "source", value: "value",
    since: "since", by: "by", change: "change", rate: "rate", baseline: "baseline", history: "Recent history",
    minutes: "min", no_hazards: "No open hazards", deadline: "deadline", days_left: "{n} days left",
    overdue: "{n} days overdue", due_today: "due today", sound_blocked: "Click the page to enable alarm sound",
    stream_stale: "stream timed out", gw_degraded: "Gateway degraded", gw_unreachable: "Gateway unreachable",
    page_of: "page {p}/{n}", alarm_count: "{n} alarms",
    flag_on: "on", flag_off: "off",
    site_plan: "Site plan", crane_plan: "crane plan view", slew: "Slew", radius_l: "Radius", hook: "Hook height",
    wind: "Wind", limit: "limit", load_pct: "Load", moment_pct: "Moment", reading: "reading",
    days_trend: "Last 30 days (each day's last value)", days_rate: "Rate over the last 30 days",
    measured: "measured", surveys: "Survey import",
    survey_import: "Import survey results (CSV / XLSX; the whole file or nothing)",
    survey_ok: "Imported {n} row(s): {points} (import {id})", survey_refused: "Refused, nothing imported:",
    row_col: "row {row}, column {col}: ", survey_sending: "Importing…",
    decode_errors: "decode errors",
    clock_skew: "clock off",
  },
};

// the values a tile shows per device kind (excavation: every measured point of the device)
const KEY_QUANTITIES = {
  tower_crane: ["load_moment_ratio", "load", "wind_speed", "tilt_x", "tilt_y"],
  formwork: ["settlement", "pole_tilt", "axial_force"],
  gas: ["lel", "o2", "h2s", "co"],
};
const OPEN_STATES = new Set(["active_unacked", "active_acked", "rtn_unacked", "latched"]);
const UNACKED_STATES = new Set(["active_unacked", "rtn_unacked"]);
const ACKABLE = new Set(["active_unacked", "rtn_unacked", "latched"]);
const ROLES = ["viewer", "officer", "manager", "admin"];
const DEPTH = /^(.*?)_d(\d+(?:\.\d+)?)m$/;

const params = new URLSearchParams(location.search);
const S = {
  lang: params.get("lang") || localStorage.getItem("sitegw.lang") || "zh",
  kiosk: params.get("kiosk") === "1",
  muted: localStorage.getItem("sitegw.muted") === "1",
  meta: null, latest: {}, alarms: new Map(), baselines: {}, rates: {}, hazards: [],
  es: null, lastEvent: 0, device: null, chart: null, dirty: new Set(), raf: 0, audio: null, beepTimer: 0,
};

const $ = (sel) => document.querySelector(sel);
// the console's own words, then the gateway's glossary (states, levels, roles, qualities, kinds: one vocabulary
// with the ledger and the API)
function t(key, vars) {
  const g = (S.meta && S.meta.glossary) || {};
  let s = (I18N[S.lang] || I18N.zh)[key] ?? (g[S.lang] || {})[key] ?? I18N.zh[key] ?? (g.zh || {})[key] ?? key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, v);
  return s;
}
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}

// ---- API ------------------------------------------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}
async function api(method, url, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const r = await fetch(url, init);
  if (r.status === 401 && url !== "/api/login") { showLogin(); throw new HttpError(401, "login required"); }
  const data = await r.json().catch(() => null);
  // refusals come in both languages: the console says them in the reader's
  const said = data && (S.lang === "en" ? data.detail : data.detail_zh || data.detail);
  if (!r.ok) throw new HttpError(r.status, (typeof said === "string" && said) || r.statusText);
  return data;
}

// ---- quantities and formatting --------------------------------------------------------------------------------

function qinfo(name) {
  const m = DEPTH.exec(name);
  const base = m ? m[1] : name;
  const q = (S.meta && S.meta.quantities[base]) || { unit: "", zh: base, en: base };
  const label = S.lang === "en" ? q.en : q.zh;
  return { unit: q.unit === "state" ? "" : q.unit, label: m ? `${label} ${m[2]} m` : label, state: q.unit === "state" };
}
function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  const a = Math.abs(v);
  const s = v.toFixed(a >= 1000 ? 0 : a >= 100 ? 1 : 2);
  return /^-0(\.0*)?$/.test(s) ? s.slice(1) : s; // no "-0.00 t" for a hook hanging empty
}
// a value as people read it: on/off states as words (在线 / 离线, 正常 / 触发), measurements with their unit
function shown(q, v) {
  const info = qinfo(q);
  if (!info.state || v === null || v === undefined) return `${fmt(v)}${unitSuffix(info.unit)}`;
  if (q === "up") return v ? t("online") : t("offline");
  return v ? t("flag_on") : t("flag_off");
}
function unitSuffix(u) { return u && u !== "state" ? ` ${u}` : ""; }
function signed(v) { return (v > 0 ? "+" : "") + fmt(v); }
function timeOf(ns) {
  const tz = (S.meta && S.meta.site.timezone) || undefined;
  return new Date(ns / 1e6).toLocaleString(S.lang === "en" ? "en-GB" : "zh-CN", { timeZone: tz, hour12: false });
}
function worstAlarm(device) {
  let worst = null;
  for (const a of S.alarms.values()) {
    if (a.device === device && OPEN_STATES.has(a.state) && (!worst || a.level > worst.level)) worst = a;
  }
  return worst;
}
function canAck() { return S.meta && ROLES.indexOf(S.meta.user.role) >= ROLES.indexOf("officer"); }

// ---- rendering ------------------------------------------------------------------------------------------------

function applyStatic() {
  document.documentElement.lang = S.lang === "en" ? "en" : "zh-CN";
  document.documentElement.classList.toggle("kiosk", S.kiosk);
  document.body.classList.toggle("kiosk", S.kiosk);
  for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  $("#lang").textContent = t("lang_switch");
  $("#logout").textContent = t("logout");
  $("#mute").textContent = S.muted ? t("unmute") : t("mute");
  $("#mute").setAttribute("aria-pressed", String(S.muted));
  if (S.meta) {
    $("#site-name").textContent = S.meta.site.name || S.meta.site.id;
    const u = S.meta.user;
    $("#who").textContent = `${u.display_name || u.name} · ${t(`role_${u.role}`)}`;
  }
  renderStream();
}

function renderAll() {
  applyStatic();
  renderTiles();
  renderBanner();
  renderHazards();
  renderHealth();
  renderPlan();
  if (S.device) renderDevice();
}

function tileValues(dev) {
  const vals = S.latest[dev.id] || {};
  let names = KEY_QUANTITIES[dev.kind];
  if (!names) names = Object.keys(vals).filter((q) => !qinfo(q).state).sort();
  const rows = [];
  for (const q of names) {
    const r = vals[q];
    if (!r && dev.kind !== "gas" && dev.kind !== "tower_crane") continue;
    const info = qinfo(q);
    const attrs = { class: "v", "data-device": dev.id, "data-quantity": q, "data-raw": r ? String(r.value) : "" };
    const base = S.baselines[`${dev.id}/${q}`];
    if (dev.kind === "excavation" && r && base !== undefined && r.value !== null) {
      // cumulative change from the baseline is what GB 50497 limits; the raw reading stays in the title
      const rate = (S.rates[dev.id] || {})[q];
      rows.push(el("div", { class: "row", title: `${fmt(r.value)} ${info.unit}` },
        el("span", { class: "k" }, `${info.label} ${t("change")}`),
        el("span", attrs, `${signed(r.value - base)} ${info.unit}`),
        rate !== undefined && rate !== null ? el("span", { class: "rate" }, `${signed(rate)} ${info.unit}/d`) : null));
    } else {
      const bad = r && r.quality !== "good" ? ` q-${r.quality}` : "";
      rows.push(el("div", { class: "row" + bad },
        el("span", { class: "k" }, info.label),
        el("span", attrs, r ? `${fmt(r.value)} ${info.unit}` : "—")));
    }
  }
  return rows;
}

function tileStatus(dev) {
  const a = worstAlarm(dev.id);
  const latest = S.latest[dev.id] || {};
  const up = latest.up;
  if (a && a.level > 0) return { cls: `lvl-${a.level}`, text: t(`level_${a.level}`) };
  // messages that arrive and do not decode: say so, not "offline" (the cause is the payload or the profile)
  if (latest.decode_errors && latest.decode_errors.value === 1) return { cls: "offline", text: t("decode_errors") };
  if (!up) return { cls: "nodata", text: t("no_data") };
  if (up.value === 0) return { cls: "offline", text: t("offline") };
  if (latest.clock_skew && latest.clock_skew.value === 1) return { cls: "ok", text: t("clock_skew") };
  return { cls: "ok", text: t("online") };
}

function renderTile(dev) {
  const st = tileStatus(dev);
  let tile = document.getElementById(`tile-${dev.id}`);
  if (!tile) {
    // the tile element stays; only its contents are redrawn, so a tap never lands on a replaced node
    tile = el("button", { type: "button", id: `tile-${dev.id}`, "data-device": dev.id,
      onclick: () => { location.hash = `#/device/${encodeURIComponent(dev.id)}`; } });
    $("#tiles").append(tile);
  }
  tile.className = `tile ${st.cls}`;
  tile.replaceChildren(
    el("div", { class: "tile-head" },
      el("span", { class: "dev-id" }, dev.id),
      el("span", { class: "status" }, st.text)),
    el("div", { class: "dev-name" }, [dev.name, dev.zone].filter(Boolean).join(" · ") || t(`kind_${dev.kind}`)),
    dev.kind === "tower_crane"  // values beside the crane seen from above
      ? el("div", { class: "crane-row" }, el("div", { class: "vals" }, tileValues(dev)), el("div", { class: "crane-mini" }, craneSvg(dev, true)))
      : el("div", { class: "vals" }, tileValues(dev)));
}

function renderTiles() {
  if (!S.meta) return;
  $("#tiles").replaceChildren();
  for (const dev of S.meta.devices) renderTile(dev);
  wallRelayout();
}

function renderBanner() {
  const list = [...S.alarms.values()].filter((a) => OPEN_STATES.has(a.state))
    .sort((a, b) => b.level - a.level || (b.raised_ns || 0) - (a.raised_ns || 0));
  const banner = $("#banner");
  banner.className = list.length ? `has-alarms lvl-${list[0].level}` : "";
  if (!list.length) {
    banner.replaceChildren(el("div", { class: "quiet" }, t("no_alarms")));
    updateSound(); wallRelayout(); return;
  }
  banner.replaceChildren(S.kiosk ? alarmSummary(list) : "", ...list.map((a) => {
    const title = S.lang === "en" ? a.title_en : a.title_zh;
    let btn = null;
    if (ACKABLE.has(a.state) && !(a.state === "latched" && a.acked_ns)) {
      btn = canAck()
        ? el("button", { class: "ack control", type: "button", "data-alarm-id": a.id, onclick: () => ack(a.id) }, t("ack"))
        : el("button", { class: "ack control", type: "button", "data-alarm-id": a.id, disabled: true,
          title: t("ack_needs_officer") }, `${t("ack")} (${t("ack_needs_officer")})`);
    }
    return el("div", { class: `alarm lvl-${a.level}`, "data-alarm-id": a.id, "data-state": a.state, "data-rule": a.rule },
      el("span", { class: "lvl" }, t(`level_${a.level}`)),
      el("span", { class: "title" }, title),
      el("span", { class: "dev" }, a.device),
      // the rule's compared value (e.g. % of rated, change from baseline), not always the raw reading's unit
      el("span", { class: "val" }, `${t("value")} ${fmt(a.value)}${unitSuffix(a.unit)}`,
        a.threshold !== null ? ` / ${t("threshold")} ${fmt(a.threshold)}${unitSuffix(a.unit)}` : ""),
      // zh readers see the citation a supervisor knows; the confidence tag stays in the tooltip (details)
      el("span", { class: "src", title: a.source }, `${t("source")}: ${S.lang === "en" ? a.source : a.source_zh || a.source}`),
      el("span", { class: "state" }, t(`state_${a.state}`) + (a.acked_by ? ` · ${t("by")} ${a.acked_by}` : "")),
      el("span", { class: "when" }, a.raised_ns ? `${t("since")} ${timeOf(a.raised_ns)}` : ""),
      // a back-dated survey or buffered data: when it was measured, beside when the gateway raised it
      a.source_ns && a.raised_ns && Math.abs(a.source_ns - a.raised_ns) >= 60e9
        ? el("span", { class: "when measured" }, `${t("measured")} ${timeOf(a.source_ns)}`) : "",
      btn);
  }));
  updateSound();
  wallRelayout();
}

function renderHazards() {
  const open = S.hazards.filter((h) => h.status !== "closed" && h.status !== "dismissed");
  const box = $("#hazard-list");
  if (!open.length) { box.replaceChildren(el("div", { class: "quiet" }, t("no_hazards"))); wallRelayout(); return; }
  const today = new Date(new Date().toLocaleDateString("en-CA", { timeZone: S.meta.site.timezone }));
  box.replaceChildren(...open.map((h) => {
    let clock = null;
    if (h.deadline) {
      const days = Math.round((new Date(h.deadline) - today) / 86400000);
      const text = days > 0 ? t("days_left", { n: days }) : days === 0 ? t("due_today") : t("overdue", { n: -days });
      clock = el("span", { class: `clock ${days < 0 ? "overdue" : days <= 1 ? "soon" : ""}` }, `${t("deadline")} ${h.deadline} · ${text}`);
    }
    return el("div", { class: "hazard", "data-hazard-id": h.id },
      el("span", { class: "hid" }, `#${h.id}`),
      el("span", { class: "hstatus" }, t(`hz_${h.status}`)),
      el("span", { class: "desc" }, [h.device, h.description].filter(Boolean).join(" · ")),
      clock);
  }));
  wallRelayout();
}

// ---- device page with a small SVG history chart ---------------------------------------------------------------

function route() {
  const m = /^#\/device\/(.+)$/.exec(location.hash);
  S.device = m ? decodeURIComponent(m[1]) : null;
  $("#overview").hidden = !!S.device || (S.kiosk && params.get("view") === "plan");
  $("#device").hidden = !S.device;
  if (S.device) $("#plan").hidden = true; else renderPlan();
  // baselines may have been set since the last resync (a survey import, a manager): fetched afresh for the page
  if (S.device) { S.chart = null; renderDevice(); Promise.all([loadRules(S.device), loadBaselines()]).then(loadChart); }
}

// ---- alarms: acknowledge and sound ----------------------------------------------------------------------------

async function ack(id) {
  try {
    const r = await api("POST", `/api/alarms/${id}/ack`, {});
    if (r && r.alarm) setAlarm(r.alarm);
    renderBanner(); renderTiles();
  } catch (e) {
    showError(e.status === 403 ? `${t("forbidden")}: ${e.message}` : `${t("ack_failed")}: ${e.message}`);
  }
}

// a surveyor's report: sent whole as base64 in JSON; a refusal lists every row and column that is wrong
$("#survey-file").addEventListener("change", async (ev) => {
  const file = ev.target.files[0];
  const out = $("#survey-result");
  if (!file) return;
  out.textContent = t("survey_sending");
  const b64 = await new Promise((ok, fail) => {
    const rd = new FileReader();
    rd.onload = () => ok(String(rd.result).split(",", 2)[1] || "");
    rd.onerror = () => fail(rd.error);
    rd.readAsDataURL(file);
  });
  const r = await fetch("/api/surveys", {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ filename: file.name, content_b64: b64 }),
  });
  const data = await r.json().catch(() => ({ detail: r.statusText }));
  out.replaceChildren();
  if (r.ok) {
    out.append(el("p", { class: "ok" }, t("survey_ok", { n: data.rows, points: data.points.join("、"), id: data.import_id })));
  } else {
    out.append(el("p", { class: "err" }, t("survey_refused")));
    const list = el("ul", { class: "err" });
    for (const e of data.errors || [{ row: 0, column: "", message: data.detail, message_zh: data.detail_zh }]) {
      list.append(el("li", {}, (e.row ? t("row_col", { row: e.row, col: e.column }) : "") + (S.lang === "en" ? e.message : e.message_zh || e.message)));
    }
    out.append(list);
  }
  ev.target.value = "";
});


function showError(msg) {
  const box = $("#error");
  box.textContent = msg;
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

function setAlarm(a) {
  if (OPEN_STATES.has(a.state) || a.state === "pending") S.alarms.set(a.id, a); else S.alarms.delete(a.id);
}

function beep() {
  // WebAudio: a short two-tone beep, repeated by updateSound() while unacknowledged alarms exist
  try {
    S.audio = S.audio || new (window.AudioContext || window.webkitAudioContext)();
    if (S.audio.state === "suspended") { S.audio.resume(); if (S.audio.state === "suspended") showError(t("sound_blocked")); }
    const now = S.audio.currentTime;
    for (const [i, f] of [[0, 880], [1, 660]]) {
      const o = S.audio.createOscillator(), g = S.audio.createGain();
      o.frequency.value = f; o.connect(g); g.connect(S.audio.destination);
      g.gain.setValueAtTime(0.25, now + i * 0.25); g.gain.exponentialRampToValueAtTime(0.001, now + i * 0.25 + 0.22);
      o.start(now + i * 0.25); o.stop(now + i * 0.25 + 0.23);
    }
  } catch (e) { /* no audio device: the banner still shows the alarm */ }
}

function updateSound() {
  const ringing = [...S.alarms.values()].some((a) => UNACKED_STATES.has(a.state) && !a.shelved_until_ns && !a.suppressed_by);
  document.body.dataset.sounding = String(ringing && !S.muted);
  if (ringing && !S.muted) {
    if (!S.beepTimer) { beep(); S.beepTimer = setInterval(beep, 2000); }
  } else if (S.beepTimer) { clearInterval(S.beepTimer); S.beepTimer = 0; }
}

// ---- live stream ----------------------------------------------------------------------------------------------

function renderStream() {
  const s = $("#stream-state");
  const state = s.dataset.state;
  s.textContent = state === "live" ? `● ${t("live")}` : state === "resync" ? t("resyncing") : state === "off" ? "" : t("reconnecting");
}
function streamState(state) { $("#stream-state").dataset.state = state; renderStream(); }

async function resync() {
  streamState("resync");
  const [latest, alarms, baselines, hazards] = await Promise.all([
    api("GET", "/api/latest"), api("GET", "/api/alarms?open_only=true"), api("GET", "/api/baselines"), api("GET", "/api/hazards"),
  ]);
  S.latest = latest;
  S.alarms = new Map();
  for (const a of alarms) setAlarm(a);
  setBaselines(baselines);
  S.hazards = hazards;
  await loadRates();
  streamState("live");
  renderAll();
}

function setBaselines(list) {
  S.baselines = {};
  for (const b of list) S.baselines[`${b.device}/${b.quantity}`] = b.value;
}
async function loadBaselines() {
  try { setBaselines(await api("GET", "/api/baselines")); } catch (e) { /* keep the ones we have */ }
}

async function loadRates() {
  for (const dev of S.meta.devices.filter((d) => d.kind === "excavation")) {
    try {
      const h = await api("GET", `/api/history/${encodeURIComponent(dev.id)}?minutes=120`);
      S.rates[dev.id] = Object.fromEntries(h.series.map((s) => [s.quantity, s.rate_per_day]));
    } catch (e) { /* keep the previous rates */ }
  }
}

function connect() {
  if (S.es) S.es.close();
  const es = new EventSource("/api/stream");
  S.es = es;
  es.addEventListener("hello", () => { S.lastEvent = Date.now(); resync().catch(() => streamState("lost")); });
  es.addEventListener("resync", () => { S.lastEvent = Date.now(); resync().catch(() => streamState("lost")); });
  es.addEventListener("heartbeat", () => { S.lastEvent = Date.now(); });
  es.addEventListener("reading", (ev) => {
    S.lastEvent = Date.now();
    for (const [dev, q, value, ts, quality] of JSON.parse(ev.data)) {
      const d = S.latest[dev] || (S.latest[dev] = {});
      const prev = d[q];
      if (!prev || prev.ts_ns <= ts) d[q] = { value, ts_ns: ts, quality };
      if (S.chart && S.device === dev && S.chart.quantity === q && value !== null) S.chart.points.push([ts / 1e6, value]);
      S.dirty.add(dev);
    }
    schedule();
  });
  es.addEventListener("alarm", (ev) => {
    S.lastEvent = Date.now();
    const e = JSON.parse(ev.data);
    setAlarm(e.alarm);
    renderBanner();
    S.dirty.add(e.alarm.device);
    schedule();
  });
  es.onerror = () => {
    streamState("lost");
    // EventSource retries by itself, except after an HTTP error (e.g. 401 when the session expired)
    if (es.readyState === EventSource.CLOSED) {
      api("GET", "/api/me").then(() => setTimeout(connect, 3000)).catch(() => {});
    }
  };
}

function schedule() {
  if (S.raf) return;
  // coalesce a burst of readings into one repaint per frame (and at most every 250 ms)
  S.raf = setTimeout(() => {
    S.raf = 0;
    for (const id of S.dirty) {
      const dev = S.meta.devices.find((d) => d.id === id);
      if (dev) renderTile(dev);
    }
    if (S.device && S.dirty.has(S.device)) renderDevice();
    if (S.meta.plan && [...S.dirty].some((id) => (S.meta.devices.find((d) => d.id === id) || {}).position)) renderPlan();
    S.dirty.clear();
    wallRelayout();  // a tile that grew may no longer fit its page
  }, 100);
}

// ---- login and start ------------------------------------------------------------------------------------------

function showLogin() {
  if (S.es) { S.es.close(); S.es = null; }
  document.body.dataset.loggedIn = "0";  // no 退出, 静音 or user name before anyone logged in
  streamState("off");
  $("#main").hidden = true;
  $("#login").hidden = false;
  applyStatic();
}

async function start() {
  try {
    S.meta = await api("GET", "/api/console");
  } catch (e) {
    if (e.status !== 401) showError(e.message);
    return;
  }
  $("#login").hidden = true;
  $("#main").hidden = false;
  document.body.dataset.loggedIn = "1";
  document.body.dataset.role = S.meta.user.role;
  $("#surveys").hidden = S.kiosk || !canAck();  // officers and above bring in surveyors' results
  renderAll();
  route();
  connect();
  loadHealth();
  wallStart();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const err = $("#login-error");
  err.hidden = true;
  try {
    await api("POST", "/api/login", { username: f.get("username"), password: f.get("password") });
    ev.target.reset();
    await start();
  } catch (e) {
    err.textContent = `${t("login_failed")}: ${e.message}`;
    err.hidden = false;
  }
});
$("#lang").addEventListener("click", () => {
  S.lang = S.lang === "en" ? "zh" : "en";
  localStorage.setItem("sitegw.lang", S.lang);
  renderAll();
});
$("#mute").addEventListener("click", () => {
  S.muted = !S.muted;
  localStorage.setItem("sitegw.muted", S.muted ? "1" : "0");
  applyStatic();
  updateSound();
});
$("#logout").addEventListener("click", async () => {
  try { await api("POST", "/api/logout"); } catch (e) { /* already logged out */ }
  S.meta = null;
  showLogin();
});
// browsers start audio only after a user gesture: the first click anywhere unlocks the beep
document.addEventListener("click", () => { if (S.audio && S.audio.state === "suspended") S.audio.resume(); });
window.addEventListener("hashchange", route);
setInterval(() => {
  $("#clock").textContent = S.meta ? timeOf(Date.now() * 1e6) : "";
  // heartbeats come every heartbeat_s: two missed ones mean the stream is dead even if the socket looks open
  if (S.es && S.meta && Date.now() - S.lastEvent > 2.5 * S.meta.heartbeat_s * 1000) { streamState("lost"); connect(); }
}, 1000);
// the gateway's own state (/health): a failing task, a full disk, a database down show here in words, whatever
// else still works; the alarm banner above cannot say it when the alarm database is what failed
async function loadHealth() {
  let body;
  try {
    const r = await fetch("/health", { cache: "no-store" });
    body = await r.json();
  } catch (e) {
    body = { status: "unreachable", reasons: [] };
  }
  S.health = body;
  renderHealth();
}
function renderHealth() {
  const box = $("#gw-health"), body = S.health;
  if (!body || body.status === "ready" || body.status === "starting") { box.hidden = true; return; }
  const title = body.status === "unreachable" ? t("gw_unreachable") : t("gw_degraded");
  box.replaceChildren(el("strong", {}, title), ...(body.reasons || []).map((r) => el("div", {}, S.lang === "en" ? r.en : r.zh)));
  box.dataset.status = body.status;
  box.hidden = false;
}
setInterval(() => { if (S.meta) loadHealth(); }, 5000);
setInterval(() => { if (S.meta) api("GET", "/api/hazards").then((h) => { S.hazards = h; renderHazards(); }).catch(() => {}); }, 30000);
setInterval(() => { if (S.meta) loadRates().then(() => S.dirty.size || renderTiles()); }, 60000);
applyStatic();
start();
