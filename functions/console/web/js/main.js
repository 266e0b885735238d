// The console's shell: the header (navigation for the caller's role,
// locale, theme, sign-out), hash routes, and the error sentence of every
// refusal. Pages live in pages/*.js and render into <main>.

import { h, replace, day, number } from "./dom.js";
import { t, start as startI18n, onChange, setLocale, locale, locales, has } from "./i18n.js";
import * as api from "./api.js";
import { authPages } from "./pages/auth.js";
import { chatPage } from "./pages/chat.js";
import { accountPages } from "./pages/account.js";
import { adminPages } from "./pages/admin.js";
import { teamPages } from "./pages/teams.js";
import { allowancePages } from "./pages/allowances.js";

const THEME = "fgw.theme";
const app = document.getElementById("app");

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
}

function theme() {
  return localStorage.getItem(THEME) || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
}

/** The sentence for an error: a localised one per code, never the server's text. */
export function sentence(err) {
  const code = err instanceof api.ApiError ? err.code : "network";
  const vars = { ...(err?.body || {}) };
  if (vars.retryAfterSeconds === undefined) vars.retryAfterSeconds = "?";
  else vars.minutes = Math.max(1, Math.ceil(vars.retryAfterSeconds / 60));
  if (code === "insufficient_credits") {
    // Out of credits: when an allowance brings more, and what of the rest
    // is about to expire.
    const soon = vars.expiringSoon;
    const base = vars.nextCreditsAt
      ? t("errors.insufficient_credits_next", { ...vars, nextCredits: number(vars.nextCredits), nextDay: day(vars.nextCreditsAt) })
      : t("errors.insufficient_credits", vars);
    return soon ? `${base} ${t("errors.insufficient_credits_expiring", { credits: number(soon.credits), day: day(soon.expiresAt) })}` : base;
  }
  const key = `errors.${code}`;
  return has(key) ? t(key, vars) : t("errors.unknown", { status: err?.status ?? 0 });
}

/** An alert with the error's sentence, and a retry button when `retry` is given. */
export function errorBox(err, retry) {
  const box = h("div", { class: "error", role: "alert" }, h("p", {}, sentence(err)));
  if (retry) box.append(h("button", { type: "button", onclick: retry }, t("common.retry")));
  return box;
}

/** Says `key` (with `vars`) in the live region `status`: what a change did. */
export function said(status, key, vars) {
  replace(status, h("p", { class: "notice", role: "status" }, t(key, vars)));
}

/** Takes away the field sentences an earlier refusal left in `form`. */
function clearFieldErrors(form) {
  if (!form) return;
  for (const p of form.querySelectorAll(".field-error")) p.remove();
  for (const input of form.querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
    input.removeAttribute("aria-describedby");
  }
}

/** The input of `form` that fills the request field `name` (`pricing.perRequest`). */
function fieldInput(form, name) {
  const inputs = [...form.querySelectorAll("[data-field]")];
  const bare = name.replace(/\[\d+\]/g, "");
  return inputs.find((el) => el.dataset.field === name) || inputs.find((el) => el.dataset.field === bare);
}

/**
 * Shows a refusal: its sentence in `status` and, when it is a 400 naming a
 * field of `form`, that field's own sentence next to it (localised, never
 * the server's text), the field marked invalid and focused.
 */
export function showError(status, err, form) {
  clearFieldErrors(form);
  replace(status, errorBox(err));
  const name = err?.code === "invalid_input" ? err.body?.field : null;
  const input = name && form ? fieldInput(form, name) : null;
  if (!input) return;
  const key = `fields.${input.dataset.field.split(".").pop()}`;
  const note = h("p", { class: "field-error", id: `${input.id}-error` }, has(key) ? t(key) : t("errors.invalid_input"));
  input.after(note);
  input.setAttribute("aria-invalid", "true");
  input.setAttribute("aria-describedby", note.id);
  input.focus();
}

/**
 * A submit (or click) handler for a form: runs `f`, and shows a refusal
 * in `status` and at the field it names.
 */
export function submitting(status, f) {
  return async (e) => {
    e?.preventDefault?.();
    const target = e?.currentTarget;
    const form = target instanceof HTMLFormElement ? target : target?.form || null;
    clearFieldErrors(form);
    try {
      await f();
    } catch (err) {
      showError(status, err, form);
    }
  };
}

/**
 * Asks before what cannot be undone: a modal dialog with `question`, a
 * Cancel button (focused: the safe choice) and `confirmLabel`. Escape
 * cancels. Resolves true when confirmed; focus returns where it was.
 */
export function ask(question, confirmLabel) {
  return new Promise((resolve) => {
    const back = document.activeElement;
    const yes = h("button", { type: "button", class: "danger", id: "confirm-yes" }, confirmLabel);
    const no = h("button", { type: "button", class: "secondary", id: "confirm-no" }, t("common.cancel"));
    const dialog = h("dialog", { id: "confirm", "aria-labelledby": "confirm-question" },
      h("p", { id: "confirm-question" }, question),
      h("div", { class: "row" }, no, yes));
    const close = (answer) => {
      dialog.close();
      dialog.remove();
      back?.focus?.();
      resolve(answer);
    };
    yes.addEventListener("click", () => close(true));
    no.addEventListener("click", () => close(false));
    dialog.addEventListener("cancel", (e) => {
      e.preventDefault();
      close(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    no.focus();
  });
}

const routes = {
  ...authPages,
  "chat": chatPage,
  ...accountPages,
  ...adminPages,
  ...teamPages,
  ...allowancePages,
};

// Pages for a visitor; `verify` and `reset` stay open to a signed-in
// person too (a new email's code, a reset link opened in this browser).
const PUBLIC = new Set(["signin", "signup", "verify", "forgot", "reset"]);
const VISITORS_ONLY = new Set(["signin", "signup", "forgot"]);
let resetToken = "";

/** The reset link's token, kept in memory only (never in the history). */
export function takeResetToken() {
  const token = resetToken;
  resetToken = "";
  return token;
}

function nav(user) {
  const link = (route, label) =>
    h("a", { href: `#/${route}`, "aria-current": current() === route ? "page" : undefined }, t(label));
  const links = [
    link("chat", "nav.chat"),
    link("credits", "nav.credits"),
    link("usage", "nav.usage"),
    link("keys", "nav.keys"),
    link("teams", "nav.teams"),
    link("profile", "nav.profile"),
  ];
  if (user.role === "admin" || user.role === "supervisor") {
    links.push(link("admin/users", "nav.users"));
    if (user.role === "admin") links.push(link("admin/chatflows", "nav.chatflows"), link("admin/allowances", "nav.allowances"));
    links.push(link("admin/usage", "nav.dashboard"));
  }
  return h("nav", { "aria-label": t("nav.label") }, links);
}

function header(user) {
  const localeSelect = h(
    "select",
    {
      id: "locale",
      "aria-label": t("common.language"),
      onchange: (e) => {
        setLocale(e.target.value);
        // Mail follows the console's language: it is kept on the profile
        // (at the sign-in, when chosen before it).
        if (api.currentUser()) api.call("auth", "PUT", "/api/profile", { locale: e.target.value }).catch(() => {});
        else chosenSignedOut = true;
      },
    },
    locales().map((l) => h("option", { value: l, selected: l === locale() }, t(`locales.${l}`))),
  );
  const themeButton = h(
    "button",
    {
      type: "button",
      id: "theme",
      "aria-pressed": theme() === "dark" ? "true" : "false",
      onclick: () => {
        const next = theme() === "dark" ? "light" : "dark";
        localStorage.setItem(THEME, next);
        applyTheme(next);
        render();
      },
    },
    t(theme() === "dark" ? "common.lightTheme" : "common.darkTheme"),
  );
  const right = [localeSelect, themeButton];
  if (user) {
    right.push(
      h("span", { class: "who" }, user.username || ""),
      h("button", { type: "button", id: "signout", onclick: () => api.signOut().then(() => go("signin")) }, t("nav.signOut")),
    );
  }
  // On a narrow screen the navigation and the tools fold behind one
  // "Menu" button, so the header stays one row.
  const menu = h("div", { class: "menu", id: "menu" }, user ? nav(user) : null, h("div", { class: "tools" }, right));
  const toggle = h("button", {
    type: "button",
    id: "menu-toggle",
    class: "secondary",
    "aria-expanded": "false",
    "aria-controls": "menu",
    onclick: () => {
      const open = menu.classList.toggle("open");
      toggle.setAttribute("aria-expanded", String(open));
    },
  }, t("nav.menu"));
  return h(
    "header",
    { class: "top" },
    h("a", { class: "brand", href: user ? "#/chat" : "#/signin" }, t("app.name")),
    toggle,
    menu,
  );
}

/** On every page while Flowise is the local stand-in: its answers are canned. */
function standInBanner() {
  if (!api.standIn()) return null;
  return h("p", { class: "banner", id: "stand-in", role: "note" }, t("app.standIn"));
}

function current() {
  return (location.hash.replace(/^#\/?/, "").split("?")[0] || "").replace(/\/$/, "");
}

export function query() {
  return new URLSearchParams(location.hash.split("?")[1] || "");
}

export function go(route) {
  if (location.hash === `#/${route}`) render();
  else location.hash = `#/${route}`;
}

let rendering = 0;
async function render() {
  const mine = ++rendering;
  const user = api.currentUser();
  let route = current();
  if (!user && !PUBLIC.has(route)) route = "signin";
  if (user && (VISITORS_ONLY.has(route) || !routes[route])) route = "chat";
  const main = h("main", { id: "main", tabindex: "-1" });
  // A page being fetched says so: a bar at the top and a busy <main>.
  const progress = h("div", { class: "progress", id: "progress", role: "progressbar", "aria-label": t("common.loading") });
  main.setAttribute("aria-busy", "true");
  replace(app, header(user), standInBanner(), progress, main);
  try {
    await routes[route](main, { user, go, query });
  } catch (err) {
    if (mine === rendering) replace(main, errorBox(err, render));
  } finally {
    progress.remove();
    main.removeAttribute("aria-busy");
  }
  document.title = `${t(`titles.${route.replace("/", "_")}`)} · ${t("app.name")}`;
}

/** Whether the language was chosen on this page before anyone signed in. */
let chosenSignedOut = false;

/**
 * The console's language is the account's (README "Allowances and
 * warnings"): a language chosen before signing in is the person's choice,
 * and is kept on their profile; otherwise whoever chose one before, in
 * any browser, gets it when they sign in (not remembered by this
 * browser, which may be shared); whoever never chose keeps this
 * browser's, which is then kept on the profile, so mail is in the
 * language they read.
 */
function followLanguage(who) {
  const keep = () => api.call("auth", "PUT", "/api/profile", { locale: locale() }).catch(() => {});
  if (chosenSignedOut) {
    chosenSignedOut = false;
    if (who.locale !== locale()) keep();
  } else if (who.locale && who.locale !== locale()) {
    setLocale(who.locale, false).catch(() => {});
  } else if (!who.locale && locale() !== "en") {
    keep();
  }
}

async function boot() {
  applyTheme(theme());
  await startI18n();
  await api.loadConfig();
  if (location.pathname.endsWith("/reset-password")) {
    resetToken = new URLSearchParams(location.search).get("token") || "";
    history.replaceState(null, "", `${location.pathname.replace(/reset-password$/, "")}#/reset`);
  }
  api.onUser(followLanguage);
  await api.restore();
  api.onSessionEnded(() => go("signin?ended=1"));
  onChange(render);
  addEventListener("hashchange", render);
  await render();
}

boot().catch((err) => replace(app, errorBox(err, () => location.reload())));
