// Drawings from live readings: a tower crane seen from above (jib at its slew angle, trolley at its radius, load and
// moment against the chart), and the site plan with every placed device and each crane's jib. An ES module.
import { $, api, fmt, params, S, t, worstAlarm } from "./core.js";
import { tileStatus } from "./tiles.js";

export const SVGNS = "http://www.w3.org/2000/svg";

export function svgEl(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, v);
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}
export function num(vals, q) {
  const r = vals && vals[q];
  return r && r.value !== null && r.quality !== "bad" ? r.value : null;
}
// slew as the sensor counts it may run past ±360° (the cable loom unwinds later); drawn modulo a turn
export function slewOf(vals) { const s = num(vals, "slew_angle"); return s === null ? null : ((s % 360) + 360) % 360; }

// A bar from 0 to 120 % with marks at 90 % (预警) and 100 % (报警), for load and moment as % of the chart.
export function ratioBar(y, label, pct) {
  const w = 200, x0 = -100, full = 120;
  const at = (p) => x0 + (Math.max(0, Math.min(full, p)) / full) * w;
  const cls = pct === null ? "" : pct >= 100 ? "lvl-2" : pct >= 90 ? "lvl-1" : "ok";
  return svgEl("g", { class: `bar ${cls}`, "data-bar": label },
    svgEl("rect", { x: x0, y, width: w, height: 9, class: "track" }),
    pct === null ? null : svgEl("rect", { x: x0, y, width: at(pct) - x0, height: 9, class: "fill" }),
    svgEl("line", { x1: at(90), x2: at(90), y1: y - 2, y2: y + 11, class: "mark" }),
    svgEl("line", { x1: at(100), x2: at(100), y1: y - 2, y2: y + 11, class: "mark m100" }),
    svgEl("text", { x: x0, y: y - 3 }, `${t(label)} ${pct === null ? "—" : fmt(pct) + " %"}`));
}

// The crane from above. 0° points up (the drawing's north), clockwise, as slew sensors count.
export function craneSvg(dev, mini) {
  const vals = S.latest[dev.id] || {};
  // the jib is 100 drawing units long; without a known length (no jib_length_m, no load chart) the trolley is placed
  // on a 60 m scale and the label says the length is unknown
  const L = dev.jib_length_m || Math.max(60, num(vals, "radius") || 0);
  const k = 100 / L; // metres to drawing units
  const slew = slewOf(vals), r = num(vals, "radius"), hook = num(vals, "hook_height"), wind = num(vals, "wind_speed");
  const a = worstAlarm(dev.id);
  const svg = svgEl("svg", {
    viewBox: mini ? "-112 -112 224 224" : "-112 -112 224 300", class: `crane ${a && a.level ? `lvl-${a.level}` : ""}`,
    "data-device": dev.id, "data-slew": slew === null ? "" : slew.toFixed(2), "data-radius": r === null ? "" : r.toFixed(2),
    role: "img", "aria-label": `${dev.id} ${t("crane_plan")}`,
  });
  svg.append(
    svgEl("circle", { r: 100, class: "reach" }),
    svgEl("g", { class: "jib", transform: `rotate(${slew === null ? 0 : slew.toFixed(2)})`, opacity: slew === null ? 0.35 : 1 },
      svgEl("line", { x1: 0, y1: 0, x2: 0, y2: -100, class: "boom" }),
      svgEl("line", { x1: 0, y1: 0, x2: 0, y2: 30, class: "counter" }),
      svgEl("rect", { x: -9, y: 24, width: 18, height: 10, class: "weight" }),
      r === null ? null : svgEl("rect", { x: -6, y: (-r * k - 4).toFixed(2), width: 12, height: 8, class: "trolley" })),
    svgEl("rect", { x: -6, y: -6, width: 12, height: 12, class: "mast" }));
  if (!mini) {
    const line = (y, text) => svgEl("text", { x: -110, y, class: "lbl" }, text);
    svg.append(
      line(-98, `${t("slew")} ${slew === null ? "—" : fmt(slew) + "°"}`),
      line(-86, `${t("radius_l")} ${r === null ? "—" : fmt(r) + " m"}` + (dev.jib_length_m ? ` / ${fmt(L)} m` : "")),
      line(-74, `${t("hook")} ${hook === null ? "—" : fmt(hook) + " m"}`),
      line(-62, `${t("wind")} ${wind === null ? "—" : fmt(wind) + " m/s"}` +
        (dev.wind_limit_ms ? ` (${t("limit")} ${fmt(dev.wind_limit_ms)} m/s)` : "")),
      ratioBar(135, "load_pct", num(vals, "load_ratio")),
      ratioBar(165, "moment_pct", num(vals, "load_moment_ratio")));
  }
  return svg;
}

// The site plan: the drawing (or a 10 m grid), every placed device coloured by its state, each crane's reach and
// jib; a click opens the device.
export function planSvg() {
  const plan = S.meta && S.meta.plan;
  if (!plan) return null;
  const W = plan.width_m, H = plan.height_m, u = Math.max(W, H) / 100; // one drawing unit in metres
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "siteplan", preserveAspectRatio: "xMidYMid meet" });
  if (plan.image) svg.append(svgEl("image", { href: "/api/plan/image", x: 0, y: 0, width: W, height: H, preserveAspectRatio: "none" }));
  else {
    for (let x = 0; x <= W; x += 10) svg.append(svgEl("line", { x1: x, x2: x, y1: 0, y2: H, class: "grid" }));
    for (let y = 0; y <= H; y += 10) svg.append(svgEl("line", { x1: 0, x2: W, y1: y, y2: y, class: "grid" }));
  }
  for (const dev of S.meta.devices.filter((d) => d.position)) {
    const { x_m: x, y_m: y } = dev.position;
    const st = tileStatus(dev);
    const g = svgEl("g", { class: `pt ${st.cls}`, "data-device": dev.id, tabindex: 0 });
    g.addEventListener("click", () => { location.hash = `#/device/${encodeURIComponent(dev.id)}`; });
    if (dev.kind === "tower_crane") {
      const vals = S.latest[dev.id] || {};
      const slew = slewOf(vals), r = num(vals, "radius");
      // without a known jib length: the direction only, as long as the trolley's radius (no reach circle)
      const L = dev.jib_length_m || Math.max(r || 0, u * 8);
      if (dev.jib_length_m) g.append(svgEl("circle", { cx: x, cy: y, r: L, class: "reach" }));
      if (slew !== null) {
        const rad = (slew * Math.PI) / 180, dx = Math.sin(rad), dy = -Math.cos(rad);
        g.append(svgEl("line", { x1: x, y1: y, x2: x + dx * L, y2: y + dy * L, class: "jib" }));
        if (r !== null) g.append(svgEl("circle", { cx: x + dx * r, cy: y + dy * r, r: u * 0.8, class: "trolley" }));
      }
    }
    g.append(svgEl("circle", { cx: x, cy: y, r: u * 1.2, class: "dot" }),
      svgEl("text", { x: x + u * 1.6, y: y + u * 0.6, style: `font-size:${(u * 2.2).toFixed(2)}px` }, dev.id));
    svg.append(g);
  }
  return svg;
}

export function renderPlan() {
  const box = $("#plan");
  if (!box) return;
  const svg = planSvg();
  box.hidden = !svg || !!S.device || (S.kiosk && params.get("view") !== "plan");
  if (svg) $("#plan-view").replaceChildren(svg);
}
