// Wall screen (?kiosk=1): alarms, device tiles and hazards laid out to the screen; what does not fit is paged with a
// page indicator, never cut off or scrolled (nobody touches a wall screen). An ES module.
import { $, el, params, S, shown, t } from "./core.js";
import { start } from "./main.js";

export const WALL = {
  page: { banner: 0, tiles: 0, hazards: 0 },
  pages: { banner: 1, tiles: 1, hazards: 1 },
  pageMs: Math.max(1, Number(params.get("page_s")) || 10) * 1000,
  timer: 0, raf: 0,
};

// Show `items` from `start` on; hide those before it and every one from the first that does not fit inside `box`
// (one layout pass). Returns the index after the last one shown; at least one is shown, so nothing stalls.
export function fitFrom(box, items, start) {
  items.forEach((e, i) => { e.hidden = i < start; });
  const bottom = box.getBoundingClientRect().bottom + 0.5;
  let cut = items.length;
  for (let i = start; i < items.length; i++) {
    if (items[i].getBoundingClientRect().bottom > bottom) { cut = Math.max(i, start + 1); break; }
  }
  for (let j = cut; j < items.length; j++) items[j].hidden = true;
  return cut;
}

// Lay out one section at its current page: the page boundaries are measured afresh (values change heights).
export function pageSection(name, box, items) {
  const starts = [0];
  for (let s = 0; ;) {
    const cut = fitFrom(box, items, s);
    if (cut >= items.length) break;
    starts.push(cut);
    s = cut;
  }
  const n = starts.length;
  WALL.pages[name] = n;
  const p = WALL.page[name] % n;
  WALL.page[name] = p;
  if (n > 1) fitFrom(box, items, starts[p]);
  return { page: p + 1, pages: n, shown: items.filter((e) => !e.hidden).length };
}

export function pageLabel(info) { return info.pages > 1 ? t("page_of", { p: info.page, n: info.pages }) : ""; }

export function wallLayout() {
  if (!S.kiosk || !S.meta) return;
  const banner = $("#banner");
  const alarms = [...banner.querySelectorAll(":scope > .alarm")];
  const a = pageSection("banner", banner, alarms);
  // a paged section keeps its full height on every page, so the tiles' area (and their pages) never changes
  banner.classList.toggle("paged", a.pages > 1);
  const summary = banner.querySelector(":scope > .alarm-summary");
  if (summary) summary.querySelector(".pager").textContent = pageLabel(a);
  const tiles = [...document.querySelectorAll("#tiles > .tile")];
  $("#tiles").classList.toggle("dense", tiles.length > 48);
  const tp = pageSection("tiles", $("#tiles"), tiles);
  $("#tiles-pager").textContent = pageLabel(tp);
  const hz = [...document.querySelectorAll("#hazard-list > .hazard")];
  const hp = pageSection("hazards", $("#hazard-list"), hz);
  $("#hazards").classList.toggle("paged", hp.pages > 1);
  $("#hazards-pager").textContent = pageLabel(hp);
  document.body.dataset.wallPages = `${WALL.pages.banner},${WALL.pages.tiles},${WALL.pages.hazards}`;
}

// after any redraw, once per burst of redraws (a timer, not requestAnimationFrame: that one pauses in a page the
// browser thinks is not visible, and a wall screen's page may be one)
export function wallRelayout() {
  if (!S.kiosk || WALL.raf) return;
  WALL.raf = setTimeout(() => { WALL.raf = 0; wallLayout(); }, 0);
}

// Above the alarm rows on a wall screen: how many there are per level, and which page is shown.
export function alarmSummary(list) {
  const counts = [3, 2, 1].map((lvl) => [lvl, list.filter((a) => a.level === lvl).length]).filter(([, n]) => n);
  return el("div", { class: "alarm-summary" },
    el("span", {}, t("alarm_count", { n: list.length })),
    ...counts.map(([lvl, n]) => el("span", { class: `cnt lvl-${lvl}` }, `${t(`level_${lvl}`)} ${n}`)),
    el("span", { class: "pager" }, ""));
}

// the next page of every section that has more than one
export function wallFlip() {
  for (const k of Object.keys(WALL.page)) WALL.page[k] = (WALL.page[k] + 1) % WALL.pages[k];
  wallLayout();
}

export function wallStart() {
  if (!S.kiosk || WALL.timer) return;
  WALL.timer = setInterval(wallFlip, WALL.pageMs);
  window.addEventListener("resize", wallRelayout);
}
