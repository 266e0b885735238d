// The chat page: the user's chatflows, a sidebar of their sessions, and a
// conversation whose answer streams in token by token, can be stopped
// midway (POST .../stop: in AWS a closed connection is never reported to
// the function), and ends with its cost and the new balance.

import { h, replace, number } from "../dom.js";
import { t } from "../i18n.js";
import * as api from "../api.js";
import { errorBox, ask as askFirst } from "../main.js";
import { renderAnswer } from "../render.js";

/** The sentence under an answer its payer's credits ended, with the way to more. */
function creditsEnded(charged) {
  return h("p", { class: "meta cost" },
    t("chat.creditsEnded", { charged: number(charged) }), " ",
    h("a", { href: "#/credits" }, t("chat.seeCredits")));
}

/** The files sent with a question: names, and (once priced) what each counted as and cost. */
function attachmentList(files) {
  return h("ul", { class: "attachments", "aria-label": t("chat.attachments") }, files.map((f) => h("li", {},
    h("span", { class: "file-name" }, f.name),
    // A file the move from the old platform could not bring (too large, a
    // link, a refused type): named, and said so.
    f.not_imported ? h("span", { class: "meta", title: f.not_imported }, " · ", t("chat.fileNotBrought")) : null,
    f.input_tokens === undefined ? null : h("span", { class: "meta" }, " · ", t("chat.fileCost", {
      tokens: number(f.input_tokens),
      credits: number(Math.round(f.credits * 1000) / 1000),
    })))));
}

function bubble(role, content, status, reason, metadata = {}) {
  const body = h("div", { class: "content" });
  if (role === "assistant") body.append(renderAnswer(content));
  else body.textContent = content;
  const el = h("article", { class: `message ${role}`, "aria-label": t(role === "user" ? "chat.you" : "chat.assistant") }, body);
  if (role === "user" && metadata.files?.length) el.append(attachmentList(metadata.files));
  if (role === "assistant" && typeof metadata.credits === "number" && status !== "incomplete") {
    el.append(h("p", { class: "meta cost" }, t("chat.cost", { charged: number(metadata.credits) })));
  }
  if (status === "incomplete") {
    el.append(reason === "credits_exhausted"
      ? h("p", { class: "meta" }, t("chat.incompleteCredits"), " ", h("a", { href: "#/credits" }, t("chat.seeCredits")))
      : h("p", { class: "meta" }, t(reason === "stopped" ? "chat.incompleteStopped" : "chat.incomplete")));
  }
  return { el, body };
}

/** What a question to `chatflow` costs, by its rule or the default one. */
function priceSentence(rules, chatflow) {
  const rule = rules.find((r) => r.chatflowId === chatflow) || rules.find((r) => r.chatflowId === "default");
  if (!rule) return "";
  return t(rule.perRequest === 1 ? "chat.priceOne" : "chat.price", {
    perRequest: number(rule.perRequest),
    input: number(rule.perInputToken * 1000),
    output: number(rule.perOutputToken * 1000),
  });
}

export async function chatPage(main, { query }) {
  const [flows, sessions, balance, pricing] = await Promise.all([
    api.call("predict", "GET", "/api/v1/chatflows"),
    api.call("predict", "GET", "/api/v1/chat/sessions?limit=50"),
    api.call("credits", "GET", "/api/credits/total-balance"),
    api.call("credits", "GET", "/api/credits/pricing"),
  ]);
  const state = { session: null, chatflow: flows.chatflows[0]?.id || null, messageId: null, running: false, credits: balance.totalCredits };
  const balanceEl = h("p", { class: "balance", id: "balance" });
  const price = h("p", { class: "meta", id: "price" });
  const empty = h("div", { id: "no-credits", role: "status" });
  const send = h("button", { type: "submit", id: "send" }, t("chat.send"));
  /** Reads the balance again (once an administrator has granted some). */
  async function recheck() {
    try {
      state.credits = (await api.call("credits", "GET", "/api/credits/total-balance")).totalCredits;
      drawMeans();
    } catch (err) {
      replace(status, errorBox(err));
    }
  }
  /** The balance, the price of the chosen chatflow, and at 0 the banner with Send off. */
  function drawMeans() {
    balanceEl.textContent = t("chat.balance", { credits: number(state.credits) });
    price.textContent = state.chatflow ? priceSentence(pricing.rules, state.chatflow) : "";
    const none = state.credits <= 0 && flows.chatflows.length > 0;
    replace(empty, none
      ? h("p", { class: "banner warning" }, t("chat.noCredits"), " ",
        h("a", { href: "#/credits" }, t("chat.seeCredits")), " ",
        h("button", { type: "button", id: "check-balance", class: "secondary", onclick: recheck }, t("chat.checkAgain")))
      : null);
    send.disabled = none || state.running;
  }
  const list = h("div", { class: "messages", id: "messages", "aria-live": "polite" });
  const status = h("div", { class: "status", "aria-live": "assertive" });
  const select = h(
    "select",
    { id: "chatflow", "aria-label": t("chat.chatflow"), onchange: (e) => { state.chatflow = e.target.value; drawMeans(); newChat(); } },
    flows.chatflows.map((f) => h("option", { value: f.id }, f.name)),
  );
  const question = h("textarea", { id: "question", rows: 3, "aria-label": t("chat.question"), placeholder: t("chat.placeholder") });
  // The native picker speaks the browser's language: it is hidden behind
  // a button and the chosen names, in the console's.
  const chosen = h("span", { class: "meta", id: "file-names", "aria-live": "polite" }, t("chat.noFiles"));
  const files = h("input", {
    id: "files",
    type: "file",
    multiple: true,
    class: "visually-hidden",
    onchange: () => replace(chosen, files.files.length ? [...files.files].map((f) => f.name).join(", ") : t("chat.noFiles")),
  });
  const picker = h("span", { class: "file" },
    files,
    h("label", { for: "files", class: "button secondary", id: "attach" }, t("chat.attach")),
    chosen);
  const stop = h("button", { type: "button", id: "stop", class: "secondary", hidden: true, onclick: stopAnswer }, t("chat.stop"));
  const sidebar = h("aside", { class: "sessions", id: "sessions", "aria-label": t("chat.sessions") });
  // On a narrow screen the conversations are a drawer.
  const drawer = h("button", {
    type: "button",
    id: "sessions-toggle",
    class: "secondary",
    "aria-expanded": "false",
    "aria-controls": "sessions",
    onclick: () => showDrawer(!sidebar.classList.contains("open")),
  }, t("chat.sessions"));
  sidebar.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && sidebar.classList.contains("open")) {
      showDrawer(false);
      drawer.focus();
    }
  });
  function showDrawer(open) {
    sidebar.classList.toggle("open", open);
    drawer.setAttribute("aria-expanded", String(open));
    if (open) sidebar.querySelector("button")?.focus();
  }

  function drawSessions(items) {
    replace(
      sidebar,
      h("h2", {}, t("chat.sessions")),
      h("button", { type: "button", id: "new-chat", onclick: newChat }, t("chat.newChat")),
      items.length === 0 ? h("p", { class: "meta" }, t("chat.noSessions")) : null,
      h("ul", {}, items.map((s) => h(
        "li",
        { class: s.session_id === state.session ? "current" : "" },
        h("button", { type: "button", class: "link", onclick: () => { showDrawer(false); openSession(s); } }, s.topic || t("chat.untitled")),
        h("button", {
          type: "button",
          class: "icon",
          "aria-label": t("chat.deleteSession", { topic: s.topic }),
          onclick: () => deleteSession(s),
        }, "×"),
      ))),
    );
  }

  async function reloadSessions() {
    const fresh = await api.call("predict", "GET", "/api/v1/chat/sessions?limit=50");
    sessions.sessions = fresh.sessions;
    drawSessions(sessions.sessions);
  }

  function newChat() {
    showDrawer(false);
    state.session = null;
    replace(list);
    replace(status);
    drawSessions(sessions.sessions);
    question.focus();
  }

  async function openSession(s) {
    state.session = s.session_id;
    state.chatflow = s.chatflow_id;
    select.value = s.chatflow_id;
    drawMeans();
    const page = await api.call("predict", "GET", `/api/v1/chat/sessions/${encodeURIComponent(s.session_id)}/messages?limit=100`);
    replace(list, page.messages.map((m) => bubble(m.role, m.content, m.status, m.metadata?.error, m.metadata || {}).el));
    drawSessions(sessions.sessions);
  }

  async function deleteSession(s) {
    if (!(await askFirst(t("chat.confirmDelete", { topic: s.topic }), t("chat.delete")))) return;
    try {
      await api.call("predict", "DELETE", `/api/v1/chat/sessions/${encodeURIComponent(s.session_id)}`);
      sessions.sessions = sessions.sessions.filter((x) => x.session_id !== s.session_id);
      if (state.session === s.session_id) newChat();
      else drawSessions(sessions.sessions);
    } catch (err) {
      replace(status, errorBox(err));
    }
  }

  let stopping = null;
  async function stopAnswer() {
    if (!state.messageId) return;
    stop.disabled = true;
    try {
      await api.call("predict", "POST", `/api/v1/chat/predict/${encodeURIComponent(state.messageId)}/stop`);
      // Until the answer ends: then it goes (ask's finally).
      stopping = h("p", { class: "notice", id: "stopping" }, t("chat.stopping"));
      if (state.running) replace(status, stopping);
    } catch (err) {
      replace(status, errorBox(err));
    }
  }

  async function upload() {
    const ids = [];
    for (const file of files.files) {
      const data = new FormData();
      data.append("file", file, file.name);
      const stored = await api.call("predict", "POST", "/api/v1/chat/files", data);
      ids.push({ file_id: stored.file_id });
    }
    return ids;
  }

  async function ask(text, key = crypto.randomUUID()) {
    state.running = true;
    send.disabled = true;
    replace(status);
    const sent = [...files.files].map((f) => ({ name: f.name }));
    const asked = bubble("user", text, "complete", null, { files: sent });
    list.append(asked.el);
    let started = false;
    const answer = bubble("assistant", "");
    answer.el.classList.add("streaming");
    let received = "";
    let drawn = false;
    const draw = () => {
      drawn = false;
      replace(answer.body, renderAnswer(received));
    };
    try {
      const uploads = await upload();
      const body = { chatflow_id: state.chatflow, question: text };
      if (state.session) body.session_id = state.session;
      if (uploads.length) body.uploads = uploads;
      await api.stream(body, (event, data) => {
        if (event === "session") {
          started = true;
          state.session = data.session_id;
          state.messageId = data.message_id;
          list.append(answer.el);
          stop.hidden = false;
          stop.disabled = false;
        } else if (event === "token" && typeof data === "string") {
          received += data;
          if (!drawn) {
            drawn = true;
            requestAnimationFrame(draw);
          }
        } else if (event === "error") {
          replace(status, h("p", { class: "error", role: "alert" }, t("chat.failedMidway")));
        } else if (event === "end") {
          // The answer is over: so is "Stopping…".
          stopping?.remove();
          draw();
          answer.el.classList.remove("streaming");
          if (data.reason === "credits_exhausted") {
            answer.el.append(creditsEnded(data.credits.charged));
          } else {
            const key = data.status === "complete" ? "chat.cost" : "chat.costIncomplete";
            answer.el.append(h("p", { class: "meta cost" }, t(key, { charged: number(data.credits.charged) })));
          }
          if (data.credits.balance !== null && data.credits.balance !== undefined) {
            state.credits = data.credits.balance;
          }
        }
      }, key);
      files.value = "";
      files.dispatchEvent(new Event("change"));
      await reloadSessions();
      if (sent.length) await pricedFiles(asked.el);
    } catch (err) {
      answer.el.classList.remove("streaming");
      if (!started) {
        // Refused before any answer: the question goes back into the box,
        // with a way to send it again.
        asked.el.remove();
        if (!question.value) question.value = text;
      }
      // The same key again after a network failure: if the first try
      // reached the gateway, its answer is replayed rather than paid for
      // twice. A refusal held nothing, so a retry is a new question.
      const retry = () => {
        if (question.value === text) question.value = "";
        ask(text, err.code === "network" ? key : crypto.randomUUID());
      };
      replace(status, errorBox(err, retry));
    } finally {
      state.running = false;
      state.messageId = null;
      stop.hidden = true;
      stopping?.remove();
      stopping = null;
      drawMeans();
    }
  }

  /** The question's files as the gateway priced them, in place of the names alone. */
  async function pricedFiles(el) {
    const page = await api.call("predict", "GET", `/api/v1/chat/sessions/${encodeURIComponent(state.session)}/messages?limit=100`);
    const mine = page.messages.filter((m) => m.role === "user" && m.metadata?.files?.length).pop();
    if (mine) el.querySelector(".attachments")?.replaceWith(attachmentList(mine.metadata.files));
  }

  const composer = h(
    "form",
    {
      class: "composer",
      onsubmit: (e) => {
        e.preventDefault();
        const text = question.value.trim();
        if (!text || state.running || !state.chatflow) return;
        question.value = "";
        ask(text);
      },
    },
    question,
    h("div", { class: "row" }, picker, send, stop),
  );
  question.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      composer.requestSubmit();
    }
  });

  drawSessions(sessions.sessions);
  const noFlows = flows.chatflows.length === 0 ? h("p", { class: "notice" }, t("chat.noChatflows")) : null;
  replace(
    main,
    h("div", { class: "chat" }, sidebar, h("section", { class: "conversation", "aria-label": t("chat.conversation") },
      h("div", { class: "bar" }, drawer, h("h1", {}, t("titles.chat")), select, balanceEl),
      price, empty, noFlows, list, status, composer)),
  );
  drawMeans();
  question.focus();
  // A conversation a link names (the credits page links each answer's).
  const wanted = sessions.sessions.find((s) => s.session_id === query().get("session"));
  if (wanted) await openSession(wanted);
}
