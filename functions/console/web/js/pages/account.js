// A user's own pages: credits (balance, allocations and when each
// expires, transactions), usage (credits per day and per chatflow), API
// keys (create, copy once, revoke, spend this month) and the profile.

import { h, replace, field, number, when, day } from "../dom.js";
import { t } from "../i18n.js";
import * as api from "../api.js";
import { errorBox, submitting, ask } from "../main.js";
import { warningCard } from "./allowances.js";
import { bars } from "../chart.js";

/** A table with a header row; `empty`, a sentence shown instead when there are no rows. */
export function table(heads, rows, empty) {
  if (empty && rows.length === 0) return h("p", { class: "meta empty" }, empty);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, heads.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))),
  );
}

/** The chatflows' names by id, as far as the caller may see them. */
export async function chatflowNames() {
  const flows = await api.call("predict", "GET", "/api/v1/chatflows");
  return Object.fromEntries(flows.chatflows.map((f) => [f.id, f.name]));
}

/** A signed amount: "+50", "−12". */
function signed(n) {
  return n > 0 ? `+${number(n)}` : number(n);
}

/** What a statement line was: an entry's kind, or an answer with its parts (expandable). */
function lineWhat(line, names, own) {
  if (line.kind !== "answer") return t(`entryTypes.${line.kind}`);
  const chatflow = names[line.chatflowId] || line.chatflowId || "?";
  const parts = h("ul", { class: "plain" }, line.entries.map((e) => h("li", {}, `${t(`entryTypes.${e.type}`)}: ${signed(e.amount)}`)));
  const conversation = own && line.conversationId
    ? h("p", {}, h("a", { href: `#/chat?session=${encodeURIComponent(line.conversationId)}` }, t("credits.openConversation")))
    : null;
  return h("details", {},
    h("summary", {}, t(line.status === "active" ? "credits.answerRunning" : "credits.answer", { chatflow })),
    parts, conversation);
}

/** A statement: one line per answer (its hold and refund folded in) or other change. */
export function statement(lines, names, empty, own = false) {
  return table(
    [t("credits.when"), t("credits.type"), t("credits.amount"), t("credits.balanceAfter")],
    lines.map((l) => [when(l.createdAt), lineWhat(l, names, own), signed(l.amount), number(l.balanceAfter)]),
    empty,
  );
}

async function credits(main) {
  const status = h("div", { "aria-live": "polite" });
  const [balance, page, names] = await Promise.all([
    api.call("credits", "GET", "/api/credits/balance"),
    api.call("credits", "GET", "/api/credits/statement?limit=50"),
    chatflowNames(),
  ]);
  replace(
    main,
    h("h1", {}, t("titles.credits")),
    h("p", { class: "big", id: "total-credits" }, t("credits.total", { credits: number(balance.totalCredits) })),
    balance.nextCreditsAt
      ? h("p", { id: "next-credits" }, t("credits.nextCredits", { credits: number(balance.nextCredits), day: day(balance.nextCreditsAt) }))
      : null,
    balance.expiringSoon
      ? h("p", { id: "expiring-soon" }, t("credits.expiringSoon", { credits: number(balance.expiringSoon.credits), day: day(balance.expiringSoon.expiresAt) }))
      : null,
    h("h2", {}, t("credits.allocations")),
    grants(balance.allocations, t("credits.noAllocations")),
    h("h2", {}, t("credits.transactions")),
    statement(page.lines, names, t("credits.noTransactions"), true),
    status,
    await warningCard(status, "/api/credits/warnings"),
  );
}

/** Grants with what is left of each and when it expires. */
export function grants(allocations, empty) {
  return table(
    [t("credits.granted"), t("credits.remaining"), t("credits.grantedAt"), t("credits.grantedBy"), t("credits.expiresAt")],
    allocations.map((a) => [
      number(a.credits),
      number(a.remaining),
      when(a.allocatedAt),
      a.grantedBy === "system" ? t("credits.byGateway") : a.grantedBy,
      a.expiresAt ? when(a.expiresAt) : t("credits.never"),
    ]),
    empty,
  );
}

/** The period a report covers, in words: its first and last day (the end is exclusive); `chosen`, a range someone picked (else the default, the last 30 days). */
export function period(stats, chosen = false) {
  const last = new Date(new Date(stats.to).getTime() - 1).toISOString();
  return h("p", { class: "period", id: "period" }, t(chosen ? "usage.period" : "usage.last30", { from: day(stats.from), to: day(last) }));
}

/** The charts of a usage report: chatflows by name, each titled, an empty one said so. */
export function usageCharts(stats, chatflowNames = {}) {
  return [
    h("p", { class: "big" }, t("usage.total", { credits: number(stats.totalCredits), records: number(stats.totalRecords) })),
    bars(t("usage.perDay"), stats.byDay.map((d) => ({ label: day(d.day), value: d.credits })), t("usage.day"), t("usage.credits"), t("usage.nothing")),
    bars(t("usage.perChatflow"), stats.byChatflow.map((c) => ({ label: chatflowNames[c.chatflowId] || c.chatflowId, value: c.credits })),
      t("usage.chatflow"), t("usage.credits"), t("usage.nothing")),
  ];
}

async function usage(main) {
  const [stats, names] = await Promise.all([api.call("usage", "GET", "/api/usage/stats"), chatflowNames()]);
  replace(main, h("h1", {}, t("titles.usage")), period(stats), usageCharts(stats, names));
}

/** A button that copies `text` and says so in the live region `copied`. */
let copied = null;
function copyButton(text, label) {
  return h("button", { type: "button", class: "secondary", onclick: () => navigator.clipboard?.writeText(text).then(() => replace(copied, t("keys.copied"))) }, t(label));
}

/** How to use a new key at once: the base URL, and a request in curl, Python and JavaScript. */
async function keyExamples(key) {
  const base = api.openaiBase();
  const flows = await api.call("predict", "GET", "/api/v1/chatflows");
  const model = flows.chatflows[0]?.id || "CHATFLOW-ID";
  const question = JSON.stringify([{ role: "user", content: "Hello" }]);
  const examples = [
    ["curl", t("keys.exampleCurl"), `curl ${base}/chat/completions \\\n  -H "Authorization: Bearer ${key}" \\\n  -H "Content-Type: application/json" \\\n  -d '{"model": "${model}", "messages": ${question}}'`],
    ["python", t("keys.examplePython"), `from openai import OpenAI\n\nclient = OpenAI(base_url="${base}", api_key="${key}")\nanswer = client.chat.completions.create(\n    model="${model}",\n    messages=[{"role": "user", "content": "Hello"}],\n)\nprint(answer.choices[0].message.content)`],
    ["javascript", t("keys.exampleJavascript"), `import OpenAI from "openai";\n\nconst client = new OpenAI({ baseURL: "${base}", apiKey: "${key}" });\nconst answer = await client.chat.completions.create({\n  model: "${model}",\n  messages: [{ role: "user", content: "Hello" }],\n});\nconsole.log(answer.choices[0].message.content);`],
  ];
  return h("section", { class: "card", id: "key-examples", "aria-labelledby": "key-examples-title" },
    h("h2", { id: "key-examples-title" }, t("keys.useItTitle")),
    h("p", {}, t("keys.useIt")),
    h("p", {}, t("keys.baseUrl"), " ", h("code", { id: "key-base" }, base), " ", copyButton(base, "keys.copyBase")),
    examples.map(([name, title, code]) => h("div", { class: "example" },
      h("h3", {}, title),
      h("pre", { id: `example-${name}`, tabindex: "0" }, h("code", {}, code)),
      copyButton(code, "keys.copyExample"))),
  );
}

async function keys(main) {
  const status = h("div", { "aria-live": "polite" });
  const list = h("div", { id: "key-list" });
  const name = field(t("keys.name"), { id: "key-name", api: "name", required: true, maxlength: 100 });
  const limit = field(t("keys.monthlyLimit"), { id: "key-limit", api: "monthlyCreditLimit", type: "number", min: 1, inputmode: "numeric" });
  const days = field(t("keys.expiresInDays"), { id: "key-days", api: "expiresInDays", type: "number", min: 1, max: 365, inputmode: "numeric", placeholder: "90" });
  const password = field(t("keys.password"), { id: "key-password", api: "currentPassword", type: "password", required: true, autocomplete: "current-password" });

  async function draw() {
    const page = await api.call("credits", "GET", "/api/keys?limit=100");
    replace(
      list,
      table(
        [t("keys.name"), t("keys.prefix"), t("keys.status"), t("keys.expires"), t("keys.spent"), t("keys.lastUsed"), ""],
        page.keys.map((k) => [
          k.name,
          h("code", {}, k.prefix),
          t(`keys.statuses.${k.status}`),
          k.expiresAt ? when(k.expiresAt) : "",
          k.monthlyCreditLimit ? t("keys.spentOf", { spent: number(k.creditsThisMonth), limit: number(k.monthlyCreditLimit) }) : number(k.creditsThisMonth),
          k.lastUsedAt ? when(k.lastUsedAt) : t("keys.neverUsed"),
          k.status === "active"
            ? h("button", { type: "button", class: "secondary", onclick: () => revoke(k) }, t("keys.revoke"))
            : "",
        ]),
        t("keys.none"),
      ),
    );
  }

  async function revoke(k) {
    if (!(await ask(t("keys.confirmRevoke", { name: k.name }), t("keys.revoke")))) return;
    try {
      await api.call("credits", "DELETE", `/api/keys/${encodeURIComponent(k.id)}`);
      replace(status, h("p", { class: "notice" }, t("keys.revoked", { name: k.name })));
      await draw();
    } catch (err) {
      replace(status, errorBox(err));
    }
  }

  const create = h(
    "form",
    {
      class: "card",
      novalidate: true,
      onsubmit: submitting(status, async () => {
        const body = { name: name.input.value.trim(), currentPassword: password.input.value };
        if (limit.input.value) body.monthlyCreditLimit = Number(limit.input.value);
        if (days.input.value) body.expiresInDays = Number(days.input.value);
        // Made by the auth function: a key needs the owner's password.
        const made = await api.call("auth", "POST", "/api/keys", body);
        password.input.value = "";
        const secret = h("input", { id: "new-key", readonly: true, value: made.key, "aria-label": t("keys.secret") });
        replace(
          status,
          h("div", { class: "notice", role: "status" },
            h("p", {}, t("keys.shownOnce")),
            secret,
            copyButton(made.key, "keys.copy"),
            copied),
          await keyExamples(made.key),
        );
        name.input.value = "";
        await draw();
        secret.select();
      }),
    },
    h("h2", {}, t("keys.create")),
    name.el, limit.el, days.el, password.el,
    h("button", { type: "submit" }, t("keys.createButton")),
  );
  copied = h("span", { "aria-live": "polite" });
  replace(main, h("h1", {}, t("titles.keys")), h("p", {}, t("keys.intro")), create, status, list);
  await draw();
}

async function profile(main, { go }) {
  const me = (await api.call("auth", "GET", "/api/profile")).user;
  const status = h("div", { "aria-live": "polite" });
  const username = field(t("auth.username"), { api: "username", value: me.username, autocomplete: "username" });
  const email = field(t("auth.email"), { api: "email", type: "email", value: me.email, autocomplete: "email" });
  const current = field(t("profile.currentPassword"), { api: "currentPassword", type: "password", autocomplete: "current-password" });
  const oldPassword = field(t("profile.currentPassword"), { api: "currentPassword", type: "password", autocomplete: "current-password" });
  const newPassword = field(t("auth.newPassword"), { api: "newPassword", type: "password", autocomplete: "new-password", minlength: 8 });
  const revokeKeys = h("input", { type: "checkbox", id: "revoke-keys" });
  const done = (key) => replace(status, h("p", { class: "notice", role: "status" }, t(key)));
  const guard = (f) => submitting(status, f);
  replace(
    main,
    h("h1", {}, t("titles.profile")),
    status,
    me.pendingEmail ? h("p", { class: "notice" }, t("profile.pending", { email: me.pendingEmail })) : null,
    h("form", {
      novalidate: true,
      class: "card",
      onsubmit: guard(async () => {
        const body = {};
        if (username.input.value.trim() !== me.username) body.username = username.input.value.trim();
        if (email.input.value.trim() !== me.email) {
          body.email = email.input.value.trim();
          body.currentPassword = current.input.value;
        }
        await api.call("auth", "PUT", "/api/profile", body);
        done(body.email ? "profile.emailPending" : "profile.saved");
        if (body.email) setTimeout(() => go(`verify?email=${encodeURIComponent(body.email)}`), 1500);
      }),
    }, h("h2", {}, t("profile.details")), username.el, email.el, current.el, h("button", { type: "submit" }, t("profile.save"))),
    h("form", {
      novalidate: true,
      class: "card",
      onsubmit: guard(async () => {
        const answer = await api.call("auth", "POST", "/api/profile/change-password", {
          currentPassword: oldPassword.input.value,
          newPassword: newPassword.input.value,
        }, { console: true });
        api.adopt(answer);
        done("profile.passwordChanged");
      }),
    }, h("h2", {}, t("profile.password")), oldPassword.el, newPassword.el, h("button", { type: "submit" }, t("profile.changePassword"))),
    h("div", { class: "card" }, h("h2", {}, t("profile.sessions")), h("p", {}, t("profile.everywhereHint")),
      h("label", { class: "check" }, revokeKeys, " ", t("profile.revokeKeys")),
      h("button", {
        type: "button",
        id: "signout-all",
        class: "secondary",
        onclick: guard(async () => {
          const question = t(revokeKeys.checked ? "profile.confirmEverywhereKeys" : "profile.confirmEverywhere");
          if (!(await ask(question, t("profile.signOutEverywhere")))) return;
          await api.signOut(true, revokeKeys.checked);
          go("signin");
        }),
      }, t("profile.signOutEverywhere"))),
  );
}

export const accountPages = { credits, usage, keys, profile };
