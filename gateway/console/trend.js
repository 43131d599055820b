// The device page: every value (the one the rules compare beside the raw one), and the recent trend of the chosen
// quantity drawn against the alarm lines the device's rules put on it. An ES module.
import { $, api, el, fmt, KEY_QUANTITIES, qinfo, S, shown, signed, t, timeOf, unitSuffix } from "./core.js";
import { craneSvg, svgEl } from "./plan.js";
import { tileStatus } from "./tiles.js";

export const DEPTH_KEY = /^(.*?)_d(\d+(?:\.\d+)?)m$/;
// quantities in reading order: inclinometer depths by depth (2 m, 4 m, 10 m), not as text (10 m before 2 m)
export function byQuantity(a, b) {
  const ma = DEPTH_KEY.exec(a), mb = DEPTH_KEY.exec(b);
  if (ma && mb && ma[1] === mb[1]) return Number(ma[2]) - Number(mb[2]);
  return (ma ? ma[1] : a).localeCompare(mb ? mb[1] : b) || a.localeCompare(b);
}
export function baseOf(q) { const m = DEPTH_KEY.exec(q); return m ? m[1] : q; }

// an excavation point compares the change from its baseline (初始值): that is what is drawn and shown first
export function compared(dev, q) {
  const base = S.baselines[`${dev.id}/${q}`] ?? S.baselines[`${dev.id}/${baseOf(q)}`];
  return dev.kind === "excavation" && base !== undefined ? base : null;
}

export async function loadRules(device) {
  S.rules = S.rules || {};
  if (S.rules[device]) return;
  try { S.rules[device] = (await api("GET", `/api/rules?device=${encodeURIComponent(device)}`))[device] || []; }
  catch (e) { S.rules[device] = []; }
}

// The alarm lines of a quantity on a device, in the units the chart shows: [{level, value}]; `rate`: the lines of
// its rate rules (per day) instead
export function alarmLines(dev, q, rate = false) {
  const out = [];
  const base = baseOf(q);
  for (const rule of (S.rules && S.rules[dev.id]) || []) {
    if (rule.quantity !== base && rule.quantity !== q) continue;
    const isRate = rule.measure === "rate_per_day" || rule.measure === "rate_percent_of_warning";
    if (isRate !== rate) continue;
    for (const th of rule.thresholds) {
      if (th.value === null || th.value === undefined) continue;
      let v = null;
      if (rule.measure === "value" || rule.measure === "window_mean" || rule.measure === "rate_per_day") v = th.value;
      else if (rule.measure === "rate_percent_of_warning") {
        const w = (dev.warning || {})[base];
        if (w && w.rate) v = (th.value / 100) * w.rate;
      } else if (rule.measure === "percent_of_design" && (dev.design_values || {})[base]) v = (th.value / 100) * dev.design_values[base];
      else if (rule.measure === "change_from_baseline" && compared(dev, q) !== null) v = th.value;
      else if (rule.measure === "percent_of_warning" && compared(dev, q) !== null) {
        const w = (dev.warning || {})[base];
        if (w && w.cumulative) v = (th.value / 100) * w.cumulative;
      }
      if (v !== null) out.push({ level: th.level, value: v });
      if (v !== null && rule.direction === "abs") out.push({ level: th.level, value: -v });
    }
  }
  // two rules may put the same line (the moment alarm and the limiter's check at 110 %): drawn once
  const seen = new Set();
  return out.filter((l) => { const k = `${l.level}/${l.value}`; if (seen.has(k)) return false; seen.add(k); return true; });
}

export function renderDevice() {
  const dev = S.meta && S.meta.devices.find((d) => d.id === S.device);
  if (!dev) return;
  const vals = S.latest[dev.id] || {};
  const rows = Object.keys(vals).sort(byQuantity).map((q) => {
    const info = qinfo(q);
    const r = vals[q];
    const base = compared(dev, q);
    const cell = base !== null && r.value !== null
      ? [el("span", { class: "chg" }, `${t("change")} ${signed(r.value - base)}${unitSuffix(info.unit)}`),
        el("span", { class: "raw" }, ` (${t("reading")} ${shown(q, r.value)})`)]
      : [shown(q, r.value)];
    return el("tr", { class: S.chart && S.chart.quantity === q ? "sel" : "", onclick: () => { S.chart = { quantity: q, points: [] }; loadChart(); } },
      el("td", {}, info.label), el("td", { class: "v", "data-device": dev.id, "data-quantity": q, "data-raw": String(r.value) }, ...cell),
      el("td", { class: `q-${r.quality}` }, t(`q_${r.quality}`)), el("td", {}, timeOf(r.ts_ns)));
  });
  const q = S.chart && S.chart.quantity;
  $("#device").replaceChildren(
    el("button", { class: "back control", type: "button", onclick: () => { location.hash = ""; } }, t("back")),
    el("h2", {}, `${dev.id} ${dev.name || ""}`, el("small", {}, ` ${t(`kind_${dev.kind}`)} ${dev.zone || ""}`)),
    el("div", { class: "tile-like" }, tileStatus(dev).text),
    dev.kind === "tower_crane" ? el("div", { class: "crane-big" }, craneSvg(dev, false)) : "",
    // a surveyed point has no last hour to show: its days follow
    ...(q && S.chart.days && S.chart.points.length < 2 ? [] : [
      el("h3", { class: "history" }, `${t("history")} (${chartMinutes(dev)} ${t("minutes")})${q ? " · " + qinfo(q).label + (compared(dev, q) !== null ? ` · ${t("change")}` : "") : ""}`),
      el("div", { id: "chart" }, q ? chartSvg(dev, q, S.chart.points) : "")]),
    ...(q && S.chart.days ? [
      el("h3", {}, `${t("days_trend")} · ${qinfo(q).label}${compared(dev, q) !== null ? ` · ${t("change")}` : ""}`),
      el("div", { id: "chart-days" }, chartSvg(dev, q, S.chart.days, { days: true })),
      el("h3", {}, `${t("days_rate")} · ${qinfo(q).label}`),
      el("div", { id: "chart-rate" }, chartSvg(dev, q, dailyRates(S.chart.days), { days: true, rate: true })),
    ] : []),
    el("table", { class: "values" }, el("tbody", {}, rows)));
}

// a concrete pour lasts hours: a formwork point shows the whole window the gateway keeps (2 h), others the last hour
export function chartMinutes(dev) { return dev.kind === "formwork" ? 120 : 60; }

export async function loadChart() {
  const dev = S.meta && S.meta.devices.find((d) => d.id === S.device);
  if (!dev) return;
  const q = (S.chart && S.chart.quantity) || (KEY_QUANTITIES[dev.kind] || Object.keys(S.latest[dev.id] || {}).filter((x) => x !== "up").sort(byQuantity))[0];
  if (!q) return;
  try {
    const h = await api("GET", `/api/history/${encodeURIComponent(dev.id)}?quantity=${encodeURIComponent(q)}&minutes=${chartMinutes(dev)}`);
    S.chart = { quantity: q, points: h.series[0].points.map((p) => [p[0] / 1e6, p[1]]) };
  } catch (e) { S.chart = { quantity: q, points: [] }; }
  if (dev.kind === "excavation") {  // judged over days (GB 50497): the last value of each day, 30 days
    try {
      const tr = await api("GET", `/api/trend/${encodeURIComponent(dev.id)}?quantity=${encodeURIComponent(q)}&days=30`);
      S.chart.days = tr.points.map((p) => [p[0] / 1e6, p[1]]);
    } catch (e) { S.chart.days = []; }
  }
  renderDevice();
}

// The trend against its alarm lines: the y range takes the lines in, so the headroom to 报警 is what one sees.
export function chartSvg(dev, q, points, opts = {}) {
  const W = 600, H = 220, L = 64, R = 70, T = 10, B = 24; // margins: y labels left, line labels right, times below
  const unit = unitSuffix(qinfo(q).unit) + (opts.rate ? "/d" : "");
  const base = opts.rate ? null : compared(dev, q);  // a rate is the same from any baseline
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", "data-quantity": q, "data-points": points.length });
  const pts = points.filter((p) => p[1] !== null).map((p) => [p[0], base !== null ? p[1] - base : p[1]]);
  if (pts.length < (opts.days ? 1 : 2)) { svg.append(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, t("no_data"))); return svg; }
  const lines = alarmLines(dev, q, !!opts.rate);
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || x0 + 1;
  let y0 = Math.min(...ys, ...lines.map((l) => l.value)), y1 = Math.max(...ys, ...lines.map((l) => l.value));
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const sx = (x) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const loc = S.lang === "en" ? "en-GB" : "zh-CN", tz = S.meta.site.timezone;
  const hm = opts.days
    ? (ms) => new Date(ms).toLocaleDateString(loc, { month: "numeric", day: "numeric", timeZone: tz })
    : (ms) => new Date(ms).toLocaleTimeString(loc, { hour12: false, timeZone: tz });
  for (const l of lines) {
    const y = sy(l.value).toFixed(1);
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: y, y2: y, class: `alarm-line lvl-${l.level}`, "data-level": l.level, "data-value": l.value }),
      svgEl("text", { x: W - R + 4, y: Number(y) + 4, class: `lbl lvl-${l.level}` }, `${t(`level_${l.level}`)} ${fmt(l.value)}`));
  }
  svg.append(
    svgEl("polyline", { fill: "none", stroke: "currentColor", "stroke-width": 2, points: pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ") }),
    ...(opts.days ? pts.map((p) => svgEl("circle", { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 3, class: "day" })) : []),
    svgEl("text", { x: L - 4, y: T + 10, "text-anchor": "end" }, `${fmt(y1)}${unit}`),
    svgEl("text", { x: L - 4, y: H - B, "text-anchor": "end" }, `${fmt(y0)}${unit}`),
    svgEl("text", { x: L, y: H - 6, class: "tx" }, hm(x0)),
    svgEl("text", { x: W - R, y: H - 6, "text-anchor": "end", class: "tx" }, hm(x1)));
  return svg;
}

// the change per day between consecutive days' values (a survey's rate, GB 50497 practice), at the later day
export function dailyRates(days) {
  const out = [];
  for (let i = 1; i < days.length; i++) {
    const dt = (days[i][0] - days[i - 1][0]) / 86400000;
    if (dt > 0 && days[i][1] !== null && days[i - 1][1] !== null) out.push([days[i][0], (days[i][1] - days[i - 1][1]) / dt]);
  }
  return out;
}
