//! Logs: `tracing` to stderr, text (each line prefixed `svid-exec:` so users
//! can tell our lines from the program's) or JSON (one object per line). The
//! level applies to svid-exec's own events; libraries (HTTP, gRPC, TLS) are
//! capped at `warn`, because their debug/trace output can carry headers and
//! bodies, i.e. tokens and secrets. No field we log ever carries a secret.

use std::fmt;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Log format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `svid-exec: LEVEL message key=value`.
    Text,
    /// One JSON object per line.
    Json,
}

/// What and how to log (`--log-format`, `--log-level`, `--quiet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Format.
    pub format: LogFormat,
    /// Most verbose level shown (`--quiet` already folded in as `ERROR`).
    pub level: tracing::Level,
}

/// The format of the installed subscriber, once one is installed.
static ACTIVE: OnceLock<LogFormat> = OnceLock::new();

/// The format logs go out in, if logging is initialised (the final error is
/// printed as a JSON object too when the user asked for JSON).
pub fn active_format() -> Option<LogFormat> {
    ACTIVE.get().copied()
}

/// Libraries never log above this level through us.
const LIBRARY_LEVEL: LevelFilter = LevelFilter::WARN;

/// The filter: our crate at `level`, everything else at most `warn`.
fn filter(level: Level) -> Targets {
    let ours = LevelFilter::from_level(level);
    Targets::new()
        .with_default(std::cmp::min(ours, LIBRARY_LEVEL))
        .with_target("svid_exec", ours)
}

/// Installs the global subscriber. Called once, after the configuration is
/// valid; a second call is ignored (tests, or an early error path).
pub fn init(output: LogOptions) {
    let registry = tracing_subscriber::registry().with(filter(output.level));
    let result = match output.format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .event_format(TextFormat),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_current_span(false)
                    .with_span_list(false)
                    .flatten_event(true),
            )
            .try_init(),
    };
    // Already initialised: keep the first subscriber.
    if result.is_ok() {
        let _ = ACTIVE.set(output.format);
    }
}

/// `svid-exec: WARN message key=value`.
struct TextFormat;

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        write!(writer, "svid-exec: {level} ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_are_capped_at_warn_while_our_level_follows_the_flag() {
        let f = filter(Level::TRACE);
        assert!(f.would_enable("svid_exec::session", &Level::TRACE));
        assert!(!f.would_enable("h2::codec", &Level::DEBUG));
        assert!(!f.would_enable("hyper_util::client", &Level::INFO));
        assert!(f.would_enable("rustls::conn", &Level::WARN));
        let quiet = filter(Level::ERROR);
        assert!(!quiet.would_enable("svid_exec", &Level::WARN));
        assert!(!quiet.would_enable("reqwest", &Level::WARN));
        assert!(quiet.would_enable("svid_exec", &Level::ERROR));
    }
}
