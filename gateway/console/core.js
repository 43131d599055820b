// What every part of the console shares: its state, the DOM and text helpers, the API client, value formats.
import { I18N } from "./i18n.js";
import { showLogin } from "./main.js";

export const KEY_QUANTITIES = {
  tower_crane: ["load_moment_ratio", "load", "wind_speed", "tilt_x", "tilt_y"],
  formwork: ["settlement", "pole_tilt", "axial_force"],
  gas: ["lel", "o2", "h2s", "co"],
};
export const OPEN_STATES = new Set(["active_unacked", "active_acked", "rtn_unacked", "latched"]);
export const UNACKED_STATES = new Set(["active_unacked", "rtn_unacked"]);
export const ACKABLE = new Set(["active_unacked", "rtn_unacked", "latched"]);
export const ROLES = ["viewer", "officer", "manager", "admin"];
export const DEPTH = /^(.*?)_d(\d+(?:\.\d+)?)m$/;

export const params = new URLSearchParams(location.search);
export const S = {
  lang: params.get("lang") || localStorage.getItem("sitegw.lang") || "zh",
  kiosk: params.get("kiosk") === "1",
  muted: localStorage.getItem("sitegw.muted") === "1",
  meta: null, latest: {}, alarms: new Map(), baselines: {}, rates: {}, hazards: [],
  es: null, retry: 0, lastEvent: 0, device: null, chart: null, dirty: new Set(), raf: 0, audio: null, beepTimer: 0,
};

export const $ = (sel) => document.querySelector(sel);
// the console's own words, then the gateway's glossary (states, levels, roles, qualities, kinds: one vocabulary
// with the ledger and the API)
export function t(key, vars) {
  const g = (S.meta && S.meta.glossary) || {};
  let s = (I18N[S.lang] || I18N.zh)[key] ?? (g[S.lang] || {})[key] ?? I18N.zh[key] ?? (g.zh || {})[key] ?? key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, v);
  return s;
}
export function el(tag, attrs, ...kids) {
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

export class HttpError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}
export async function api(method, url, body) {
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

export function qinfo(name) {
  const m = DEPTH.exec(name);
  const base = m ? m[1] : name;
  const q = (S.meta && S.meta.quantities[base]) || { unit: "", zh: base, en: base };
  const label = S.lang === "en" ? q.en : q.zh;
  return { unit: q.unit === "state" ? "" : q.unit, label: m ? `${label} ${m[2]} m` : label, state: q.unit === "state" };
}
export function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  const a = Math.abs(v);
  const s = v.toFixed(a >= 1000 ? 0 : a >= 100 ? 1 : 2);
  return /^-0(\.0*)?$/.test(s) ? s.slice(1) : s; // no "-0.00 t" for a hook hanging empty
}
// a value as people read it: on/off states as words (在线 / 离线, 正常 / 触发), measurements with their unit
export function shown(q, v) {
  const info = qinfo(q);
  if (!info.state || v === null || v === undefined) return `${fmt(v)}${unitSuffix(info.unit)}`;
  if (q === "up") return v ? t("online") : t("offline");
  return v ? t("flag_on") : t("flag_off");
}
export function unitSuffix(u) { return u && u !== "state" ? ` ${u}` : ""; }
export function signed(v) { return (v > 0 ? "+" : "") + fmt(v); }
export function timeOf(ns) {
  const tz = (S.meta && S.meta.site.timezone) || undefined;
  return new Date(ns / 1e6).toLocaleString(S.lang === "en" ? "en-GB" : "zh-CN", { timeZone: tz, hour12: false });
}
export function worstAlarm(device) {
  let worst = null;
  for (const a of S.alarms.values()) {
    if (a.device === device && OPEN_STATES.has(a.state) && (!worst || a.level > worst.level)) worst = a;
  }
  return worst;
}
export function canAck() { return S.meta && ROLES.indexOf(S.meta.user.role) >= ROLES.indexOf("officer"); }

// ---- rendering ------------------------------------------------------------------------------------------------
