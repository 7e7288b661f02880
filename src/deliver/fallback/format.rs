//! The stored set's format (see the module docs of `fallback`): a versioned
//! header with the binding digest and the fetch time, then length-prefixed
//! names and values, byte for byte.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret as _, SecretString};
use zeroize::Zeroizing;

use super::Entry;
use crate::secrets::SecretSet;

/// The first line of a stored set: the format and its version.
pub(super) const MAGIC: &[u8] = b"svid-exec fallback v1\n";

/// Larger files are not read (a set of 10,000 large values is far below).
pub(super) const MAX_FILE_BYTES: u64 = 256 << 20;

/// The file's content, in a buffer that is zeroed when dropped and sized
/// once (growing it would leave unzeroed copies behind).
pub(super) fn render(
    digest: &str,
    fetched_at: SystemTime,
    secrets: &SecretSet,
) -> Zeroizing<Vec<u8>> {
    let secs = fetched_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let header = format!(
        "binding {digest}\nfetched-at {secs}\ncount {}\n",
        secrets.len()
    );
    let body: usize = secrets
        .iter()
        .map(|(name, value)| name.len() + value.expose_secret().len() + 44)
        .sum();
    let mut out = Zeroizing::new(Vec::with_capacity(MAGIC.len() + header.len() + body));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(header.as_bytes());
    for (name, value) in secrets.iter() {
        let value = value.expose_secret().as_bytes();
        out.extend_from_slice(format!("{} {}\n", name.len(), value.len()).as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// Reads a set back, checking the format, the binding digest and every length.
pub(super) fn parse(bytes: &[u8], digest: &str) -> Result<Entry, &'static str> {
    let mut rest = bytes
        .strip_prefix(MAGIC)
        .ok_or("not the svid-exec fallback format, version 1")?;
    if header(&mut rest, "binding")? != digest.as_bytes() {
        return Err("stored for another binding");
    }
    let secs = number(header(&mut rest, "fetched-at")?)?;
    let count = number(header(&mut rest, "count")?)?;
    let mut entries = Vec::new();
    for _ in 0..count {
        let end = rest.iter().position(|b| *b == b'\n').ok_or("cut short")?;
        let mut lengths = rest[..end].splitn(2, |b| *b == b' ');
        let (Some(name_len), Some(value_len)) = (lengths.next(), lengths.next()) else {
            return Err("a record has no lengths");
        };
        let name_len = usize::try_from(number(name_len)?).map_err(|_| "a length is too large")?;
        let value_len = usize::try_from(number(value_len)?).map_err(|_| "a length is too large")?;
        let record = &rest[end + 1..];
        let total = name_len
            .checked_add(value_len)
            .filter(|t| *t < record.len())
            .ok_or("cut short")?;
        if record[total] != b'\n' {
            return Err("a record does not end where its lengths say");
        }
        let name = std::str::from_utf8(&record[..name_len]).map_err(|_| "a name is not UTF-8")?;
        let value =
            std::str::from_utf8(&record[name_len..total]).map_err(|_| "a value is not UTF-8")?;
        entries.push((name.to_owned(), SecretString::from(value)));
        rest = &record[total + 1..];
    }
    if !rest.is_empty() {
        return Err("bytes after the last record");
    }
    Ok(Entry {
        fetched_at: UNIX_EPOCH + Duration::from_secs(secs),
        secrets: entries.into_iter().collect(),
    })
}

/// The value of the header line `key value` at the start of `rest`, which
/// moves past it.
fn header<'a>(rest: &mut &'a [u8], key: &str) -> Result<&'a [u8], &'static str> {
    let text: &'a [u8] = rest;
    let end = text.iter().position(|b| *b == b'\n').ok_or("cut short")?;
    *rest = &text[end + 1..];
    text[..end]
        .strip_prefix(key.as_bytes())
        .and_then(|value| value.strip_prefix(b" "))
        .ok_or("a header line is missing")
}

fn number(text: &[u8]) -> Result<u64, &'static str> {
    std::str::from_utf8(text)
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or("a number is not a number")
}
