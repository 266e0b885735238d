// Allowances (README "Allowances and warnings"): what arrives by itself
// every period. One card serves a role's allowance (admins, on the
// Allowances page) and a team's (its supervisors, on the team's page).

import { h, replace, field, number, day } from "../dom.js";
import { t } from "../i18n.js";
import * as api from "../api.js";
import { submitting as guarded, ask, said } from "../main.js";

const EVERY = { day: "allowances.everyDay", week: "allowances.everyWeek", month: "allowances.everyMonth" };
const PERIOD = { day: "allowances.daily", week: "allowances.weekly", month: "allowances.monthly" };

/** A setting in words: "100 credits every month (UTC), up to 50 roll over". */
function described(s) {
  const text = t(EVERY[s.period], { credits: number(s.credits), zone: s.timeZone });
  return s.rolloverCap ? `${text} ${t("allowances.rollsOver", { cap: number(s.rolloverCap) })}` : text;
}

/**
 * The card of the allowance at `path` (`/api/admin/allowances/enduser`,
 * `/api/teams/<id>/allowance`): how it stands, a form to set it and a
 * button to end it. `name` says whose it is; `team`, no rollover.
 */
export async function allowanceCard(status, path, name, team = false) {
  const card = h("section", { class: "card allowance", "aria-label": name });
  async function draw() {
    const standing = await api.call("credits", "GET", path);
    const now = standing.current ? described(standing.current) : t("allowances.none");
    const later = !standing.changesAt ? null : standing.next
      ? t("allowances.changes", { day: day(standing.changesAt), what: described(standing.next) })
      : t("allowances.ends", { day: day(standing.changesAt) });
    const base = standing.next || standing.current || { credits: "", period: "month", rolloverCap: null, timeZone: "UTC" };
    const slug = path.replace(/[^a-z0-9]+/gi, "-");
    const credits = field(t("admin.credits"), { id: `${slug}-credits`, api: "credits", type: "number", min: 1, inputmode: "numeric", value: base.credits, required: true });
    const period = h("select", { id: `${slug}-period`, dataset: { field: "period" } },
      ["day", "week", "month"].map((p) => h("option", { value: p, selected: p === base.period }, t(PERIOD[p]))));
    const cap = team ? null : field(t("allowances.cap"), { id: `${slug}-cap`, api: "rolloverCap", type: "number", min: 0, inputmode: "numeric", value: base.rolloverCap ?? "" });
    const zone = field(t("allowances.zone"), { id: `${slug}-zone`, api: "timeZone", value: base.timeZone, maxlength: 64 });
    const form = h("form", {
      novalidate: true,
      onsubmit: guarded(status, async () => {
        const body = { credits: Number(credits.input.value), period: period.value, timeZone: zone.input.value.trim() || "UTC" };
        if (cap && cap.input.value !== "") body.rolloverCap = Number(cap.input.value);
        await api.call("credits", "PUT", path, body);
        said(status, "allowances.saved", { name });
        await draw();
      }),
    },
    credits.el,
    h("div", { class: "field" }, h("label", { for: `${slug}-period` }, t("allowances.period")), period),
    cap?.el, zone.el,
    h("div", { class: "row" },
      h("button", { type: "submit" }, t("allowances.save")),
      standing.current || standing.next ? h("button", {
        type: "button",
        class: "secondary",
        onclick: guarded(status, async () => {
          if (!(await ask(t("allowances.confirmEnd", { name }), t("allowances.end")))) return;
          await api.call("credits", "DELETE", path);
          said(status, "allowances.ended", { name });
          await draw();
        }),
      }, t("allowances.end")) : null));
    replace(card, h("h3", {}, name), h("p", { class: "allowance-now" }, now), later ? h("p", { class: "meta" }, later) : null,
      h("p", { class: "meta" }, t(team ? "allowances.teamHint" : "allowances.roleHint")), form);
  }
  await draw();
  return card;
}

async function roles(main) {
  const status = h("div", { "aria-live": "polite" });
  const cards = await Promise.all(["enduser", "supervisor", "admin"].map((role) =>
    allowanceCard(status, `/api/admin/allowances/${role}`, t("allowances.ofRole", { role: t(`roles.${role}`) }))));
  replace(main, h("h1", {}, t("titles.admin_allowances")), h("p", {}, t("allowances.intro")), status, cards);
}

export const allowancePages = { "admin/allowances": roles };
