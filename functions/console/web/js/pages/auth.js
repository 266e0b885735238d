// Signing up (with the mailed code), signing in, and resetting a
// forgotten password.

import { h, replace, field } from "../dom.js";
import { t } from "../i18n.js";
import * as api from "../api.js";
import { errorBox, showError, takeResetToken } from "../main.js";

/** A form: its fields, a submit button, and the error or notice area. */
function form(title, fields, submitLabel, onSubmit, extra = []) {
  const status = h("div", { class: "status", "aria-live": "polite" });
  const button = h("button", { type: "submit" }, submitLabel);
  const el = h(
    "form",
    {
      class: "card narrow",
      novalidate: true,
      onsubmit: async (e) => {
        e.preventDefault();
        button.disabled = true;
        replace(status);
        try {
          await onSubmit(status);
        } catch (err) {
          showError(status, err, el);
        } finally {
          button.disabled = false;
        }
      },
    },
    h("h1", {}, title),
    fields.map((f) => f.el),
    button,
    status,
    extra,
  );
  return el;
}

function notice(text) {
  return h("p", { class: "notice", role: "status" }, text);
}

// What was typed at sign-up or at a sign-in refused for an unconfirmed
// address, held in memory (never stored) until the code is entered, so
// confirming signs the person in without a second sign-in.
let held = null;

const VISITOR_ROUTES = new Set(["signin", "signup", "verify", "forgot", "reset"]);

/** Where to go once signed in: the page a link opened, else the chat. */
function nextRoute() {
  const here = location.hash.replace(/^#\/?/, "");
  const route = here.split("?")[0].replace(/\/$/, "");
  return route && !VISITOR_ROUTES.has(route) ? here : "chat";
}

async function signin(main, { go, query }) {
  const verified = query().get("verified") ? notice(t("auth.verified"))
    : query().get("ended") ? notice(t("auth.sessionEnded")) : null;
  const next = nextRoute();
  const who = field(t("auth.identifier"), { name: "username", autocomplete: "username", required: true });
  const password = field(t("auth.password"), { name: "password", type: "password", autocomplete: "current-password", required: true });
  replace(
    main,
    form(t("auth.signInTitle"), [who, password], t("auth.signIn"), async (status) => {
      const identifier = who.input.value.trim();
      try {
        await api.signIn(identifier, password.input.value);
      } catch (err) {
        if (err.code === "email_not_verified" && err.body.email) {
          // The password was right: confirm here, then in.
          held = { identifier, password: password.input.value };
          return confirmEmail(main, { go, email: err.body.email, next, intro: t("auth.notVerified", { email: err.body.email }) });
        }
        if (err.code !== "account_locked") throw err;
        // Locked: how long, and the way out that needs no password.
        return replace(status, errorBox(err), h("p", {}, h("a", { href: "#/forgot" }, t("auth.lockedReset"))));
      }
      go(next);
    }, [
      verified,
      h("p", {}, h("a", { href: "#/signup" }, t("auth.noAccount"))),
      h("p", {}, h("a", { href: "#/forgot" }, t("auth.forgot"))),
    ]),
  );
  who.input.focus();
}

async function signup(main, { go }) {
  const username = field(t("auth.username"), { api: "username", autocomplete: "username", required: true, minlength: 3, maxlength: 32 });
  const email = field(t("auth.email"), { api: "email", type: "email", autocomplete: "email", required: true });
  const password = field(t("auth.newPassword"), { api: "password", type: "password", autocomplete: "new-password", required: true, minlength: 8 });
  replace(
    main,
    form(t("auth.signUpTitle"), [username, email, password], t("auth.signUp"), async () => {
      await api.call("auth", "POST", "/api/auth/signup", {
        username: username.input.value.trim(),
        email: email.input.value.trim(),
        password: password.input.value,
      }, { auth: false });
      held = { identifier: username.input.value.trim(), password: password.input.value };
      go(`verify?email=${encodeURIComponent(email.input.value.trim())}`);
    }, [h("p", {}, h("a", { href: "#/signin" }, t("auth.haveAccount")))]),
  );
  username.input.focus();
}

async function verify(main, { go, query }) {
  confirmEmail(main, { go, email: query().get("email") || "", next: "chat", intro: t("auth.codeHint") });
}

/**
 * The code form: the address (filled in when known), the code, "send a new
 * code". Once confirmed, a held sign-in goes on to `next`; a person signed
 * in already (a new address) goes to the chat; anyone else signs in.
 */
function confirmEmail(main, { go, email: address, next, intro }) {
  const email = field(t("auth.email"), { api: "email", type: "email", autocomplete: "email", value: address });
  const code = field(t("auth.code"), { api: "code", inputmode: "numeric", autocomplete: "one-time-code", maxlength: 6, required: true });
  const status = h("div", { "aria-live": "polite" });
  const resend = h("button", {
    type: "button",
    class: "secondary",
    onclick: async () => {
      try {
        await api.call("auth", "POST", "/api/auth/resend-verification", { email: email.input.value.trim() }, { auth: false });
        replace(status, notice(t("auth.codeSent")));
      } catch (err) {
        showError(status, err, email.input.form);
      }
    },
  }, t("auth.resend"));
  replace(
    main,
    form(t("auth.verifyTitle"), [email, code], t("auth.verify"), async () => {
      const answer = await api.call("auth", "POST", "/api/auth/verify-email", {
        email: email.input.value.trim(),
        code: code.input.value.trim(),
      }, { auth: false, console: true });
      api.adopt(answer);
      const pending = held;
      held = null;
      if (!api.currentUser() && pending) await api.signIn(pending.identifier, pending.password);
      go(api.currentUser() ? next : "signin?verified=1");
    }, [h("p", {}, intro), resend, status]),
  );
  (email.input.value ? code.input : email.input).focus();
}

async function forgot(main) {
  const email = field(t("auth.email"), { api: "email", type: "email", autocomplete: "email", required: true });
  replace(
    main,
    form(t("auth.forgotTitle"), [email], t("auth.sendLink"), async (status) => {
      await api.call("auth", "POST", "/api/auth/forgot-password", { email: email.input.value.trim() }, { auth: false });
      replace(status, notice(t("auth.linkSent")));
    }, [h("p", {}, h("a", { href: "#/signin" }, t("auth.backToSignIn")))]),
  );
  email.input.focus();
}

async function reset(main, { go }) {
  const token = takeResetToken();
  const password = field(t("auth.newPassword"), { api: "newPassword", type: "password", autocomplete: "new-password", required: true, minlength: 8 });
  replace(
    main,
    form(t("auth.resetTitle"), [password], t("auth.setPassword"), async () => {
      const answer = await api.call("auth", "POST", "/api/auth/reset-password", {
        token,
        newPassword: password.input.value,
      }, { auth: false, console: true });
      api.adopt(answer);
      go(api.currentUser() ? "chat" : "signin");
    }),
  );
  password.input.focus();
}

export const authPages = { signin, signup, verify, forgot, reset };
