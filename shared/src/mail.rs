//! Outgoing mail over SMTP (README §5): a mail catcher locally, Amazon SES's
//! SMTP interface in AWS. The auth function mails about accounts and keys,
//! the scheduled job about keys about to expire. Mails are plain ASCII text, so the code and the
//! link read the same in every client (and to the tests, which read the
//! raw mail).

use std::time::Duration;

use crate::config::{SmtpConfig, SmtpTls};
use crate::identity::Email;
use anyhow::Context;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Sends the product's mails. Built once per cold start.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    app_base_url: String,
}

impl Mailer {
    /// Builds the SMTP transport (no connection is made until a mail goes out).
    pub fn new(config: &SmtpConfig, app_base_url: &str) -> anyhow::Result<Self> {
        let builder = match config.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
            SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                .context("SMTP_HOST is not a valid host name for STARTTLS")?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
                .context("SMTP_HOST is not a valid host name for TLS")?,
        };
        let mut builder = builder
            .port(config.port)
            .timeout(Some(Duration::from_secs(10)));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        let from: Mailbox = config
            .from
            .parse()
            .context("MAIL_FROM is not a valid mailbox")?;
        Ok(Mailer {
            transport: builder.build(),
            from,
            app_base_url: app_base_url.to_owned(),
        })
    }

    /// A warning of the job's (README "Allowances and warnings"): its
    /// subject and text, composed in the recipient's language.
    pub async fn send_warning(
        &self,
        to: &Email,
        subject: &str,
        text: String,
    ) -> anyhow::Result<()> {
        self.send(to, subject, text).await
    }

    /// The console's address, for links in mails.
    pub fn base_url(&self) -> &str {
        &self.app_base_url
    }

    async fn send(&self, to: &Email, subject: &str, text: String) -> anyhow::Result<()> {
        // Plain 7-bit when possible (RFC 5322 allows lines up to 998
        // characters), so a long link is never soft-wrapped by
        // quoted-printable; anything else is encoded by lettre.
        let body = if text.is_ascii() && text.lines().all(|l| l.len() <= 998) {
            Body::dangerous_pre_encoded(text.into_bytes(), ContentTransferEncoding::SevenBit)
        } else {
            Body::new(text)
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to
                .as_str()
                .parse()
                .context("recipient is not a valid mailbox")?)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .context("Failed to build the mail")?;
        self.transport
            .send(message)
            .await
            .context("Failed to send the mail over SMTP")?;
        Ok(())
    }

    /// The verification code, on a line of its own.
    pub async fn send_verification_code(
        &self,
        to: &Email,
        username: &str,
        code: &str,
    ) -> anyhow::Result<()> {
        let text = format!(
            "Hello {username},\r\n\r\nYour verification code is:\r\n\r\n{code}\r\n\r\n\
             It is valid for 15 minutes. If you did not sign up, ignore this mail.\r\n"
        );
        self.send(to, "Your verification code", text).await
    }

    /// The password reset link `{APP_BASE_URL}/reset-password?token=<token>`.
    pub async fn send_reset_link(
        &self,
        to: &Email,
        username: &str,
        token: &str,
    ) -> anyhow::Result<()> {
        let text = format!(
            "Hello {username},\r\n\r\nTo choose a new password, open:\r\n\r\n\
             {}\r\n\r\n\
             The link is valid for one hour and works once. If you did not ask for it, \
             ignore this mail.\r\n",
            self.reset_link(token)
        );
        self.send(to, "Reset your password", text).await
    }

    fn reset_link(&self, token: &str) -> String {
        format!("{}/reset-password?token={token}", self.app_base_url)
    }

    /// Tells the owner their account was locked after repeated failed
    /// sign-ins, with a reset link that lifts the lock.
    pub async fn send_lock_notice(
        &self,
        to: &Email,
        username: &str,
        token: &str,
        minutes: i64,
    ) -> anyhow::Result<()> {
        let text = format!(
            "Hello {username},\r\n\r\nSomeone tried to sign in to your account with a wrong \
             password several times, so sign-in is paused for {minutes} minutes.\r\n\r\n\
             If it was you and you forgot your password, choose a new one here (this also \
             lifts the pause):\r\n\r\n{}\r\n\r\n\
             The link is valid for one hour and works once. If it was not you, your \
             password kept the account safe; nothing else is needed.\r\n",
            self.reset_link(token)
        );
        self.send(to, "Sign-in to your account is paused", text)
            .await
    }

    /// Tells the owner an API key was made on their account (never its
    /// secret): if it was not them, someone signed in as them.
    pub async fn send_key_made(
        &self,
        to: &Email,
        username: &str,
        key: &KeyMail<'_>,
    ) -> anyhow::Result<()> {
        let notice = (
            "An API key was made on your account",
            "If you did not make it, revoke it in the console, change your password and \
             sign out everywhere.",
        );
        self.send_key_notice(to, username, key, notice).await
    }

    /// Tells the owner that an API key of theirs stops working soon.
    pub async fn send_key_expiring(
        &self,
        to: &Email,
        username: &str,
        key: &KeyMail<'_>,
    ) -> anyhow::Result<()> {
        let notice = (
            "One of your API keys stops working soon",
            "Programs that use it need a new key before then: make one in the console.",
        );
        self.send_key_notice(to, username, key, notice).await
    }

    /// A mail about one key: what happened (also the subject), the key's
    /// lines, and what to do.
    async fn send_key_notice(
        &self,
        to: &Email,
        username: &str,
        key: &KeyMail<'_>,
        (what, advice): (&str, &str),
    ) -> anyhow::Result<()> {
        let text = format!(
            "Hello {username},\r\n\r\n{what}:\r\n\r\n{}\r\n{advice}\r\n",
            key.lines()
        );
        self.send(to, what, text).await
    }

    /// Tells the owner their password was reset through the mailed link,
    /// and that their API keys were revoked with it.
    pub async fn send_reset_notice(
        &self,
        to: &Email,
        username: &str,
        keys_revoked: u64,
    ) -> anyhow::Result<()> {
        let keys = match keys_revoked {
            0 => String::new(),
            1 => " Your API key was revoked too: make a new one for the programs that used it.".into(),
            n => format!(" Your {n} API keys were revoked too: make new ones for the programs that used them."),
        };
        let text = format!(
            "Hello {username},\r\n\r\nThe password of your account was reset with the link \
             mailed to this address, and every session was signed out.{keys}\r\n\r\n\
             If you did not do this, reset your password again now: {}\r\n",
            self.app_base_url
        );
        self.send(to, "Your password was reset", text).await
    }

    /// Tells the current address that a change to `new_address` was asked
    /// for (it takes effect only once the code mailed there is entered).
    pub async fn send_email_change_notice(
        &self,
        to: &Email,
        username: &str,
        new_address: &str,
    ) -> anyhow::Result<()> {
        let text = format!(
            "Hello {username},\r\n\r\nA change of your account's email address to \
             {new_address} was asked for. This address stays the account's until the code \
             mailed to the new one is entered.\r\n\r\n\
             If you did not ask for this, change your password now: someone may know \
             it.\r\n"
        );
        self.send(to, "A change of your email address was asked for", text)
            .await
    }
}

/// An API key as a mail describes it: never its secret.
#[derive(Debug, Clone)]
pub struct KeyMail<'a> {
    /// Its name.
    pub name: &'a str,
    /// `fgw_` and its public id.
    pub prefix: &'a str,
    /// The chatflows it may use (`None`: every one its owner may use).
    pub chatflows: Option<&'a [String]>,
    /// Credits it may spend a month.
    pub monthly_credit_limit: Option<i64>,
    /// When it stops working.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl KeyMail<'_> {
    /// Its lines in a mail.
    fn lines(&self) -> String {
        let chatflows = self
            .chatflows
            .map_or("every chatflow you may use".to_owned(), |c| c.join(", "));
        let limit = self
            .monthly_credit_limit
            .map_or("no monthly limit".to_owned(), |l| {
                format!("{l} credits a month")
            });
        format!(
            "  Name: {}\r\n  Key: {}... (the rest is never shown again)\r\n  Chatflows: {chatflows}\r\n\
             \x20 Spending: {limit}\r\n  Expires: {} UTC\r\n",
            self.name,
            self.prefix,
            self.expires_at.format("%Y-%m-%d %H:%M")
        )
    }
}
