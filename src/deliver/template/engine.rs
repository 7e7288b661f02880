//! The template engine as svid-exec configures it: minijinja with strict
//! undefined, no auto-escaping, the template's final newline kept, no
//! includes, imports or loader (the `multi_template` feature is off, so those
//! tags do not even parse), no `debug()` function, bounded by fuel and a
//! recursion limit; the filters
//! config files need that minijinja lacks (`b64encode`, `b64decode`,
//! `shell_quote`); the context every secret is looked up in; the zeroizing
//! writer the output goes to; and engine errors turned into messages that
//! name templates, lines and names, never a value.

use std::fmt;
use std::io;
use std::sync::Arc;

use base64::Engine as _;
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Enumerator, Object, ObjectExt as _, ObjectRepr, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::secrets::SecretSet;

/// The work one render may do: about one unit per instruction and one per 64
/// bytes produced, so this bounds a render to a few million steps and about
/// 256 MiB of data. A real config template uses a few thousand.
pub(super) const FUEL: u64 = 4_000_000;

/// Nesting depth (an `if` or `for` counts 1, a macro call about 10): ample
/// for config files, and a self-calling macro stops quickly.
const RECURSION_LIMIT: usize = 200;

/// The engine with svid-exec's rules (see the module docs) and no template yet.
pub(super) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Config files are not HTML: a value goes in as it is unless a filter says otherwise.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Debug mode is what makes the engine name an undefined value ("`DB_PASS`
    // is undefined"). It also attaches debug info (the variables in scope,
    // values included) to an error, which the error's `Debug` and alternate
    // `Display` print: so an engine error never leaves this module as it is,
    // only as `describe`'s line and text.
    env.set_debug(true);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_syntax(
        SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("UNWRAP: the default delimiters are valid"),
    );
    // It prints the whole context; nothing a config file needs.
    env.remove_global("debug");
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    env.add_filter("shell_quote", shell_quote);
    env
}

/// Why one of our filters failed; shown as it is (it never holds a value).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct FilterError(&'static str);

fn filter_error(reason: &'static str) -> Error {
    Error::new(ErrorKind::InvalidOperation, reason).with_source(FilterError(reason))
}

/// Base64 (standard alphabet, padded) of the value's UTF-8 bytes.
fn b64encode(value: &str) -> Value {
    let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(value));
    Value::from(encoded.as_str())
}

/// The text a base64 value encodes: standard or URL-safe alphabet, padding
/// optional, whitespace (line breaks of wrapped base64) ignored. Binary that
/// is not UTF-8 cannot go into a text template and is refused.
fn b64decode(value: &str) -> Result<Value, Error> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let compact: Zeroizing<Vec<u8>> =
        Zeroizing::new(value.bytes().filter(|b| !b.is_ascii_whitespace()).collect());
    let url_safe = compact.iter().any(|b| *b == b'-' || *b == b'_');
    let alphabet = if url_safe {
        &base64::alphabet::URL_SAFE
    } else {
        &base64::alphabet::STANDARD
    };
    let decoded = Zeroizing::new(
        GeneralPurpose::new(alphabet, config)
            .decode(&*compact)
            .map_err(|_| filter_error("b64decode: the value is not base64"))?,
    );
    let text = std::str::from_utf8(&decoded)
        .map_err(|_| filter_error("b64decode: the decoded bytes are not UTF-8 text"))?;
    Ok(Value::from(text))
}

/// The value as one POSIX shell word: in single quotes, each `'` written as
/// `'\''`, so `sh` reads it back byte for byte (newlines, `$`, backslashes).
fn shell_quote(value: &str) -> Value {
    let mut quoted = Zeroizing::new(String::with_capacity(
        value.len() + 2 + 3 * value.matches('\'').count(),
    ));
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    Value::from(quoted.as_str())
}

/// The delivered secrets as the engine sees them: `{{ KEY }}` looks a name up
/// here, and `secrets` is the map of every secret (`secrets["tls.crt"]` for
/// names that are not identifiers; `secrets|items` to iterate). A secret named
/// `secrets` is reached as `secrets["secrets"]`.
pub(super) fn context(secrets: &SecretSet) -> Value {
    let map = Value::from_object(Secrets(secrets.clone()));
    Value::from_object(Root { secrets: map })
}

/// A copy of the set (its values are zeroized when the last render drops it).
struct Secrets(SecretSet);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Object for Secrets {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        self.0.get(key).map(|v| Value::from(v.expose_secret()))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_enumerator(|this| Box::new(this.0.names().map(Value::from)))
    }
}

/// The top level: every secret by name, and `secrets`.
struct Root {
    secrets: Value,
}

impl fmt::Debug for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Root")
    }
}

impl Object for Root {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        if key == "secrets" {
            Some(self.secrets.clone())
        } else {
            self.secrets
                .get_attr(key)
                .ok()
                .filter(|v| !v.is_undefined())
        }
    }
}

/// Where a rendering goes: a buffer that never leaves an unwiped copy behind.
/// When it must grow, the bytes move to a new, larger buffer and the old one
/// is zeroized (a `Vec`'s own growth would free it as it is).
#[derive(Default)]
pub(super) struct ZeroizingWriter(Zeroizing<Vec<u8>>);

impl ZeroizingWriter {
    pub(super) fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl io::Write for ZeroizingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let needed = self.0.len() + buf.len();
        if needed > self.0.capacity() {
            let mut grown = Zeroizing::new(Vec::with_capacity(
                needed.max(2 * self.0.capacity()).max(256),
            ));
            grown.extend_from_slice(&self.0);
            // The old buffer is zeroized as it is dropped here.
            self.0 = grown;
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An engine error as `(line, what went wrong)`, without a value: the
/// engine's detail only where it comes from the template itself (syntax,
/// the undefined name as written, unknown filter, our filters' reasons);
/// otherwise the kind alone, since a detail such as "unable to calculate
/// 12345 * 10" could quote a secret.
pub(super) fn describe(error: &Error) -> (Option<usize>, String) {
    let own = std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<FilterError>())
        .map(ToString::to_string);
    let detail_is_safe = matches!(
        error.kind(),
        ErrorKind::SyntaxError
            | ErrorKind::UndefinedError
            | ErrorKind::UnknownFilter
            | ErrorKind::UnknownTest
            | ErrorKind::UnknownFunction
            | ErrorKind::UnknownMethod
            | ErrorKind::TooManyArguments
            | ErrorKind::MissingArgument
            | ErrorKind::BadEscape
    );
    let text = match (own, error.detail()) {
        (Some(own), _) => own,
        (None, _) if error.kind() == ErrorKind::OutOfFuel => format!(
            "the template does too much work (more than {FUEL} steps or about {} MiB of output)",
            (FUEL * 64) >> 20
        ),
        (None, Some(detail)) if detail_is_safe => format!("{}: {detail}", error.kind()),
        (None, _) => error.kind().to_string(),
    };
    (error.line(), text)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn render(source: &str, pairs: &[(&str, &str)]) -> Result<String, (Option<usize>, String)> {
        let mut env = environment();
        env.add_template_owned("t", source.to_owned())
            .map_err(|e| describe(&e))?;
        let mut out = ZeroizingWriter::default();
        env.get_template("t")
            .expect("added")
            .render_captured_to(context(&SecretSet::from_pairs(pairs)), &mut out)
            .map_err(|e| describe(&e))?;
        Ok(String::from_utf8(out.into_inner().to_vec()).unwrap())
    }

    #[test]
    fn names_and_the_secrets_map_render_values_as_they_are() {
        let pairs = [("A", "x<&>'\"y\n"), ("tls.crt", "PEM"), ("secrets", "s")];
        assert_eq!(render("{{ A }}", &pairs).unwrap(), "x<&>'\"y\n");
        assert_eq!(render("{{ secrets[\"tls.crt\"] }}", &pairs).unwrap(), "PEM");
        assert_eq!(render("{{ secrets.A }}", &pairs).unwrap(), "x<&>'\"y\n");
        assert_eq!(render("{{ secrets[\"secrets\"] }}", &pairs).unwrap(), "s");
        assert_eq!(
            render("{% for k in secrets %}{{ k }},{% endfor %}", &pairs).unwrap(),
            "A,secrets,tls.crt,"
        );
        // The file's final newline is kept (Jinja drops it by default).
        assert_eq!(render("a={{ A|length }}\n", &pairs).unwrap(), "a=8\n");
    }

    #[test]
    fn an_undefined_name_fails_and_is_named_with_its_line() {
        let (line, text) = render("ok\n{{ MISSING }}", &[("A", "1")]).unwrap_err();
        assert_eq!(line, Some(2));
        assert!(text.contains("`MISSING` is undefined"), "{text}");
        let (_, text) = render("{{ secrets[\"nope\"] }}", &[("A", "1")]).unwrap_err();
        assert!(text.contains("`secrets['nope']` is undefined"), "{text}");
        // Only an explicit default makes a key optional.
        assert_eq!(render("[{{ MISSING|default(\"\") }}]", &[]).unwrap(), "[]");
        assert_eq!(
            render("{% if MISSING is defined %}x{% endif %}", &[]).unwrap(),
            ""
        );
        assert!(render("{% if MISSING %}x{% endif %}", &[]).is_err());
    }

    #[test]
    fn filters_for_config_files() {
        let pairs = [
            ("S", "it's $x\n"),
            ("B", "aGVsbG8g4pyT"),
            ("J", "a\"b\\c\n"),
        ];
        assert_eq!(
            render("{{ S|shell_quote }}", &pairs).unwrap(),
            "'it'\\''s $x\n'"
        );
        assert_eq!(render("{{ S|b64encode }}", &pairs).unwrap(), "aXQncyAkeAo=");
        assert_eq!(render("{{ B|b64decode }}", &pairs).unwrap(), "hello ✓");
        assert_eq!(render("{{ 'aGk'|b64decode }}", &pairs).unwrap(), "hi");
        assert_eq!(render("{{ 'aG\nk='|b64decode }}", &pairs).unwrap(), "hi");
        assert_eq!(
            render("{{ '-_8'|b64decode|b64encode }}", &pairs)
                .unwrap_err()
                .1,
            "b64decode: the decoded bytes are not UTF-8 text"
        );
        assert_eq!(
            render("{{ '!!'|b64decode }}", &pairs).unwrap_err().1,
            "b64decode: the value is not base64"
        );
        assert_eq!(render("{{ J|tojson }}", &pairs).unwrap(), r#""a\"b\\c\n""#);
        // As in Jinja, `indent` drops the value's final newline: the
        // template's own line break follows it.
        assert_eq!(
            render("k: |\n  {{ S|indent(2) }}\nnext: 1\n", &[("S", "l1\nl2\n")]).unwrap(),
            "k: |\n  l1\n  l2\nnext: 1\n"
        );
    }

    #[test]
    fn no_includes_imports_loader_or_debug() {
        for source in [
            "{% include 'x' %}",
            "{% import 'x' as y %}",
            "{% extends 'x' %}",
            "{% from 'x' import y %}",
        ] {
            let (_, text) = render(source, &[]).unwrap_err();
            assert!(text.starts_with("syntax error"), "{source}: {text}");
        }
        assert!(render("{{ debug() }}", &[("A", "1")]).is_err());
    }

    #[test]
    fn runaway_templates_stop() {
        let (_, text) = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            &[],
        )
        .unwrap_err();
        assert!(text.contains("too much work"), "{text}");
        let (_, text) = render("{{ 'x' * 1000000000 }}", &[]).unwrap_err();
        assert!(
            text.contains("too much work") || text.contains("invalid operation"),
            "{text}"
        );
        let bomb = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        assert!(render(bomb, &[]).is_err());
    }

    #[test]
    fn errors_never_quote_a_value() {
        let pairs = [("N", "987654321987654321"), ("S", "hunter2-secret")];
        for source in [
            "{{ N|int * 1000000000000000000000000 * 1000000000000000000 }}",
            "{{ S + 1 }}",
            "{{ S|int }}",
            "{{ S.missing_attr }}",
            "{{ S() }}",
            "{% for x in S|int %}{% endfor %}",
            // The engine's debug info for this error holds S's value.
            "{{ S ~ MISSING }}",
        ] {
            if let Err((_, text)) = render(source, &pairs) {
                assert!(
                    !text.contains("987654321") && !text.contains("hunter2"),
                    "{source}: {text}"
                );
            }
        }
    }

    #[test]
    fn the_writer_keeps_every_byte_across_growth() {
        let mut w = ZeroizingWriter::default();
        let mut want = Vec::new();
        for i in 0..1000u32 {
            let piece = i.to_string().repeat(3);
            w.write_all(piece.as_bytes()).unwrap();
            want.extend_from_slice(piece.as_bytes());
        }
        assert_eq!(&w.into_inner()[..], &want[..]);
    }
}
