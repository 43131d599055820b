// The console's entry point: login and logout, start-up, health, the timers; it loads every other module.
import { $, api, canAck, el, S, t, timeOf } from "./core.js";
import { connect, loadRates, streamState } from "./stream.js";
import { slewOf } from "./plan.js";
import { ack, applyStatic, beep, renderAll, renderHazards, renderTiles, route, showError, updateSound } from "./tiles.js";
import { wallFlip, wallLayout, wallStart } from "./wall.js";
import { loadNotices } from "./notices.js";

export function showLogin() {
  if (S.es) { S.es.close(); S.es = null; }
  document.body.dataset.loggedIn = "0";  // no 退出, 静音 or user name before anyone logged in
  streamState("off");
  $("#main").hidden = true;
  $("#login").hidden = false;
  applyStatic();
}

export async function start() {
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
  loadNotices();
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
export async function loadHealth() {
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
export function renderHealth() {
  const box = $("#gw-health"), body = S.health;
  if (!body || body.status === "ready" || body.status === "starting") { box.hidden = true; return; }
  const title = body.status === "unreachable" ? t("gw_unreachable") : t("gw_degraded");
  box.replaceChildren(el("strong", {}, title), ...(body.reasons || []).map((r) => el("div", {}, S.lang === "en" ? r.en : r.zh)));
  box.dataset.status = body.status;
  box.hidden = false;
}
setInterval(() => { if (S.meta) loadHealth(); }, 5000);
setInterval(() => { if (S.meta) api("GET", "/api/hazards").then((h) => { S.hazards = h; renderHazards(); }).catch(() => {}); }, 30000);
setInterval(() => { if (S.meta) loadNotices(); }, 15000);
setInterval(() => { if (S.meta) loadRates().then(() => S.dirty.size || renderTiles()); }, 60000);
applyStatic();
start();

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
    const skipped = Object.keys(data.sheets_skipped || {});
    if (skipped.length) out.append(el("p", { class: "err" }, t("survey_skipped", { sheets: skipped.join("、") })));
  } else {
    out.append(el("p", { class: "err" }, t("survey_refused")));
    const list = el("ul", { class: "err" });
    for (const e of data.errors || [{ row: 0, column: "", message: data.detail, message_zh: data.detail_zh }]) {
      const where = (e.sheet ? t("sheet_of", { sheet: e.sheet }) : "") + (e.row ? t("row_col", { row: e.row, col: e.column }) : "");
      list.append(el("li", {}, where + (S.lang === "en" ? e.message : e.message_zh || e.message)));
    }
    out.append(list);
  }
  ev.target.value = "";
});

// handles for the browser tests and for a technician at the browser's console (modules keep their names private)
Object.assign(window, { S, api, ack, showError, wallFlip, wallLayout, slewOf });
