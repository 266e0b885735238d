//! Structured logging: JSON lines under Lambda (CloudWatch parses them),
//! readable lines locally. `LOG_FORMAT` (`json` or `pretty`) overrides the
//! choice and `RUST_LOG` sets the filter (default `info`).
//!
//! What is never logged: request or response bodies, headers, query
//! strings, configuration values. Handlers log ids and outcomes only; the
//! secret-bearing types ([`crate::config::Secret`], [`crate::token::JwtKeys`])
//! print as `***`.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, with the current span's fields.
    Json,
    /// Human-readable.
    Pretty,
}

impl LogFormat {
    /// `LOG_FORMAT` when set, else JSON under Lambda and pretty elsewhere.
    pub fn from_env() -> Self {
        match std::env::var("LOG_FORMAT").ok().as_deref() {
            Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            _ if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() => LogFormat::Json,
            _ => LogFormat::Pretty,
        }
    }
}

/// Installs the global subscriber, once, at the top of `main`. Runs before
/// the configuration is loaded so that configuration errors are logged too.
pub fn init() {
    init_with(std::io::stdout);
}

/// [`init`], logging to standard error: for a command whose standard
/// output is its result (`gateway-admin import-platform --json`).
pub fn init_stderr() {
    init_with(std::io::stderr);
}

fn init_with<W>(writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // An invalid LOG_FORMAT value falls back to the default rather than
    // failing: logging must work before anything else can report.
    let _ =
        tracing::subscriber::set_global_default(subscriber(LogFormat::from_env(), filter, writer));
}

/// Builds a subscriber writing to `writer` (tests capture logs with it).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
        LogFormat::Pretty => Box::new(builder.with_ansi(false).compact().finish()),
    }
}
