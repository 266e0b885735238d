//! What the job's tests share.

use std::time::Duration;

use shared::config::{Limits, SmtpConfig, SmtpTls};

/// Limits for a job under test.
pub fn limits() -> Limits {
    Limits {
        max_upload_bytes: 1024,
        reservation_ttl: Duration::from_secs(900),
        rate: shared::config::RateLimits {
            per_minute: 10_000,
            concurrent: 100,
            running_for: Duration::from_secs(150),
        },
    }
}

/// A mailer to the test SMTP server on `port`.
pub fn mailer(port: u16) -> shared::mail::Mailer {
    let config = SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        username: None,
        password: None,
        tls: SmtpTls::None,
        from: "gateway@example.com".into(),
    };
    shared::mail::Mailer::new(&config, "http://app.test").unwrap()
}
