// Allowances (README "Allowances and warnings"): what arrives by itself
// every period. One card serves a role's allowance (admins, on the
// Allowances page) and a team's (its supervisors, on the team's page).

import { h, replace, field, number, day, when } from "../dom.js";
import { table } from "./account.js";
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
 * button to end it. `name` says whose it is; `team`, a team's (its hint).
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
    const cap = field(t("allowances.cap"), { id: `${slug}-cap`, api: "rolloverCap", type: "number", min: 0, inputmode: "numeric", value: base.rolloverCap ?? "" });
    const zone = field(t("allowances.zone"), { id: `${slug}-zone`, api: "timeZone", value: base.timeZone, maxlength: 64 });
    const form = h("form", {
      novalidate: true,
      onsubmit: guarded(status, async () => {
        const body = { credits: Number(credits.input.value), period: period.value, timeZone: zone.input.value.trim() || "UTC" };
        if (cap.input.value !== "") body.rolloverCap = Number(cap.input.value);
        await api.call("credits", "PUT", path, body);
        said(status, "allowances.saved", { name });
        await draw();
      }),
    },
    credits.el,
    h("div", { class: "field" }, h("label", { for: `${slug}-period` }, t("allowances.period")), period),
    cap.el, zone.el,
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
  replace(main, h("h1", {}, t("titles.admin_allowances")), h("p", {}, t("allowances.intro")), status, cards,
    await webhookSection(status));
}

export const allowancePages = { "admin/allowances": roles };

/** The warning settings of `path` (`/api/credits/warnings`, `/api/teams/<id>/warnings`): below which balance a warning is mailed, or never; for a user, whether an allowance's arrival is mailed too. */
export async function warningCard(status, path, team = false) {
  const card = h("section", { class: "card", id: team ? "team-warnings" : "my-warnings", "aria-labelledby": `${team ? "team" : "my"}-warnings-title` });
  const settings = await api.call("credits", "GET", path);
  const slug = team ? "team-warn" : "warn";
  const low = field(t("warnings.lowCredits"), { id: `${slug}-low`, api: "lowCredits", type: "number", min: 0, inputmode: "numeric", value: settings.chosen ? settings.lowCredits : "" });
  const arrival = team ? null : h("input", { type: "checkbox", id: `${slug}-arrival`, checked: settings.allowanceMail });
  const now = settings.lowCredits === 0 ? t("warnings.off") : t(settings.chosen ? "warnings.below" : "warnings.belowDefault", { credits: number(settings.lowCredits) });
  const form = h("form", {
    novalidate: true,
    onsubmit: guarded(status, async () => {
      const body = { lowCredits: low.input.value === "" ? null : Number(low.input.value) };
      if (arrival) body.allowanceMail = arrival.checked;
      await api.call("credits", "PUT", path, body);
      said(status, "warnings.saved");
      card.replaceWith(await warningCard(status, path, team));
    }),
  }, low.el,
  arrival ? h("div", { class: "check" }, arrival, h("label", { for: `${slug}-arrival` }, t("warnings.arrival"))) : null,
  h("button", { type: "submit" }, t("warnings.save")));
  replace(card, h("h3", { id: `${team ? "team" : "my"}-warnings-title` }, t(team ? "warnings.teamTitle" : "warnings.title")),
    h("p", { id: `${slug}-now` }, now), h("p", { class: "meta" }, t(team ? "warnings.teamHint" : "warnings.hint")), form);
  return card;
}

/** Admins: webhooks (the secret shown once) and each one's deliveries. */
async function webhookSection(status) {
  const section = h("section", { id: "webhooks", "aria-labelledby": "webhooks-title" });
  const events = ["credits.low", "credits.expiring", "credits.granted", "credits.exhausted", "team.wallet_low", "prediction.refused_402"];
  async function draw(secret) {
    const list = await api.call("credits", "GET", "/api/admin/webhooks");
    const url = field(t("webhooks.url"), { id: "webhook-url", api: "url", type: "url" });
    const boxes = events.map((e) => h("input", { type: "checkbox", id: `event-${e}`, value: e, checked: e === "credits.low" }));
    const form = h("form", {
      novalidate: true,
      class: "card",
      onsubmit: guarded(status, async () => {
        const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
        const made = await api.call("credits", "POST", "/api/admin/webhooks", { url: url.input.value.trim(), events: chosen });
        said(status, "webhooks.registered");
        await draw(made.secret);
      }),
    }, h("h3", {}, t("webhooks.add")), url.el,
    h("fieldset", {}, h("legend", {}, t("webhooks.events")),
      boxes.map((b) => h("div", { class: "check" }, b, h("label", { for: b.id }, t(`webhooks.event_${b.value.replace(/\./g, "_")}`))))),
    h("button", { type: "submit" }, t("webhooks.register")));
    const shown = secret ? h("div", { class: "notice", role: "status", id: "webhook-secret" },
      h("p", {}, t("webhooks.secretOnce")), h("code", {}, secret)) : null;
    const deliveries = h("div", { id: "webhook-deliveries" });
    const rows = list.webhooks.map((w) => [
      h("span", {}, w.url, h("br"), h("span", { class: "meta" }, w.events.join(", "))),
      h("span", { class: "row" },
        h("button", {
          type: "button",
          class: "secondary",
          "aria-label": t("webhooks.deliveriesOf", { url: w.url }),
          onclick: guarded(status, async () => {
            const page = await api.call("credits", "GET", `/api/admin/webhooks/${w.id}/deliveries?limit=50`);
            replace(deliveries, h("h4", {}, t("webhooks.deliveriesOf", { url: w.url })), table(
              [t("webhooks.when"), t("webhooks.event"), t("webhooks.state"), t("webhooks.attempts"), t("webhooks.lastStatus")],
              page.deliveries.map((d) => [
                when(d.createdAt),
                t(`webhooks.event_${d.event.replace(/\./g, "_")}`),
                t(`webhooks.states_${d.state === "pending" && d.attempts === 0 ? "queued" : d.state}`),
                number(d.attempts),
                d.lastStatus ?? (d.lastError || "—"),
              ]),
              t("webhooks.noDeliveries")));
          }),
        }, t("webhooks.deliveries")),
        h("button", {
          type: "button",
          class: "danger",
          "aria-label": t("webhooks.removeOf", { url: w.url }),
          onclick: guarded(status, async () => {
            if (!(await ask(t("webhooks.confirmRemove", { url: w.url }), t("webhooks.remove")))) return;
            await api.call("credits", "DELETE", `/api/admin/webhooks/${w.id}`);
            said(status, "webhooks.removed");
            await draw();
          }),
        }, t("webhooks.remove"))),
    ]);
    replace(section, h("h2", { id: "webhooks-title" }, t("webhooks.title")), h("p", {}, t("webhooks.intro")), shown,
      table([t("webhooks.url"), t("webhooks.actions")], rows, t("webhooks.none")), deliveries, form);
  }
  await draw();
  return section;
}
