// A bar chart that is its own table: the title above, one row per item
// with its label, a bar (SVG attributes, never inline styles) and the
// figure. Labels sit in their own column, so they never overlap a bar or
// a value; the table reflows at 375 px, and screen readers and the
// keyboard get the figures as a table.

import { h, number } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

/**
 * Bars of `items` ({label, value}) titled `title`, the columns headed
 * `labelHead` and `valueHead`; `empty`, a sentence shown instead when
 * there is nothing to draw.
 */
export function bars(title, items, labelHead, valueHead, empty) {
  if (items.length === 0) {
    return h("section", { class: "chart-box" }, h("h2", { class: "chart-title" }, title), h("p", { class: "meta empty" }, empty));
  }
  const max = Math.max(1, ...items.map((i) => i.value));
  const bar = (value) => svg("svg", { viewBox: "0 0 100 10", preserveAspectRatio: "none", class: "bar", "aria-hidden": "true", focusable: "false" },
    svg("rect", { x: 0, y: 0, width: Math.max(0.5, (value / max) * 100), height: 10, class: "chart-bar" }));
  return h(
    "table",
    { class: "chart-box bars" },
    h("caption", { class: "chart-title" }, title),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, labelHead), h("th", { scope: "col" }, valueHead))),
    h("tbody", {}, items.map((i) => h("tr", {},
      h("th", { scope: "row" }, i.label),
      h("td", {}, h("span", { class: "bar-cell" }, bar(i.value), h("span", { class: "figure" }, number(i.value))))))),
  );
}
