// An answer's text as Markdown with maths, made harmless: maths is taken
// out before Markdown (outside code), Markdown becomes HTML (marked), the
// HTML is sanitised (DOMPurify: no scripts, no event handlers, no
// javascript: links), and maths is rendered into elements with
// katex.render (trust: false), which styles through the DOM, not through
// inline style attributes the page's policy would refuse.

import { marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.mjs";
import katex from "../vendor/katex/katex.mjs";

marked.setOptions({ gfm: true, breaks: false });

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const MATH = /\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\]|\\\(([\s\S]+?)\\\)|\$([^\s$](?:[^$\n]*?[^\s$])?)\$/g;

/** Splits out maths outside code (fences, indented blocks, spans); returns text with markers. */
function extractMath(text, found) {
  const code = /((?:^|\n)(?:```|~~~)[\s\S]*?(?:\n(?:```|~~~)|$)|(?:^|\n)(?: {4}|\t)[^\n]*|(`+)[\s\S]*?\2)/g;
  const parts = text.split(code).filter((_, i) => i % 3 !== 2);
  return parts
    .map((part, i) => {
      if (i % 2 === 1) return part;
      return part.replace(MATH, (_, block, bracket, paren, inline) => {
        const display = block !== undefined || bracket !== undefined;
        found.push({ tex: block ?? bracket ?? paren ?? inline, display });
        return `\u0001${found.length - 1}\u0002`;
      });
    })
    .join("");
}

function putMath(root, found) {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const nodes = [];
  while (walker.nextNode()) {
    if (walker.currentNode.nodeValue.includes("\u0001")) nodes.push(walker.currentNode);
  }
  for (const node of nodes) {
    const pieces = node.nodeValue.split(/\u0001(\d+)\u0002/);
    const frag = document.createDocumentFragment();
    pieces.forEach((piece, i) => {
      if (i % 2 === 0) {
        if (piece) frag.append(document.createTextNode(piece));
        return;
      }
      const math = found[Number(piece)];
      if (!math) return;
      const el = document.createElement(math.display ? "div" : "span");
      el.className = math.display ? "math math-display" : "math";
      try {
        katex.render(math.tex, el, { displayMode: math.display, throwOnError: false, trust: false });
      } catch {
        el.textContent = math.tex;
      }
      frag.append(el);
    });
    node.replaceWith(frag);
  }
}

/** The rendered answer, as a fragment ready to insert. */
export function renderAnswer(text) {
  const found = [];
  // The markers are ours alone: an answer's own are dropped.
  const clean = (text || "").replace(/[\u0001\u0002]/g, "");
  const html = marked.parse(extractMath(clean.replace(/\\\$/g, "\u0003"), found).replace(/\u0003/g, "\\$"));
  const frag = DOMPurify.sanitize(html, {
    RETURN_DOM_FRAGMENT: true,
    FORBID_TAGS: ["style", "form", "input", "button", "iframe", "object", "embed"],
    // No styles, and nothing to pass an answer off as the console's own
    // alerts or cost lines.
    FORBID_ATTR: ["style", "class", "id", "role"],
  });
  putMath(frag, found);
  return frag;
}
