// Talking to the gateway: where each family answers (config.json), the
// access token (in memory only, renewed a minute before it expires), the
// refresh token (an HttpOnly cookie the auth function sets for requests
// with X-Console: 1; this page never sees it), refreshes serialised across
// tabs with navigator.locks so two tabs never present the same refresh
// token, and errors turned into ApiError with the server's code and
// numbers (the page shows its own sentence per code, never the server's
// text).

let bases = null;
let access = null;
let user = null;
let renewal = null;

// Tabs of one browser share the refresh cookie: signing out in one ends
// the others at once, and a session the gateway ended (signed out
// everywhere) ends this tab at its next request.
const channel = typeof BroadcastChannel === "function" ? new BroadcastChannel("fgw.session") : null;
let onEnded = () => {};

/** `f` runs when this tab's session ends without this tab asking. */
export function onSessionEnded(f) {
  onEnded = f;
}

function ended() {
  if (!access) return;
  setSession(null);
  onEnded();
}

channel?.addEventListener("message", (e) => {
  if (e.data === "signed-out") ended();
});

/**
 * Renews after a 401 (true when it did). A refresh the gateway refuses
 * (401) means the session has ended; a lost connection does not.
 */
async function renewed() {
  return refresh().then(() => true, (err) => {
    if (err?.status === 401) ended();
    return false;
  });
}

/** An answer that is not a success, or a request that never got one. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || "network");
    this.status = status;
    this.code = body?.error || (status === 0 ? "network" : "unknown");
    this.body = body || {};
  }
}

export async function loadConfig() {
  const res = await fetch(new URL("../../../config.json", import.meta.url), { cache: "no-store" });
  bases = await res.json();
}

/** Whether Flowise is the local stand-in `make run` starts (config.json's `standIn`). */
export function standIn() {
  return bases?.standIn === true;
}

/** The base URL of the OpenAI-compatible API (the stream's function URL + /v1), absolute. */
export function openaiBase() {
  return new URL(url("stream", "/v1"), location.href).href;
}

function url(family, path) {
  const base = (bases?.[family] ?? "").replace(/\/$/, "");
  return `${base}${path}`;
}

function decode(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload));
  } catch {
    return {};
  }
}

export function currentUser() {
  return user;
}

const userListeners = [];

/** Calls `f(user)` whenever a sign-in, a restored session or a proof brings the account. */
export function onUser(f) {
  userListeners.push(f);
}

function setSession(token, who) {
  access = token;
  if (who) {
    user = who;
    for (const f of userListeners) f(who);
  }
  if (!token) user = null;
  clearTimeout(renewal);
  if (token) {
    const claims = decode(token);
    if (user && !who) user = { ...user, role: claims.role || user.role };
    const wait = claims.exp ? Math.max(5_000, claims.exp * 1000 - Date.now() - 60_000) : 600_000;
    renewal = setTimeout(() => refresh().catch(() => {}), wait);
  }
}

async function send(family, method, path, body, { auth = true, console: consoleMode = false, headers = {} } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (auth && access) init.headers.authorization = `Bearer ${access}`;
  if (consoleMode) init.headers["x-console"] = "1";
  let res;
  try {
    res = await fetch(url(family, path), init);
  } catch {
    throw new ApiError(0, null);
  }
  return res;
}

async function parse(res) {
  if (res.status === 204) return null;
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { error: "unknown" };
  }
  if (!res.ok) {
    const err = new ApiError(res.status, body);
    const retry = res.headers.get("retry-after");
    if (retry && err.body.retryAfterSeconds === undefined) err.body.retryAfterSeconds = Number(retry);
    throw err;
  }
  return body;
}

/** A JSON request to `family`; a 401 for an expired token renews it once. */
export async function call(family, method, path, body, options = {}) {
  let res = await send(family, method, path, body, options);
  if (res.status === 401 && access && options.auth !== false && (await renewed())) {
    res = await send(family, method, path, body, options);
  }
  return parse(res);
}

/** A raw response (files, CSV), with the same renewal. */
export async function raw(family, path) {
  let res = await send(family, "GET", path);
  if (res.status === 401 && access && (await renewed())) {
    res = await send(family, "GET", path);
  }
  if (!res.ok) await parse(res);
  return res;
}

/** Signs in; the refresh token goes into the cookie. */
export async function signIn(identifier, password) {
  const body = identifier.includes("@")
    ? { email: identifier, password }
    : { username: identifier, password };
  const answer = await call("auth", "POST", "/api/auth/login", body, { auth: false, console: true });
  setSession(answer.accessToken, answer.user);
  return answer;
}

/** Takes a sign-in another route answered with (email proof, reset). */
export function adopt(answer) {
  if (answer?.accessToken) setSession(answer.accessToken, answer.user);
}

/** A new access token from the cookie, one tab at a time. */
export async function refresh() {
  const run = async () => {
    const res = await send("auth", "POST", "/api/auth/refresh", undefined, { auth: false, console: true });
    return parse(res);
  };
  // Every browser the console supports has Web Locks; without them a
  // refresh runs unserialised.
  const answer = navigator.locks ? await navigator.locks.request("fgw-refresh", run) : await run();
  setSession(answer.accessToken, null);
  if (!user) {
    // Outside the lock: a 401 here renews, and must not wait on itself.
    const profile = await call("auth", "GET", "/api/profile");
    setSession(answer.accessToken, profile.user || profile);
  }
  return answer;
}

/** Restores the session of this browser, if its cookie is still good. */
export async function restore() {
  try {
    await refresh();
    return true;
  } catch {
    setSession(null);
    return false;
  }
}

export async function signOut(everywhere = false, revokeKeys = false) {
  try {
    if (everywhere) await call("auth", "POST", "/api/auth/logout-all", revokeKeys ? { revokeKeys: true } : undefined, { console: true });
    else await call("auth", "POST", "/api/auth/logout", undefined, { auth: false, console: true });
  } finally {
    setSession(null);
    channel?.postMessage("signed-out");
  }
}

/**
 * A streamed prediction: calls onFrame(event, data) for each frame as it
 * arrives. Resolves when the stream ends. `key` is the question's
 * Idempotency-Key: a retry with the same key gets the first answer
 * replayed, never a second charge.
 */
export async function stream(body, onFrame, key) {
  const path = "/api/v1/chat/predict/stream";
  const open = () => fetch(url("stream", path), {
    method: "POST",
    headers: {
      "content-type": "application/json",
      authorization: `Bearer ${access}`,
      "idempotency-key": key,
    },
    body: JSON.stringify(body),
  }).catch(() => {
    throw new ApiError(0, null);
  });
  let res = await open();
  // Refused before anything was held: the same key again is safe.
  if (res.status === 401 && access && (await renewed())) res = await open();
  if (!res.ok) await parse(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      let data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) {
        let value = data;
        try {
          value = JSON.parse(data);
        } catch {
          // Not JSON: passed on as text.
        }
        onFrame(event, value);
      }
    }
  }
}
