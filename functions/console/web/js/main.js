// The console's shell: the header (navigation for the caller's role,
// locale, theme, sign-out), hash routes, and the error sentence of every
// refusal. Pages live in pages/*.js and render into <main>.

import { h, replace } from "./dom.js";
import { t, start as startI18n, onChange, setLocale, locale, locales, has } from "./i18n.js";
import * as api from "./api.js";
import { authPages } from "./pages/auth.js";
import { chatPage } from "./pages/chat.js";
import { accountPages } from "./pages/account.js";
import { adminPages } from "./pages/admin.js";

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
  const key = `errors.${code}`;
  return has(key) ? t(key, vars) : t("errors.unknown", { status: err?.status ?? 0 });
}

/** An alert with the error's sentence, and a retry button when `retry` is given. */
export function errorBox(err, retry) {
  const box = h("div", { class: "error", role: "alert" }, h("p", {}, sentence(err)));
  if (retry) box.append(h("button", { type: "button", onclick: retry }, t("common.retry")));
  return box;
}

const routes = {
  ...authPages,
  "chat": chatPage,
  ...accountPages,
  ...adminPages,
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
    link("profile", "nav.profile"),
  ];
  if (user.role === "admin" || user.role === "supervisor") {
    links.push(link("admin/users", "nav.users"));
    if (user.role === "admin") links.push(link("admin/chatflows", "nav.chatflows"));
    links.push(link("admin/usage", "nav.dashboard"));
  }
  return h("nav", { "aria-label": t("nav.label") }, links);
}

function header(user) {
  const localeSelect = h(
    "select",
    { id: "locale", "aria-label": t("common.language"), onchange: (e) => setLocale(e.target.value) },
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
  return h(
    "header",
    { class: "top" },
    h("a", { class: "brand", href: user ? "#/chat" : "#/signin" }, t("app.name")),
    user ? nav(user) : null,
    h("div", { class: "tools" }, right),
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
  replace(app, header(user), standInBanner(), main);
  try {
    await routes[route](main, { user, go, query });
  } catch (err) {
    if (mine === rendering) replace(main, errorBox(err, render));
  }
  document.title = `${t(`titles.${route.replace("/", "_")}`)} · ${t("app.name")}`;
}

async function boot() {
  applyTheme(theme());
  await startI18n();
  await api.loadConfig();
  if (location.pathname.endsWith("/reset-password")) {
    resetToken = new URLSearchParams(location.search).get("token") || "";
    history.replaceState(null, "", `${location.pathname.replace(/reset-password$/, "")}#/reset`);
  }
  await api.restore();
  onChange(render);
  addEventListener("hashchange", render);
  await render();
}

boot().catch((err) => replace(app, errorBox(err, () => location.reload())));
