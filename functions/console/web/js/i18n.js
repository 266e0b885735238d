// Every visible string comes from a locale file (locales/*.json); the
// choice is remembered in localStorage.

const LOCALES = ["en", "zh-CN", "zh-TW"];
const KEY = "fgw.locale";
let strings = {};
let fallback = {};
let current = "en";
const listeners = [];

function initial() {
  const saved = localStorage.getItem(KEY);
  if (LOCALES.includes(saved)) return saved;
  const lang = (navigator.language || "en").toLowerCase();
  if (lang.startsWith("zh")) {
    return /tw|hk|mo|hant/.test(lang) ? "zh-TW" : "zh-CN";
  }
  return "en";
}

async function load(locale) {
  const res = await fetch(new URL(`../locales/${locale}.json`, import.meta.url));
  return res.json();
}

/** Loads the remembered (or the browser's) locale. */
export async function start() {
  fallback = await load("en");
  await setLocale(initial(), false);
}

/** Switches to `locale`, remembers it and tells the listeners. */
export async function setLocale(locale, remember = true) {
  if (!LOCALES.includes(locale)) return;
  strings = locale === "en" ? fallback : await load(locale);
  current = locale;
  document.documentElement.lang = locale;
  if (remember) localStorage.setItem(KEY, locale);
  for (const listener of listeners) listener();
}

export function locale() {
  return current;
}

export function locales() {
  return LOCALES;
}

export function onChange(listener) {
  listeners.push(listener);
}

/** The string `key` ("a.b.c"), its `{name}` slots filled from `vars`. */
export function t(key, vars = {}) {
  const find = (table) => key.split(".").reduce((o, k) => (o == null ? o : o[k]), table);
  let text = find(strings);
  if (typeof text !== "string") text = find(fallback);
  if (typeof text !== "string") return key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

/** Whether `key` exists (so a specific message can fall back to a general one). */
export function has(key) {
  return typeof key.split(".").reduce((o, k) => (o == null ? o : o[k]), fallback) === "string";
}
