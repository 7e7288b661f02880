//! Secret strings of a JSON answer decoded straight into `SecretString`s: the
//! deserialiser only borrows the raw JSON text (`&RawValue`, no copy), and the
//! one copy made is the final one, allocated at its exact size. Parsing a
//! string through `serde_json` instead unescapes it into a scratch buffer that is
//! freed without being wiped (any value with a `\n`, e.g. a PEM key), and a
//! growing `String` leaves copies behind on every reallocation.

use secrecy::SecretString;
use serde_json::value::RawValue;

/// Why a JSON value is not a usable secret string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotASecret {
    /// `null` (or the field is absent).
    Null,
    /// A number, object, array or boolean.
    NotAString,
    /// An escape the JSON grammar allows but that is not text (a lone surrogate).
    BadEscape,
}

impl NotASecret {
    /// How to say it after "the field …".
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Null => "is null or missing",
            Self::NotAString => "is not a string",
            Self::BadEscape => "holds an invalid \\u escape",
        }
    }
}

/// The JSON string `raw` (as the deserialiser validated it) as a `SecretString`.
pub(crate) fn decode(raw: Option<&RawValue>) -> Result<SecretString, NotASecret> {
    let text = raw.ok_or(NotASecret::Null)?.get();
    if text == "null" {
        return Err(NotASecret::Null);
    }
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or(NotASecret::NotAString)?;
    if !inner.contains('\\') {
        // `From<&str>` copies into a `String` of exactly this length.
        return Ok(SecretString::from(inner));
    }
    let len = unescape(inner, |_| {})?;
    let mut out = String::with_capacity(len);
    unescape(inner, |c| out.push(c))?;
    debug_assert_eq!(out.len(), out.capacity());
    // Capacity equals length: `into_boxed_str` does not reallocate.
    Ok(SecretString::from(out))
}

/// Whether `raw` is exactly the JSON string `expected` (no escapes in it).
pub(crate) fn is_string(raw: Option<&RawValue>, expected: &str) -> bool {
    raw.map(RawValue::get)
        .and_then(|t| t.strip_prefix('"'))
        .and_then(|t| t.strip_suffix('"'))
        == Some(expected)
}

/// Feeds the characters of the JSON string body `s` (escapes already checked
/// by the parser) to `push`; returns their UTF-8 length.
fn unescape(s: &str, mut push: impl FnMut(char)) -> Result<usize, NotASecret> {
    let mut len = 0;
    let mut emit = |c: char| {
        len += c.len_utf8();
        push(c);
    };
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            emit(c);
            continue;
        }
        let c = match chars.next().ok_or(NotASecret::BadEscape)? {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let high = hex4(&mut chars)?;
                if (0xD800..0xDC00).contains(&high) {
                    // A high surrogate must be followed by `\u` and a low one.
                    if chars.next() != Some('\\') || chars.next() != Some('u') {
                        return Err(NotASecret::BadEscape);
                    }
                    let low = hex4(&mut chars)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(NotASecret::BadEscape);
                    }
                    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    char::from_u32(code).ok_or(NotASecret::BadEscape)?
                } else {
                    char::from_u32(high).ok_or(NotASecret::BadEscape)?
                }
            }
            _ => return Err(NotASecret::BadEscape),
        };
        emit(c);
    }
    Ok(len)
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Result<u32, NotASecret> {
    let mut value = 0;
    for _ in 0..4 {
        let digit = chars
            .next()
            .and_then(|c| c.to_digit(16))
            .ok_or(NotASecret::BadEscape)?;
        value = value * 16 + digit;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn decoded(json: &str) -> Result<String, NotASecret> {
        decode(Some(&raw(json))).map(|s| s.expose_secret().to_owned())
    }

    #[test]
    fn strings_decode_exactly_as_serde_json_would() {
        for json in [
            r#""plain""#,
            r#""""#,
            r#""-----BEGIN KEY-----\nAAA=\n-----END KEY-----\n""#,
            r#""q\"uo\\te\/ \b\f\r\t""#,
            r#""h\u00e9llo \u2603 \ud83d\ude00 grüß""#,
            r#""a=b ${REF}""#,
        ] {
            let want: String = serde_json::from_str(json).unwrap();
            assert_eq!(decoded(json).unwrap(), want, "{json}");
        }
    }

    #[test]
    fn null_missing_and_non_strings_are_refused() {
        assert_eq!(decode(None).unwrap_err(), NotASecret::Null);
        assert_eq!(decoded("null").unwrap_err(), NotASecret::Null);
        assert_eq!(decoded("12").unwrap_err(), NotASecret::NotAString);
        assert_eq!(decoded("{}").unwrap_err(), NotASecret::NotAString);
        assert_eq!(decoded(r#""\ud83d""#).unwrap_err(), NotASecret::BadEscape);
        assert_eq!(decoded(r#""\ude00x""#).unwrap_err(), NotASecret::BadEscape);
    }

    #[test]
    fn placeholders_compare_without_decoding() {
        assert!(is_string(Some(&raw(r#""<hidden>""#)), "<hidden>"));
        assert!(!is_string(Some(&raw("null")), "<hidden>"));
        assert!(!is_string(None, "<hidden>"));
    }
}
