// A bar chart as SVG elements (attributes, never inline styles), with the
// figures also in a table for screen readers and the keyboard.

import { h, number } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

/** Bars of `items` (label, value), titled `title`, with a data table. */
export function bars(title, items, labelHead, valueHead) {
  const width = 600;
  const barHeight = 22;
  const height = Math.max(1, items.length) * (barHeight + 6);
  const max = Math.max(1, ...items.map((i) => i.value));
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title });
  items.forEach((item, i) => {
    const y = i * (barHeight + 6);
    const w = Math.max(2, Math.round((item.value / max) * (width - 220)));
    const text = svg("text", { x: 0, y: y + 16, class: "chart-label" });
    text.textContent = item.label;
    const value = svg("text", { x: 150 + w + 6, y: y + 16, class: "chart-value" });
    value.textContent = number(item.value);
    chart.append(text, svg("rect", { x: 150, y, width: w, height: barHeight, rx: 3, class: "chart-bar" }), value);
  });
  const table = h(
    "table",
    { class: "figures" },
    h("caption", {}, title),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, labelHead), h("th", { scope: "col" }, valueHead))),
    h("tbody", {}, items.map((i) => h("tr", {}, h("td", {}, i.label), h("td", {}, number(i.value))))),
  );
  return h("figure", { class: "chart-box" }, chart, h("details", {}, h("summary", {}, title), table));
}
