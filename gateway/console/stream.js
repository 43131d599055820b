// The live stream (SSE) and what it keeps fresh: latest values, alarms, baselines and rates; resync when behind.
import { $, api, S, t } from "./core.js";
import { start } from "./main.js";
import { renderPlan } from "./plan.js";
import { renderAll, renderBanner, renderTile, setAlarm } from "./tiles.js";
import { renderDevice } from "./trend.js";
import { wallRelayout } from "./wall.js";

export function renderStream() {
  const s = $("#stream-state");
  const state = s.dataset.state;
  const why = S.streamWhy || {};  // the gateway's refusal of the stream (429: too many open), in the reader's language
  const refused = (S.lang === "en" ? why.detail : why.detail_zh || why.detail) || t("reconnecting");
  s.textContent = state === "live" ? `● ${t("live")}` : state === "resync" ? t("resyncing") : state === "off" ? ""
    : state === "refused" ? `${refused} ${t("retrying")}` : t("reconnecting");
}
export function streamState(state) { $("#stream-state").dataset.state = state; renderStream(); }

export async function resync() {
  streamState("resync");
  const [latest, alarms, baselines, hazards] = await Promise.all([
    api("GET", "/api/latest"), api("GET", "/api/alarms?open_only=true"), api("GET", "/api/baselines"), api("GET", "/api/hazards"),
  ]);
  // Readings that came on the stream while the snapshot was on its way are newer than it: keep them. A device's
  // `up` is sent once, when it changes, so one replaced by the older snapshot stayed "no data" until the next change.
  for (const [dev, qs] of Object.entries(S.latest)) {
    const d = latest[dev] || (latest[dev] = {});
    for (const [q, r] of Object.entries(qs)) if (!d[q] || d[q].ts_ns < r.ts_ns) d[q] = r;
  }
  S.latest = latest;
  S.alarms = new Map();
  for (const a of alarms) setAlarm(a);
  setBaselines(baselines);
  S.hazards = hazards;
  await loadRates();
  streamState("live");
  renderAll();
}

export function setBaselines(list) {
  S.baselines = {};
  for (const b of list) S.baselines[`${b.device}/${b.quantity}`] = b.value;
}
export async function loadBaselines() {
  try { setBaselines(await api("GET", "/api/baselines")); } catch (e) { /* keep the ones we have */ }
}

export async function loadRates() {
  for (const dev of S.meta.devices.filter((d) => d.kind === "excavation")) {
    try {
      const h = await api("GET", `/api/history/${encodeURIComponent(dev.id)}?minutes=120`);
      S.rates[dev.id] = Object.fromEntries(h.series.map((s) => [s.quantity, s.rate_per_day]));
    } catch (e) { /* keep the previous rates */ }
  }
}

export function connect() {
  if (S.es) S.es.close();
  clearTimeout(S.retry);  // one retry pending at most, whoever called (the stale-stream watchdog in main.js too)
  S.lastEvent = Date.now();  // a new stream has its heartbeats' time before the watchdog calls it dead
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
    if (S.es !== es) return;  // a stream already replaced
    if ($("#stream-state").dataset.state !== "refused") streamState("lost");  // (a refusal stays said while retried)
    // EventSource retries by itself, except after an HTTP error (401 when the session expired, 429 when the user or
    // the gateway has too many streams open), whose status it does not give: asked again, the reason is said
    if (es.readyState === EventSource.CLOSED) {
      const again = () => { if (S.es === es) S.retry = setTimeout(connect, 3000); };
      whyRefused().then((why) => {
        if (S.es !== es) return;
        if (why && why.status === 401) return api("GET", "/api/me").catch(() => {});  // (shows the login)
        if (why) { S.streamWhy = why.data; streamState("refused"); }
        again();
      }, again);  // (the gateway out of reach: tried again)
    }
  };
}

// The refusal of /api/stream (its status and JSON body), asked with fetch; null when it opens (there is room again):
// that stream is closed at once and the next `connect` opens the console's own
async function whyRefused() {
  const ctl = new AbortController();
  const r = await fetch("/api/stream", { credentials: "same-origin", signal: ctl.signal });
  if (r.ok) { ctl.abort(); return null; }
  return { status: r.status, data: await r.json().catch(() => ({})) };
}

export function schedule() {
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
