//! Logs: `tracing` to stderr, text (each line prefixed `svid-exec:` so users
//! can tell our lines from the program's) or JSON (one object per line, each
//! field keeping its JSON type: lists stay arrays, durations are numbers of
//! seconds). The level applies to svid-exec's own events; libraries (HTTP,
//! gRPC, TLS) are capped at `warn`, because their debug/trace output can carry
//! headers and bodies, i.e. tokens and secrets. No field we log ever carries a
//! secret.

use std::fmt;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
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
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .event_format(JsonFormat),
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

/// `{"timestamp":…,"level":"WARN","message":…,<fields>…,"target":…}`, one
/// object per line. tracing hands most fields over as `Debug` text; a text
/// that is a JSON list or string (`?names`, a `Vec<String>`), or a
/// `Duration` (`?retry_in`, "1.5s"), is written as that JSON value, so
/// consumers get arrays and numbers rather than strings to parse again.
struct JsonFormat;

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut object = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        object.insert("timestamp".into(), timestamp.into());
        object.insert("level".into(), event.metadata().level().as_str().into());
        event.record(&mut JsonFields(&mut object));
        object.insert("target".into(), event.metadata().target().into());
        writeln!(writer, "{}", Value::Object(object))
    }
}

/// Collects an event's fields into a JSON object, each with its type.
struct JsonFields<'a>(&'a mut Map<String, Value>);

impl Visit for JsonFields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), crate::error::chain(value).into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        let value = if field.name() == "message" {
            Value::String(text)
        } else {
            typed(text)
        };
        self.0.insert(field.name().into(), value);
    }
}

/// The JSON value a `Debug` text stands for: a list, map or quoted string
/// that parses as JSON is that value; a `Duration` ("1.5s", "250ms", "3µs")
/// is its number of seconds; anything else stays the text.
fn typed(text: String) -> Value {
    if text.starts_with(['[', '{', '"']) {
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            return value;
        }
    }
    match duration_seconds(&text) {
        Some(seconds) => seconds.into(),
        None => Value::String(text),
    }
}

/// Seconds in a `Duration`'s `Debug` text.
fn duration_seconds(text: &str) -> Option<f64> {
    let (number, scale) = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .into_iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).map(|n| (n, scale)))?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn json_fields_keep_lists_strings_and_durations_as_json_types() {
        let list = vec!["A".to_owned(), "b-c".to_owned()];
        assert_eq!(typed(format!("{list:?}")), serde_json::json!(["A", "b-c"]));
        assert_eq!(typed(format!("{:?}", "quoted")), Value::from("quoted"));
        for (d, seconds) in [
            (Duration::from_millis(1500), 1.5),
            (Duration::from_secs(60), 60.0),
            (Duration::from_millis(250), 0.25),
            (Duration::from_micros(3), 0.000_003),
            (Duration::ZERO, 0.0),
        ] {
            let got = typed(format!("{d:?}")).as_f64().unwrap();
            assert!((got - seconds).abs() < 1e-12, "{d:?}: {got}");
        }
        for text in ["Group", "Exited(0)", "5 secrets", "s", "1.5 s"] {
            assert_eq!(typed(text.to_owned()), Value::from(text), "{text}");
        }
    }

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
