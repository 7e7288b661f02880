//! Logs: `tracing` to stderr, text (each line prefixed `svid-exec:` so users
//! can tell our lines from the program's) or JSON (one object per line, each
//! field keeping its JSON type: lists stay arrays, durations are numbers of
//! seconds). The level applies to svid-exec's own events; libraries (HTTP,
//! gRPC, TLS) are capped at `warn`, because their debug/trace output can carry
//! headers and bodies, i.e. tokens and secrets. No field we log ever carries a
//! secret.
//!
//! Text lines escape every control character in every field (message
//! included): keys, folder paths and messages come from the server or the
//! environment, and a newline in one would otherwise forge a line of its own.
//! JSON lines need nothing more: serde escapes control characters in strings.

use std::borrow::Cow;
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
        // Every field goes through the escaping writer: no call site can forget.
        let mut escaped = EscapeControl(&mut writer);
        ctx.field_format()
            .format_fields(Writer::new(&mut escaped), event)?;
        writeln!(writer)
    }
}

/// `{"timestamp":…,"level":"WARN","message":…,<fields>…,"target":…}`, one
/// object per line, in that order (when, how bad, what, then the details,
/// alphabetically). tracing hands most fields over as `Debug` text; a text
/// that is a JSON list or string (`?names`, a `Vec<String>`), or a
/// `Duration` (`?retry_in`, "1.5s"), is written as that JSON value, so
/// consumers get arrays and numbers rather than strings to parse again.
struct JsonFormat;

/// Keys the format writes itself; an event field of the same name is left out.
const JSON_HEAD: [&str; 3] = ["timestamp", "level", "target"];

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
        let mut fields = Map::new();
        event.record(&mut JsonFields(&mut fields));
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let message = fields.remove("message");
        let metadata = event.metadata();
        // serde_json's `Map` sorts its keys, so the object is written entry
        // by entry: the head first, the target last.
        let timestamp = Value::from(timestamp);
        let level = Value::from(metadata.level().as_str());
        let target = Value::from(metadata.target());
        let head = [("timestamp", &timestamp), ("level", &level)]
            .into_iter()
            .chain(message.as_ref().map(|m| ("message", m)));
        let rest = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .filter(|(k, _)| !JSON_HEAD.contains(k));
        let mut separator = '{';
        for (key, value) in head.chain(rest).chain([("target", &target)]) {
            write!(writer, "{separator}{}:{value}", Value::from(key))?;
            separator = ',';
        }
        writeln!(writer, "}}")
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

/// Whether `c` must not reach a text log line raw: control characters (C0,
/// DEL, C1: newline, carriage return, escape sequences) and the Unicode line
/// separators and bidirectional overrides that make a viewer show text other
/// than what was written.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character of [`needs_escape`] written as a visible escape
/// (`\n`, `\r`, `\t`, `\u{1b}`), for lines printed outside the subscriber.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let _ = fmt::Write::write_str(&mut EscapeControl(&mut out), text);
    Cow::Owned(out)
}

/// A `fmt::Write` adapter that escapes [`needs_escape`] characters.
struct EscapeControl<W>(W);

impl<W: fmt::Write> fmt::Write for EscapeControl<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| needs_escape(c)) {
            self.0.write_str(&rest[..at])?;
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                other => write!(self.0, "\\u{{{:x}}}", u32::from(other))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
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
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape("plain – ünïcode"), "plain – ünïcode");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape("K\nsvid-exec: ERROR forged\r\t\u{1b}[2J\u{7f}\u{85}\u{2028}\u{202e}"),
            "K\\nsvid-exec: ERROR forged\\r\\t\\u{1b}[2J\\u{7f}\\u{85}\\u{2028}\\u{202e}"
        );
    }

    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// What `format` writes for the events of `emit`, on a subscriber of its
    /// own with the layer settings of `init`, writing to a buffer.
    fn lines_in<E>(format: E, emit: impl FnOnce()) -> String
    where
        E: FormatEvent<
                tracing_subscriber::Registry,
                tracing_subscriber::fmt::format::DefaultFields,
            > + Send
            + Sync
            + 'static,
    {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .event_format(format),
        );
        tracing::subscriber::with_default(subscriber, emit);
        buf.text()
    }

    #[test]
    fn a_newline_in_any_text_field_cannot_forge_a_line() {
        let key = "DB\nsvid-exec: ERROR forged";
        let folder = "/app\r\nsvid-exec: INFO forged";
        let out = lines_in(TextFormat, || {
            tracing::warn!(key = %key, kept = %folder, id = key, debug = ?key, "message {key}");
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            out.starts_with("svid-exec: WARN message DB\\nsvid-exec"),
            "{out}"
        );
        assert!(
            out.contains("kept=/app\\r\\nsvid-exec: INFO forged"),
            "{out}"
        );
    }

    #[test]
    fn json_lines_escape_control_characters_themselves() {
        let key = "DB\n{\"level\":\"ERROR\",\"fields\":{\"message\":\"forged\"}}";
        let names = vec!["B".to_owned(), "A".to_owned()];
        let out = lines_in(JsonFormat, || {
            tracing::warn!(key = %key, debug = ?key, ?names, level = "forged", "message {key}");
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        let line: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(line["key"], key);
        assert_eq!(line["debug"], key);
        assert_eq!(line["names"], serde_json::json!(["B", "A"]));
        assert_eq!(line["message"], format!("message {key}"));
        // The format's own keys are not overwritten by a field, and come first.
        assert_eq!(line["level"], "WARN");
        assert!(
            out.starts_with("{\"timestamp\":") && out.contains(",\"level\":\"WARN\",\"message\":"),
            "{out}"
        );
        assert!(
            out.trim_end()
                .ends_with(&format!(",\"target\":{}}}", line["target"])),
            "{out}"
        );
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
