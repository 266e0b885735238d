// Signing up (with the mailed code), signing in, and resetting a
// forgotten password.

import { h, replace, field } from "../dom.js";
import { t } from "../i18n.js";
import * as api from "../api.js";
import { errorBox, takeResetToken } from "../main.js";

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
          replace(status, errorBox(err));
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

async function signin(main, { go, query }) {
  const verified = query().get("verified") ? notice(t("auth.verified")) : null;
  const who = field(t("auth.identifier"), { name: "username", autocomplete: "username", required: true });
  const password = field(t("auth.password"), { name: "password", type: "password", autocomplete: "current-password", required: true });
  replace(
    main,
    form(t("auth.signInTitle"), [who, password], t("auth.signIn"), async () => {
      await api.signIn(who.input.value.trim(), password.input.value);
      go("chat");
    }, [
      verified,
      h("p", {}, h("a", { href: "#/signup" }, t("auth.noAccount"))),
      h("p", {}, h("a", { href: "#/forgot" }, t("auth.forgot"))),
    ]),
  );
  who.input.focus();
}

async function signup(main, { go }) {
  const username = field(t("auth.username"), { autocomplete: "username", required: true, minlength: 3, maxlength: 32 });
  const email = field(t("auth.email"), { type: "email", autocomplete: "email", required: true });
  const password = field(t("auth.newPassword"), { type: "password", autocomplete: "new-password", required: true, minlength: 8 });
  replace(
    main,
    form(t("auth.signUpTitle"), [username, email, password], t("auth.signUp"), async () => {
      await api.call("auth", "POST", "/api/auth/signup", {
        username: username.input.value.trim(),
        email: email.input.value.trim(),
        password: password.input.value,
      }, { auth: false });
      go(`verify?email=${encodeURIComponent(email.input.value.trim())}`);
    }, [h("p", {}, h("a", { href: "#/signin" }, t("auth.haveAccount")))]),
  );
  username.input.focus();
}

async function verify(main, { go, query }) {
  const email = field(t("auth.email"), { type: "email", autocomplete: "email", value: query().get("email") || "" });
  const code = field(t("auth.code"), { inputmode: "numeric", autocomplete: "one-time-code", maxlength: 6, required: true });
  const resend = h("button", {
    type: "button",
    class: "secondary",
    onclick: async () => {
      try {
        await api.call("auth", "POST", "/api/auth/resend-verification", { email: email.input.value.trim() }, { auth: false });
        replace(status, notice(t("auth.codeSent")));
      } catch (err) {
        replace(status, errorBox(err));
      }
    },
  }, t("auth.resend"));
  const status = h("div", { "aria-live": "polite" });
  replace(
    main,
    form(t("auth.verifyTitle"), [email, code], t("auth.verify"), async () => {
      const answer = await api.call("auth", "POST", "/api/auth/verify-email", {
        email: email.input.value.trim(),
        code: code.input.value.trim(),
      }, { auth: false, console: true });
      api.adopt(answer);
      go(api.currentUser() ? "chat" : "signin?verified=1");
    }, [h("p", {}, t("auth.codeHint")), resend, status]),
  );
  (email.input.value ? code.input : email.input).focus();
}

async function forgot(main) {
  const email = field(t("auth.email"), { type: "email", autocomplete: "email", required: true });
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
  const password = field(t("auth.newPassword"), { type: "password", autocomplete: "new-password", required: true, minlength: 8 });
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
