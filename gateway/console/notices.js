// Supervision notices (督办通知) from the regional hub: shown while any is unanswered; a manager acknowledges one
// with what the site does about it (POST /api/notices/{id}/ack), which the hub then sees.
import { $, api, el, ROLES, S, t, timeOf } from "./core.js";

export async function loadNotices() {
  try {
    S.notices = await api("GET", "/api/notices");
  } catch (e) {
    return;  // the next round tries again; a failing gateway shows in the health box
  }
  renderNotices();
}

export function renderNotices() {
  const box = $("#notices"), list = $("#notice-list");
  const open = (S.notices || []).filter((n) => n.acked_ns === null);
  box.hidden = S.kiosk ? open.length === 0 : (S.notices || []).length === 0;
  const manager = S.meta && ROLES.indexOf(S.meta.user.role) >= ROLES.indexOf("manager");
  list.replaceChildren(...(S.notices || []).slice(0, 10).map((n) => {
    const head = el("div", { class: "notice-head" }, `${t("notice_from")} ${n.sent_by} · ${timeOf(n.sent_ns)}`,
      n.due ? ` · ${t("notice_due")} ${n.due}` : "");
    const item = el("div", { class: n.acked_ns === null ? "notice open" : "notice", "data-id": n.id }, head,
      el("div", { class: "notice-text" }, n.text));
    if (n.acked_ns !== null) {
      item.append(el("div", { class: "notice-ack" }, `${t("notice_acked")} ${n.acked_by}：${n.ack_note}`));
    } else if (manager && !S.kiosk) {
      const note = el("input", { name: "note", placeholder: t("notice_answer"), maxlength: 2000, required: true });
      const said = el("span", { class: "err" });
      item.append(el("form", {
        class: "notice-form",
        onsubmit: async (ev) => {
          ev.preventDefault();
          try {
            await api("POST", `/api/notices/${n.id}/ack`, { note: note.value });
            await loadNotices();
          } catch (e) {
            said.textContent = e.message;
          }
        },
      }, note, el("button", { type: "submit" }, t("notice_ack")), said));
    }
    return item;
  }));
}
