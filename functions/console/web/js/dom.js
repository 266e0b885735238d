// Building the page from elements, never from HTML strings: text is
// always set as text, so nothing a server or a user wrote can become
// markup (answers are the one exception, and go through render.js).

/** An element: h("button", {class: "x", onclick: f}, "text", child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children (strings become text nodes; arrays are flattened). */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/**
 * A labelled input: <label>text <input></label> with an id. `api` names
 * the request field it fills (`pricing.perRequest`), so a refusal naming
 * that field is shown next to it (main.js `showError`).
 */
let ids = 0;
export function field(label, attrs = {}) {
  const id = attrs.id || `f${++ids}`;
  const { multiline, api, ...rest } = attrs;
  const input = h(multiline ? "textarea" : "input", { ...rest, id, dataset: api ? { field: api } : undefined });
  return { input, el: h("div", { class: "field" }, h("label", { for: id }, label), input) };
}

/** A number as the locale writes it. */
export function number(n) {
  return new Intl.NumberFormat(document.documentElement.lang || "en").format(n);
}

/** A day (of a date or an instant) as the locale writes it. */
export function day(iso) {
  return new Intl.DateTimeFormat(document.documentElement.lang || "en", { dateStyle: "medium", timeZone: "UTC" })
    .format(new Date(iso.length === 10 ? `${iso}T00:00:00Z` : iso));
}

/** A date and time as the locale writes it. */
export function when(iso) {
  if (!iso) return "—";
  return new Intl.DateTimeFormat(document.documentElement.lang || "en", {
    dateStyle: "medium",
    timeStyle: "short",
  }).format(new Date(iso));
}
