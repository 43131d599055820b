// The overview: device tiles, the alarm banner with sound and acknowledgement, hazards, routing, the survey upload.
import { $, ACKABLE, api, canAck, el, fmt, KEY_QUANTITIES, OPEN_STATES, params, qinfo, S, signed, t, timeOf, UNACKED_STATES, unitSuffix, worstAlarm } from "./core.js";
import { renderHealth } from "./main.js";
import { craneSvg, renderPlan } from "./plan.js";
import { loadBaselines, renderStream, resync } from "./stream.js";
import { compared, loadChart, loadRules, renderDevice } from "./trend.js";
import { alarmSummary, wallRelayout } from "./wall.js";

export function applyStatic() {
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

export function renderAll() {
  applyStatic();
  renderTiles();
  renderBanner();
  renderHazards();
  renderHealth();
  renderPlan();
  if (S.device) renderDevice();
}

export function tileValues(dev) {
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

export function tileStatus(dev) {
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

export function renderTile(dev) {
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

export function renderTiles() {
  if (!S.meta) return;
  $("#tiles").replaceChildren();
  for (const dev of S.meta.devices) renderTile(dev);
  wallRelayout();
}

export function renderBanner() {
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

export function renderHazards() {
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

export function route() {
  const m = /^#\/device\/(.+)$/.exec(location.hash);
  S.device = m ? decodeURIComponent(m[1]) : null;
  $("#overview").hidden = !!S.device || (S.kiosk && params.get("view") === "plan");
  $("#device").hidden = !S.device;
  if (S.device) $("#plan").hidden = true; else renderPlan();
  // baselines may have been set since the last resync (a survey import, a manager): fetched afresh for the page
  if (S.device) { S.chart = null; renderDevice(); Promise.all([loadRules(S.device), loadBaselines()]).then(loadChart); }
}

// ---- alarms: acknowledge and sound ----------------------------------------------------------------------------

export async function ack(id) {
  try {
    const r = await api("POST", `/api/alarms/${id}/ack`, {});
    if (r && r.alarm) setAlarm(r.alarm);
    renderBanner(); renderTiles();
  } catch (e) {
    showError(e.status === 403 ? `${t("forbidden")}: ${e.message}` : `${t("ack_failed")}: ${e.message}`);
  }
}

// a surveyor's report: sent whole as base64 in JSON; a refusal lists every row and column that is wrong
export function showError(msg) {
  const box = $("#error");
  box.textContent = msg;
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

export function setAlarm(a) {
  if (OPEN_STATES.has(a.state) || a.state === "pending") S.alarms.set(a.id, a); else S.alarms.delete(a.id);
}

export function beep() {
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

export function updateSound() {
  const ringing = [...S.alarms.values()].some((a) => UNACKED_STATES.has(a.state) && !a.shelved_until_ns && !a.suppressed_by);
  document.body.dataset.sounding = String(ringing && !S.muted);
  if (ringing && !S.muted) {
    if (!S.beepTimer) { beep(); S.beepTimer = setInterval(beep, 2000); }
  } else if (S.beepTimer) { clearInterval(S.beepTimer); S.beepTimer = 0; }
}

// ---- live stream ----------------------------------------------------------------------------------------------
