// Teams (README "Teams"): an admin makes teams, names their supervisors
// and funds their wallets; a team's supervisors add members (a pasted list
// of addresses or a CSV file) and remove them, give them credits from the
// wallet and take back what is unspent, and read the team's usage with
// its export; a member sees their teams and what each gave them.

import { h, replace, field, number, when } from "../dom.js";
import { t } from "../i18n.js";
import * as api from "../api.js";
import { submitting as guarded, ask, said, errorBox } from "../main.js";
import { table, grants, usageCharts, period, chatflowNames } from "./account.js";
import { bars } from "../chart.js";
import { allowanceCard, warningCard } from "./allowances.js";

const enc = encodeURIComponent;
const PAGE = 20;
/** The most one request may add; a longer list goes in several. */
const BATCH = 500;

/** The addresses in pasted text or a CSV file: every cell with an @, once each. */
export function addresses(text) {
  const cells = text.split(/[\s,;"'<>]+/).map((c) => c.trim().toLowerCase()).filter((c) => c.includes("@"));
  return [...new Set(cells)];
}

/** The ids of the users named (by username or email) in `names` (`known`: people already named, kept by name or id); an unknown name is refused. */
async function userIds(names, known = []) {
  return Promise.all(names.map(async (name) => {
    const same = known.find((p) => p.userId === name || (p.username || "").toLowerCase() === name.toLowerCase());
    if (same) return same.userId;
    const page = await api.call("auth", "GET", `/api/admin/users?limit=20&search=${enc(name)}`);
    const found = page.users.find((u) => u.username.toLowerCase() === name.toLowerCase() || u.email === name.toLowerCase());
    if (!found) throw new api.ApiError(400, { error: "unknown_user", name });
    return found.id;
  }));
}

function names(people) {
  return people.map((p) => p.username || p.userId).join(", ") || t("teams.noSupervisors");
}

/** What a team is to the caller, in a few words. */
function standing(team) {
  if (team.standing === "member") {
    return t("teams.givenToYou", { team: team.name, given: number(team.givenToYou), unspent: number(team.unspentOfGiven) });
  }
  return t("teams.walletAndMembers", { credits: number(team.walletCredits), members: number(team.memberCount) });
}

/** Records the team shown in the address without a new render (a reload or a change of language shows it again). */
function shown(id) {
  history.replaceState(null, "", id ? `#/teams?team=${id}` : "#/teams");
}

async function teams(main, { user: me, query }) {
  const admin = me.role === "admin";
  // The team shown beside the list (`#/teams?team=<id>`: a link to it works).
  const wanted = query().get("team");
  const status = h("div", { "aria-live": "polite" });
  const list = h("div", { id: "team-list" });
  const detail = h("section", { id: "team-detail" });

  async function draw() {
    const page = await api.call("credits", "GET", "/api/teams?limit=100");
    replace(list, table(
      [t("teams.team"), t("teams.supervisors"), t("teams.yours")],
      page.teams.map((team) => [
        h("a", { href: `#/teams?team=${team.id}`, "aria-current": team.id === wanted ? "page" : undefined }, team.name),
        names(team.supervisors),
        standing(team),
      ]),
      t(admin ? "teams.noneYet" : "teams.none"),
    ));
  }

  async function open(id, page = 1, search = "") {
    const q = `limit=${PAGE}&page=${page}${search ? `&search=${enc(search)}` : ""}`;
    const one = await api.call("credits", "GET", `/api/teams/${id}?${q}`);
    const team = one.team;
    shown(id);
    if (team.standing === "member") {
      replace(detail, h("h2", {}, team.name),
        h("p", {}, t("teams.ledBy", { supervisors: names(team.supervisors) })),
        h("p", { class: "big", id: "team-given" }, standing(team)));
      return;
    }
    const wallet = await api.call("credits", "GET", `/api/teams/${id}/credits?limit=20`);
    // After a change the pane is drawn again: focus goes to its heading,
    // not to the page's start.
    const reopen = async () => {
      await open(id, page, search);
      detail.querySelector("h2")?.focus();
    };
    replace(detail,
      h("h2", { tabindex: "-1" }, team.name),
      h("p", {}, t("teams.ledBy", { supervisors: names(team.supervisors) })),
      h("p", { class: "big", id: "wallet-credits" }, t("teams.walletHolds", { credits: number(wallet.totalCredits) })),
      admin ? adminTools(team, reopen) : null,
      await allowanceCard(status, `/api/teams/${id}/allowance`, t("teams.allowance", { team: team.name }), true),
      await warningCard(status, `/api/teams/${id}/warnings`, true),
      memberSection(team, one, page, search, reopen),
      usageSection(team),
      h("h3", {}, t("teams.walletGrants")),
      grants(wallet.allocations, t("teams.noWalletGrants")),
      h("h3", {}, t("teams.walletHistory")),
      walletHistory(wallet.transactions, one.members),
    );
  }

  /** An admin's forms: fund the wallet, rename, name supervisors, delete. */
  function adminTools(team, reopen) {
    const credits = field(t("admin.credits"), { id: "fund-credits", api: "credits", type: "number", min: 1, inputmode: "numeric", required: true });
    const days = field(t("admin.expiryDays"), { id: "fund-days", api: "expiryDays", type: "number", min: 1, value: 30, inputmode: "numeric" });
    // One key per form: a second click of the same grant is the same grant.
    const fundKey = crypto.randomUUID();
    const fund = h("form", {
      novalidate: true,
      class: "card",
      onsubmit: guarded(status, async () => {
        const body = { teamId: team.id, credits: Number(credits.input.value), expiryDays: Number(days.input.value) || null };
        const answer = await api.call("credits", "POST", "/api/credits/allocate", body, { headers: { "idempotency-key": fundKey } });
        said(status, "teams.funded", { credits: number(body.credits), team: team.name, balance: number(answer.newBalance) });
        await reopen();
        await draw();
      }),
    }, h("h3", {}, t("teams.fund")), credits.el, days.el, h("button", { type: "submit" }, t("admin.grantButton")));
    const name = field(t("teams.name"), { id: "team-name", api: "name", value: team.name, maxlength: 100 });
    const leads = field(t("teams.supervisorNames"), { id: "team-supervisors", api: "supervisorIds", value: team.supervisors.map((p) => p.username || p.userId).join(", ") });
    const change = h("form", {
      novalidate: true,
      class: "card",
      onsubmit: guarded(status, async () => {
        const supervisorIds = await userIds(leads.input.value.split(/[\s,;]+/).filter(Boolean), team.supervisors);
        await api.call("credits", "PATCH", `/api/admin/teams/${team.id}`, { name: name.input.value.trim(), supervisorIds });
        said(status, "teams.changed", { team: name.input.value.trim() });
        await reopen();
        await draw();
      }),
    }, h("h3", {}, t("teams.change")), name.el, leads.el, h("button", { type: "submit" }, t("teams.save")));
    const remove = h("button", {
      type: "button",
      class: "danger",
      id: "delete-team",
      onclick: guarded(status, async () => {
        if (!(await ask(t("teams.confirmDelete", { team: team.name }), t("teams.delete")))) return;
        await api.call("credits", "DELETE", `/api/admin/teams/${team.id}`);
        shown(null);
        replace(detail);
        await draw();
        said(status, "teams.deleted", { team: team.name });
      }),
    }, t("teams.delete"));
    return [fund, change, h("p", {}, remove)];
  }

  /** Members: add (pasted or from a file), search, page, give, take back, remove; pending addresses. */
  function memberSection(team, one, page, search, reopen) {
    const pasted = field(t("teams.addresses"), { id: "member-addresses", api: "emails", multiline: true, rows: 3 });
    const file = field(t("teams.csvFile"), { id: "member-file", type: "file", accept: ".csv,text/csv,text/plain" });
    const add = h("form", {
      novalidate: true,
      class: "card",
      onsubmit: guarded(status, async () => {
        const chosen = file.input.files?.[0];
        const text = `${pasted.input.value}\n${chosen ? await chosen.text() : ""}`;
        const emails = addresses(text);
        if (emails.length === 0) throw new api.ApiError(400, { error: "no_addresses" });
        const sum = { added: 0, alreadyMembers: 0, pending: [] };
        for (let i = 0; i < emails.length; i += BATCH) {
          const answer = await api.call("credits", "POST", `/api/teams/${team.id}/members`, { emails: emails.slice(i, i + BATCH) });
          sum.added += answer.added.length;
          sum.alreadyMembers += answer.alreadyMembers.length;
          sum.pending.push(...answer.pending);
        }
        await reopen();
        await draw();
        said(status, "teams.addedSome", { added: number(sum.added), already: number(sum.alreadyMembers) });
        if (sum.pending.length) {
          status.append(h("p", { class: "notice warning", role: "status", id: "pending-note" }, t("teams.pendingNote", { emails: sum.pending.join(", ") })));
        }
      }),
    }, h("h3", {}, t("teams.add")), h("p", { class: "meta" }, t("teams.addHint")), pasted.el, file.el, h("button", { type: "submit" }, t("teams.addButton")));

    const find = field(t("teams.search"), { id: "member-search", type: "search", value: search });
    const seek = h("form", { class: "row", novalidate: true, onsubmit: guarded(status, () => open(team.id, 1, find.input.value.trim())) },
      find.el, h("button", { type: "submit", class: "secondary" }, t("teams.find")));
    const reclaimOnRemove = h("input", { type: "checkbox", id: "remove-reclaim" });
    const action = h("div", { id: "member-action" });
    const rows = one.members.map((m) => {
      const who = m.username || m.userId;
      const button = (label, id, f) => h("button", { type: "button", class: "secondary", "aria-label": t(`${label}Of`, { user: who }), id: `${id}-${m.userId}`, onclick: guarded(status, f) }, t(label));
      return [
        h("span", {}, who, h("br"), h("span", { class: "meta" }, m.email || "")),
        when(m.joinedAt),
        number(m.given),
        number(m.unspent),
        h("span", { class: "row" },
          button("teams.give", "give", () => replace(action, giveForm(team, m, reopen))),
          button("teams.takeBack", "take", () => replace(action, takeForm(team, m, reopen))),
          button("teams.remove", "remove", async () => {
            const reclaim = reclaimOnRemove.checked;
            const question = t(reclaim ? "teams.confirmRemoveReclaim" : "teams.confirmRemoveKeep", { user: who, team: team.name, unspent: number(m.unspent) });
            if (!(await ask(question, t("teams.remove")))) return;
            const answer = await api.call("credits", "DELETE", `/api/teams/${team.id}/members/${enc(m.userId)}?reclaim=${reclaim}`);
            await reopen();
            await draw();
            said(status, reclaim ? "teams.removed" : "teams.removedKept", { user: who, team: team.name, reclaimed: number(answer.reclaimed) });
          })),
      ];
    });
    const pages = Math.max(1, Math.ceil(one.total / PAGE));
    const pager = pages === 1 ? null : h("div", { class: "row", id: "member-pages" },
      h("button", { type: "button", class: "secondary", disabled: page <= 1, onclick: guarded(status, () => open(team.id, page - 1, search)) }, t("teams.previous")),
      h("span", {}, t("teams.pageOf", { page: number(page), pages: number(pages) })),
      h("button", { type: "button", class: "secondary", disabled: page >= pages, onclick: guarded(status, () => open(team.id, page + 1, search)) }, t("teams.next")));
    const pending = one.pending.length === 0 ? null : [
      h("h4", {}, t("teams.pending")),
      h("ul", { class: "plain", id: "pending-list" }, one.pending.map((p) => h("li", {}, p.email, " ",
        h("button", {
          type: "button",
          class: "secondary",
          "aria-label": t("teams.forgetOf", { email: p.email }),
          onclick: guarded(status, async () => {
            await api.call("credits", "DELETE", `/api/teams/${team.id}/pending/${enc(p.email)}`);
            await reopen();
            said(status, "teams.forgotten", { email: p.email });
          }),
        }, t("teams.forget"))))),
    ];
    return [
      h("h3", {}, t("teams.members", { count: number(team.memberCount) })),
      add, seek,
      h("div", { class: "check" }, reclaimOnRemove, h("label", { for: "remove-reclaim" }, t("teams.reclaimOnRemove"))),
      h("div", { id: "member-list" }, table(
        [t("admin.user"), t("teams.joined"), t("teams.given"), t("teams.unspent"), t("teams.actions")],
        rows, t(search ? "teams.noMatch" : "teams.noMembers", { search }))),
      pager, action, pending,
    ];
  }

  function giveForm(team, m, reopen) {
    const who = m.username || m.userId;
    const credits = field(t("admin.credits"), { id: "give-credits", api: "credits", type: "number", min: 1, inputmode: "numeric", required: true });
    const days = field(t("teams.giveDays"), { id: "give-days", api: "expiryDays", type: "number", min: 1, inputmode: "numeric" });
    const note = field(t("teams.note"), { id: "give-note", api: "notes", maxlength: 1000 });
    const key = crypto.randomUUID();
    const form = h("form", {
      novalidate: true,
      class: "card",
      onsubmit: guarded(status, async () => {
        const body = { userId: m.userId, credits: Number(credits.input.value), expiryDays: Number(days.input.value) || null, notes: note.input.value.trim() || undefined };
        const answer = await api.call("credits", "POST", `/api/teams/${team.id}/transfers`, body, { headers: { "idempotency-key": key } });
        await reopen();
        await draw();
        said(status, "teams.gave", { credits: number(body.credits), user: who, wallet: number(answer.walletCredits) });
      }),
    }, h("h3", {}, t("teams.giveTo", { user: who })), credits.el, days.el, note.el, h("button", { type: "submit" }, t("teams.give")));
    queueMicrotask(() => credits.input.focus());
    return form;
  }

  function takeForm(team, m, reopen) {
    const who = m.username || m.userId;
    const credits = field(t("teams.takeCredits", { unspent: number(m.unspent) }), { id: "take-credits", api: "credits", type: "number", min: 1, inputmode: "numeric" });
    const key = crypto.randomUUID();
    const form = h("form", {
      novalidate: true,
      class: "card",
      onsubmit: guarded(status, async () => {
        const body = { userId: m.userId, credits: credits.input.value ? Number(credits.input.value) : undefined };
        const answer = await api.call("credits", "POST", `/api/teams/${team.id}/reclaims`, body, { headers: { "idempotency-key": key } });
        await reopen();
        await draw();
        said(status, "teams.tookBack", { credits: number(answer.reclaimed), user: who, wallet: number(answer.walletCredits) });
      }),
    }, h("h3", {}, t("teams.takeFrom", { user: who })), credits.el, h("button", { type: "submit" }, t("teams.takeBack")));
    queueMicrotask(() => credits.input.focus());
    return form;
  }

  /** The team's usage over a range (its members while they belonged), per member, with the export. */
  function usageSection(team) {
    const from = field(t("admin.from"), { api: "from", type: "date", id: "team-from" });
    const to = field(t("admin.to"), { api: "to", type: "date", id: "team-to" });
    const report = h("div", { id: "team-report" });
    const range = () => {
      const q = new URLSearchParams({ teamId: team.id });
      if (from.input.value) q.set("from", from.input.value);
      if (to.input.value) q.set("to", to.input.value);
      return q.toString();
    };
    const show = async () => {
      const chosen = Boolean(from.input.value || to.input.value);
      const [stats, flows] = await Promise.all([api.call("usage", "GET", `/api/usage/stats?${range()}`), chatflowNames()]);
      replace(report, period(stats, chosen), usageCharts(stats, flows),
        bars(t("teams.perMember"), (stats.byUser || []).map((u) => ({ label: u.username || u.userId, value: u.credits })),
          t("admin.user"), t("usage.credits"), t("usage.nothing")));
    };
    const exportButton = h("button", {
      type: "button",
      class: "secondary",
      id: "team-export",
      onclick: guarded(status, async () => {
        const res = await api.raw("usage", `/api/usage/export?${range()}`);
        const link = h("a", { href: URL.createObjectURL(await res.blob()), download: `usage-${team.name}.csv` }, t("teams.download", { team: team.name }));
        replace(status, h("p", { class: "notice", role: "status" }, t("admin.exported"), " ", link));
        link.focus();
      }),
    }, t("admin.export"));
    show().catch((err) => replace(report, errorBox(err)));
    return [
      h("h3", {}, t("teams.usage")),
      h("form", { class: "row", novalidate: true, onsubmit: guarded(status, show) }, from.el, to.el, h("button", { type: "submit" }, t("admin.show")), exportButton),
      report,
    ];
  }

  /** The wallet's entries: grants, gifts to members (named), what came back. */
  function walletHistory(entries, members) {
    const byId = Object.fromEntries((members || []).map((m) => [m.userId, m.username || m.userId]));
    return table(
      [t("credits.when"), t("credits.type"), t("teams.member"), t("credits.amount"), t("credits.balanceAfter")],
      entries.map((e) => [when(e.createdAt), t(`entryTypes.${e.type}`), e.reference ? byId[e.reference] || e.reference : "—",
        e.amount > 0 ? `+${number(e.amount)}` : number(e.amount), number(e.balanceAfter)]),
      t("teams.noWalletHistory"),
    );
  }

  const createForm = () => {
    const name = field(t("teams.name"), { id: "new-team-name", api: "name", maxlength: 100 });
    const leads = field(t("teams.supervisorNames"), { id: "new-team-supervisors", api: "supervisorIds" });
    return h("form", {
      novalidate: true,
      class: "card",
      onsubmit: guarded(status, async () => {
        const supervisorIds = await userIds(leads.input.value.split(/[\s,;]+/).filter(Boolean));
        const team = await api.call("credits", "POST", "/api/admin/teams", { name: name.input.value.trim(), supervisorIds });
        await draw();
        await open(team.id);
        said(status, "teams.made", { team: team.name });
      }),
    }, h("h2", {}, t("teams.make")), name.el, leads.el, h("button", { type: "submit" }, t("teams.makeButton")));
  };

  replace(main, h("h1", {}, t("titles.teams")), status, h("div", { class: "split" },
    h("div", {}, list, admin ? createForm() : null), detail));
  await draw();
  if (wanted) await open(wanted).catch((err) => replace(detail, errorBox(err)));
}

export const teamPages = { teams };
