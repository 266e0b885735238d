// The admin's pages (a supervisor gets what the API grants: reading, and
// granting credits): users with their balance, transactions and limits;
// chatflows with access and prices; the usage dashboard with CSV export.

import { h, replace, field, number } from "../dom.js";
import { t } from "../i18n.js";
import * as api from "../api.js";
import { errorBox, submitting as guarded, ask, said } from "../main.js";
import { usageCharts, table, grants, statement, chatflowNames, period } from "./account.js";
import { bars } from "../chart.js";

const enc = encodeURIComponent;

async function users(main, { user: me }) {
  const admin = me.role === "admin";
  const status = h("div", { "aria-live": "polite" });
  const search = field(t("admin.search"), { id: "user-search", type: "search" });
  const list = h("div", { id: "user-list" });
  const detail = h("section", { id: "user-detail", "aria-live": "polite" });

  async function draw() {
    const q = search.input.value.trim();
    const page = await api.call("auth", "GET", `/api/admin/users?limit=50${q ? `&search=${enc(q)}` : ""}`);
    const state = (u) => [t(`roles.${u.role}`), u.disabled ? t("admin.disabled") : null, u.isVerified ? null : t("admin.unverified")];
    replace(list, table(
      [t("admin.user"), t("admin.state"), t("admin.balance"), t("admin.spentThisMonth")],
      page.users.map((u) => [
        h("span", {},
          h("button", { type: "button", class: "link", onclick: guarded(status, () => open(u)) }, u.username),
          h("br"), h("span", { class: "meta" }, u.email)),
        state(u).filter(Boolean).join(" · "),
        number(u.credits.balance),
        number(u.credits.spentThisMonth),
      ]),
      t(q ? "admin.noMatch" : "admin.noUsers", { search: q }),
    ));
  }

  async function open(u) {
    const [balance, history, limits, names] = await Promise.all([
      api.call("credits", "GET", `/api/credits/balance/${enc(u.id)}`),
      api.call("credits", "GET", `/api/credits/statement?limit=20&userId=${enc(u.id)}`),
      api.call("credits", "GET", `/api/admin/users/${enc(u.id)}/limits`),
      chatflowNames(),
    ]);
    const shown = (v) => (v === null || v === undefined ? t("admin.default") : number(v));
    const currentLimits = h("p", { class: "meta", id: "user-limits" }, t("admin.currentLimits", {
      perMinute: shown(limits.rateLimitPerMinute),
      concurrent: shown(limits.maxConcurrentStreams),
    }));
    const credits = field(t("admin.credits"), { id: "grant-credits", api: "credits", type: "number", min: 1, inputmode: "numeric", required: true });
    const days = field(t("admin.expiryDays"), { id: "grant-days", api: "expiryDays", type: "number", min: 1, value: 30, inputmode: "numeric" });
    const grant = h("form", {
      novalidate: true,
      class: "card",
      onsubmit: guarded(status, async () => {
        const body = { userId: u.id, credits: Number(credits.input.value), expiryDays: Number(days.input.value) || null };
        const answer = await api.call("credits", "POST", "/api/credits/allocate", body, { headers: { "idempotency-key": crypto.randomUUID() } });
        said(status, "admin.granted", { credits: number(body.credits), user: u.username, balance: number(answer.newBalance) });
        await open(u);
      }),
    }, h("h3", {}, t("admin.grant")), credits.el, days.el, h("button", { type: "submit" }, t("admin.grantButton")));
    const amount = field(t("admin.adjustAmount"), { id: "adjust-amount", api: "amount", type: "number", step: 1, inputmode: "numeric" });
    const note = field(t("admin.adjustNote"), { id: "adjust-note", api: "notes", maxlength: 1000 });
    const adjust = admin ? h("form", {
      novalidate: true,
      class: "card",
      onsubmit: guarded(status, async () => {
        const body = { userId: u.id, amount: Number(amount.input.value), notes: note.input.value.trim() };
        const answer = await api.call("credits", "POST", "/api/credits/adjust", body, { headers: { "idempotency-key": crypto.randomUUID() } });
        said(status, "admin.adjusted", { user: u.username, amount: number(body.amount), balance: number(answer.newBalance) });
        await open(u);
      }),
    }, h("h3", {}, t("admin.adjust")), h("p", { class: "meta" }, t("admin.adjustHint")), amount.el, note.el,
    h("button", { type: "submit" }, t("admin.adjustButton"))) : null;
    const actions = [];
    const own = u.id === me.id;
    if (admin) {
      const role = h("select", { id: "user-role", "aria-label": t("admin.role") },
        ["enduser", "supervisor", "admin"].map((r) => h("option", { value: r, selected: r === u.role }, t(`roles.${r}`))));
      const patch = (body, key, question, label) => guarded(status, async () => {
        if (question && !(await ask(question, label))) return;
        const answer = await api.call("auth", "PATCH", `/api/admin/users/${enc(u.id)}`, body);
        said(status, key, { user: u.username });
        await draw();
        await open(answer.user);
      });
      const perMinute = field(t("admin.perMinute"), { api: "rateLimitPerMinute", type: "number", min: 1, max: 10000, value: limits.rateLimitPerMinute ?? undefined });
      const concurrent = field(t("admin.concurrent"), { api: "maxConcurrentStreams", type: "number", min: 1, max: 100, value: limits.maxConcurrentStreams ?? undefined });
      // Never on one's own account: another administrator does that.
      if (own) actions.push(h("p", { class: "meta", id: "own-account" }, t("admin.ownAccount")));
      else actions.push(
        h("div", { class: "row" }, role, h("button", {
          type: "button",
          id: "set-role",
          onclick: () => patch({ role: role.value }, "admin.roleChanged", t(role.value === "admin" ? "admin.confirmAdmin" : "admin.confirmRole", {
            user: u.username,
            role: t(`roles.${role.value}`),
          }), t("admin.setRole"))(),
        }, t("admin.setRole"))),
        h("div", { class: "row" },
          u.isVerified ? null : h("button", { type: "button", onclick: patch({ isVerified: true }, "admin.verified") }, t("admin.verify")),
          h("button", {
            type: "button",
            id: "toggle-disabled",
            class: "secondary",
            onclick: patch({ disabled: !u.disabled }, u.disabled ? "admin.enabled" : "admin.disabledNow",
              u.disabled ? null : t("admin.confirmDisable", { user: u.username }), t("admin.disable")),
          }, t(u.disabled ? "admin.enable" : "admin.disable")),
          h("button", {
            type: "button",
            class: "danger",
            id: "delete-user",
            onclick: guarded(status, async () => {
              if (!(await ask(t("admin.confirmDelete", { user: u.username }), t("admin.delete")))) return;
              await api.call("auth", "DELETE", `/api/admin/users/${enc(u.id)}`);
              said(status, "admin.deleted", { user: u.username });
              replace(detail);
              await draw();
            }),
          }, t("admin.delete"))));
      actions.push(
        h("form", {
          novalidate: true,
          class: "card",
          onsubmit: guarded(status, async () => {
            const body = {
              rateLimitPerMinute: perMinute.input.value ? Number(perMinute.input.value) : null,
              maxConcurrentStreams: concurrent.input.value ? Number(concurrent.input.value) : null,
            };
            await api.call("credits", "PUT", `/api/admin/users/${enc(u.id)}/limits`, body);
            said(status, "admin.limitsSaved", { user: u.username });
            await open(u);
          }),
        }, h("h3", {}, t("admin.limits")), h("p", { class: "meta" }, t("admin.limitsHint")), perMinute.el, concurrent.el, h("button", { type: "submit" }, t("admin.saveLimits"))),
      );
    }
    replace(
      detail,
      h("h2", {}, u.username),
      h("p", { class: "big", id: "user-balance" }, t("admin.balanceOf", { user: u.username, credits: number(balance.totalCredits) })),
      currentLimits,
      grant,
      adjust,
      actions,
      h("h3", {}, t("admin.grantsOf", { user: u.username })),
      grants(balance.allocations, t("admin.noGrants", { user: u.username })),
      h("h3", {}, t("admin.transactionsOf", { user: u.username })),
      statement(history.lines, names, t("admin.noTransactions", { user: u.username })),
    );
  }

  const createForm = () => {
    const username = field(t("auth.username"), { api: "username", id: "new-username" });
    const email = field(t("auth.email"), { api: "email", id: "new-email", type: "email" });
    const password = field(t("auth.newPassword"), { api: "password", id: "new-password", type: "password", autocomplete: "new-password" });
    const role = h("select", { id: "new-role", dataset: { field: "role" }, "aria-label": t("admin.role") }, ["enduser", "supervisor", "admin"].map((r) => h("option", { value: r }, t(`roles.${r}`))));
    return h("form", {
      novalidate: true,
      class: "card",
      onsubmit: guarded(status, async () => {
        await api.call("auth", "POST", "/api/admin/users", {
          username: username.input.value.trim(), email: email.input.value.trim(), password: password.input.value, role: role.value, verified: true,
        });
        said(status, "admin.created", { user: username.input.value.trim() });
        await draw();
      }),
    }, h("h2", {}, t("admin.createUser")), username.el, email.el, password.el, role, h("button", { type: "submit" }, t("admin.create")));
  };

  search.input.addEventListener("input", () => draw().catch((err) => replace(status, errorBox(err))));
  replace(main, h("h1", {}, t("titles.admin_users")), status, h("div", { class: "split" },
    h("div", {}, search.el, list, admin ? createForm() : null), detail));
  await draw();
}

/** Of the addresses `emails`, those no account has yet. */
async function withoutAccount(emails) {
  const found = await Promise.all(emails.map(async (email) => {
    const page = await api.call("auth", "GET", `/api/admin/users?limit=5&search=${enc(email)}`);
    return page.users.some((u) => u.email === email.toLowerCase());
  }));
  return emails.filter((_, i) => !found[i]);
}

async function chatflows(main) {
  const status = h("div", { "aria-live": "polite" });
  const list = h("div", { id: "flow-list" });
  async function draw() {
    const [flows, pricing] = await Promise.all([
      api.call("predict", "GET", "/api/v1/admin/chatflows"),
      api.call("credits", "GET", "/api/credits/pricing"),
    ]);
    const rules = Object.fromEntries(pricing.rules.map((r) => [r.chatflowId, r]));
    replace(list, flows.chatflows.filter((f) => !f.removed).map((f) => {
      const rule = rules[f.id] || rules.default || { perRequest: 0, perInputToken: 0, perOutputToken: 0 };
      const pub = h("input", { type: "checkbox", id: `public-${f.id}`, checked: f.isPublic });
      const perRequest = field(t("admin.perRequest"), { api: "pricing.perRequest", type: "number", min: 0, value: rule.perRequest });
      const perInput = field(t("admin.perInput"), { api: "pricing.perInputToken", type: "number", min: 0, step: "any", value: rule.perInputToken });
      const perOutput = field(t("admin.perOutput"), { api: "pricing.perOutputToken", type: "number", min: 0, step: "any", value: rule.perOutputToken });
      const images = field(t("admin.imageTokens"), { api: "pricing.imageInputTokens", type: "number", min: 0, value: rule.imageInputTokens ?? 1000 });
      const documents = field(t("admin.documentTokens"), { api: "pricing.documentInputTokensPerMb", type: "number", min: 0, value: rule.documentInputTokensPerMb ?? 20000 });
      const emails = field(t("admin.emails"), { api: "emails", multiline: true, rows: 2 });
      const overrides = field(t("admin.overrides"), { api: "allowedOverrides", id: `overrides-${f.id}`, value: f.allowedOverrides.join(", ") });
      const systemId = `system-${f.id}`;
      const system = h("select", { id: systemId, dataset: { field: "systemMessages" } },
        ["prepend", "override", "refuse"].map((mode) => h("option", {
          value: mode,
          selected: f.systemMessages === mode,
          // Only where Flowise lets a request set the prompt's input.
          disabled: mode === "override" && !f.systemPromptInput,
        }, t(`admin.systemModes.${mode}`))));
      return h("form", {
        novalidate: true,
        class: "card flow",
        "aria-label": f.name,
        onsubmit: guarded(status, async () => {
          const body = {
            isPublic: pub.checked,
            allowedOverrides: overrides.input.value.split(/[\s,;]+/).filter(Boolean),
            systemMessages: system.value,
            pricing: {
              perRequest: Number(perRequest.input.value),
              perInputToken: Number(perInput.input.value),
              perOutputToken: Number(perOutput.input.value),
              imageInputTokens: Number(images.input.value),
              documentInputTokensPerMb: Number(documents.input.value),
            },
          };
          await api.call("predict", "PUT", `/api/v1/admin/chatflows/${enc(f.id)}`, body);
          const added = emails.input.value.split(/[\s,;]+/).filter(Boolean);
          if (added.length) await api.call("predict", "POST", `/api/v1/admin/chatflows/${enc(f.id)}/users`, { emails: added });
          const unknown = await withoutAccount(added);
          await draw();
          said(status, "admin.flowSaved", { name: f.name });
          if (unknown.length) {
            status.append(h("p", { class: "notice warning", role: "status", id: "no-account" }, t("admin.noAccountYet", { emails: unknown.join(", ") })));
          }
        }),
      },
      h("h2", {}, f.name),
      h("p", { class: "meta" }, f.id),
      h("div", { class: "check" }, pub, h("label", { for: `public-${f.id}` }, t("admin.public"))),
      f.invocable ? null : h("p", { class: "notice" }, t("admin.notInvocable")),
      h("p", { class: "meta" }, t("admin.allowed", { count: f.allowedUsers.length })),
      f.allowedUsers.length === 0 ? null : h("ul", { class: "plain access" }, f.allowedUsers.map((who) => h("li", {},
        who, " ",
        h("button", {
          type: "button",
          class: "secondary",
          "aria-label": t("admin.removeAccessOf", { who }),
          onclick: guarded(status, async () => {
            if (!(await ask(t("admin.confirmRemoveAccess", { who, name: f.name }), t("admin.removeAccess")))) return;
            const entry = who.includes("@") ? { emails: [who] } : { userIds: [who] };
            await api.call("predict", "DELETE", `/api/v1/admin/chatflows/${enc(f.id)}/users`, entry);
            await draw();
            said(status, "admin.accessRemoved", { who, name: f.name });
          }),
        }, t("admin.removeAccess"))))),
      emails.el, perRequest.el, perInput.el, perOutput.el, images.el, documents.el,
      overrides.el,
      h("div", { class: "field" }, h("label", { for: systemId }, t("admin.systemMessages")), system,
        h("p", { class: "meta" }, f.systemPromptInput
          ? t("admin.systemInput", { input: f.systemPromptInput })
          : t("admin.systemNoInput"))),
      h("button", { type: "submit" }, t("admin.saveFlow")));
    }));
  }
  const sync = h("button", {
    type: "button",
    id: "sync",
    onclick: guarded(status, async () => {
      sync.disabled = true;
      replace(status, h("p", { class: "notice", role: "status" }, t("admin.syncing")));
      try {
        const report = await api.call("predict", "POST", "/api/v1/admin/chatflows/sync");
        said(status, "admin.synced", report);
        await draw();
      } finally {
        sync.disabled = false;
      }
    }),
  }, t("admin.sync"));
  replace(main, h("h1", {}, t("titles.admin_chatflows")), sync, status, list);
  await draw();
}

/** Every chatflow's name an admin can see (removed ones too); a supervisor's own list. */
async function everyChatflowName() {
  try {
    const flows = await api.call("predict", "GET", "/api/v1/admin/chatflows");
    return Object.fromEntries(flows.chatflows.map((f) => [f.id, f.name]));
  } catch {
    return chatflowNames();
  }
}

async function dashboard(main) {
  let names_ = null;
  const status = h("div", { "aria-live": "polite" });
  const from = field(t("admin.from"), { api: "from", type: "date", id: "range-from" });
  const to = field(t("admin.to"), { api: "to", type: "date", id: "range-to" });
  const report = h("div", { id: "report" });
  const range = () => {
    const q = new URLSearchParams();
    if (from.input.value) q.set("from", from.input.value);
    if (to.input.value) q.set("to", to.input.value);
    return q.toString();
  };
  async function draw() {
    const chosen = Boolean(from.input.value || to.input.value);
    const [stats, names] = await Promise.all([
      api.call("usage", "GET", `/api/usage/system-stats?${range()}`),
      names_ ||= everyChatflowName(),
    ]);
    // The range the report covers, filled in ("the last 30 days" when none was given).
    if (!from.input.value) from.input.value = stats.from.slice(0, 10);
    if (!to.input.value) to.input.value = new Date(new Date(stats.to).getTime() - 1).toISOString().slice(0, 10);
    replace(report, period(stats, chosen), usageCharts(stats, names),
      bars(t("admin.topUsers"), (stats.byUser || []).map((u) => ({ label: u.username || u.userId, value: u.credits })),
        t("admin.user"), t("usage.credits"), t("usage.nothing")));
  }
  const exportButton = h("button", {
    type: "button",
    id: "export",
    class: "secondary",
    onclick: guarded(status, async () => {
      exportButton.disabled = true;
      replace(status, h("p", { class: "notice", role: "status" }, t("admin.exporting")));
      try {
        const res = await api.raw("usage", `/api/usage/export?${range()}`);
        const blob = await res.blob();
        const link = h("a", { href: URL.createObjectURL(blob), download: "usage.csv" }, t("admin.download"));
        replace(status, h("p", { class: "notice", role: "status" }, t("admin.exported"), " ", link));
        link.focus();
      } finally {
        exportButton.disabled = false;
      }
    }),
  }, t("admin.export"));
  replace(main, h("h1", {}, t("titles.admin_usage")),
    h("form", { class: "row", novalidate: true, onsubmit: guarded(status, draw) }, from.el, to.el, h("button", { type: "submit" }, t("admin.show")), exportButton),
    status, report);
  await draw();
}

export const adminPages = { "admin/users": users, "admin/chatflows": chatflows, "admin/usage": dashboard };
