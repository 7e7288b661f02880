//! The contents of the dotenv and JSON files, rendered into zeroizing buffers
//! sized up front, so no reallocation leaves an unwiped copy of a value behind.

use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use super::FilesError;
use crate::secrets::SecretSet;

fn is_shell_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// `NAME='value'` lines in name order. Inside single quotes the shell takes
/// every byte literally except `'`, written as `'\''`; so `. FILE` restores
/// each value byte for byte, newlines included. The buffer is sized for the
/// worst case up front so it never reallocates (a reallocation would leave an
/// unzeroed copy behind).
pub(super) fn render_dotenv(secrets: &SecretSet) -> Result<Zeroizing<Vec<u8>>, FilesError> {
    let mut capacity = 0;
    for (name, value) in secrets.iter() {
        if !is_shell_name(name) {
            return Err(FilesError::NotDotenvSafe {
                name: name.to_owned(),
                reason: "it is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)",
            });
        }
        let value = value.expose_secret();
        if value.contains('\0') {
            return Err(FilesError::NotDotenvSafe {
                name: name.to_owned(),
                reason: "its value contains a NUL byte, which a shell variable cannot hold",
            });
        }
        capacity += name.len() + 4 + 4 * value.len();
    }
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    for (name, value) in secrets.iter() {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"='");
        for &b in value.expose_secret().as_bytes() {
            if b == b'\'' {
                out.extend_from_slice(b"'\\''");
            } else {
                out.push(b);
            }
        }
        out.extend_from_slice(b"'\n");
    }
    debug_assert!(out.len() <= capacity);
    Ok(out)
}

/// One JSON object, names in order, followed by a newline. Escaped by hand so
/// the buffer can be sized for the worst case (`\u00XX`, 6 bytes per byte)
/// and never reallocates.
pub(super) fn render_json(secrets: &SecretSet) -> Zeroizing<Vec<u8>> {
    let capacity = 3 + secrets
        .iter()
        .map(|(n, v)| 6 * (n.len() + v.expose_secret().len()) + 6)
        .sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    out.push(b'{');
    for (i, (name, value)) in secrets.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_string(&mut out, name);
        out.push(b':');
        push_json_string(&mut out, value.expose_secret());
    }
    out.extend_from_slice(b"}\n");
    debug_assert!(out.len() <= capacity);
    out
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f | 0x7f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            // UTF-8 is valid JSON as is.
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ExitClass, Failure};

    fn set(pairs: &[(&str, &str)]) -> SecretSet {
        SecretSet::from_pairs(pairs)
    }

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n";

    fn awkward_values() -> Vec<(&'static str, &'static str)> {
        vec![
            ("PEM", PEM),
            ("PEM_NO_NL", PEM.trim_end()),
            ("UNICODE", "héllo wörld ✓ 日本語 🦀"),
            ("QUOTES", r#"it's "quoted" '' ' "#),
            ("EQUALS", "a=b=c=="),
            ("DOLLAR", "$HOME ${PATH} $(id) `id` $$"),
            ("BACKSLASH", r"C:\path\to\n\\x \'"),
            ("TRAILING_NL", "value\n\n"),
            ("EMPTY", ""),
            ("SPACES", "  lead and trail  "),
            ("GLOB", "* ? [a-z] ~ # ; & | < > ( ) { }"),
        ]
    }

    #[test]
    fn dotenv_round_trips_every_value_byte_exactly_through_sh() {
        let values = awkward_values();
        let rendered = render_dotenv(&set(&values)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.env");
        std::fs::write(&file, &*rendered).unwrap();
        for (key, want) in values {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(". \"$1\"; printf %s \"${key}\""))
                .arg("sh")
                .arg(&file)
                .env_clear()
                .output()
                .unwrap();
            assert!(out.status.success(), "sh failed for {key}: {out:?}");
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                want,
                "{key} did not round-trip"
            );
        }
    }

    #[test]
    fn dotenv_quotes_single_quotes_and_nothing_else() {
        let got = render_dotenv(&set(&[("A", "x'y\n$z"), ("B", "")])).unwrap();
        assert_eq!(&*got, b"A='x'\\''y\n$z'\nB=''\n");
    }

    #[test]
    fn dotenv_refuses_names_sh_cannot_assign_and_nul_values() {
        for name in ["1A", "A-B", "A.B", "A B", "", "É"] {
            let err = render_dotenv(&set(&[(name, "v")])).unwrap_err();
            assert!(matches!(err, FilesError::NotDotenvSafe { .. }), "{name:?}");
            assert_eq!(err.exit_class(), ExitClass::Config);
        }
        let err = render_dotenv(&set(&[("A", "x\0y")])).unwrap_err();
        assert!(err.to_string().contains("NUL"));
        assert!(!err.to_string().contains("x\0y"));
    }

    #[test]
    fn json_is_one_object_in_name_order_with_exact_values() {
        let values = awkward_values();
        let rendered = render_json(&set(&values));
        let parsed: serde_json::Value = serde_json::from_slice(&rendered).unwrap();
        let obj = parsed.as_object().unwrap();
        assert_eq!(obj.len(), values.len());
        for (k, v) in &values {
            assert_eq!(obj[*k].as_str().unwrap(), *v, "{k}");
        }
        let keys: Vec<&String> = obj.keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(
            &*render_json(&set(&[("B", "2\"\\\n\u{1}"), ("A", "é")])),
            "{\"A\":\"é\",\"B\":\"2\\\"\\\\\\n\\u0001\"}\n".as_bytes()
        );
        assert_eq!(&*render_json(&SecretSet::new()), b"{}\n");
    }
}
