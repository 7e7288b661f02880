//! One path's listing (`{secrets, imports}`) parsed as it arrives, chunk by
//! chunk, into a compact list of candidates (the whole body is never held:
//! at 10,000 secrets it is 5.9 MB, more than everything else a launch keeps),
//! then merged: each name's winner goes into the [`SecretSet`].
//!
//! How: a scanner follows the JSON's nesting and strings and cuts out each
//! element of a `secrets` array (the folder's own, or an import's) into a
//! small zeroizing buffer, where `serde_json` parses it alone and its value is
//! decoded straight into a `SecretString` (`secret_json`). Everything else
//! (the "skeleton", with `{}` in place of each secret cut out) is kept and
//! parsed at the end, so a body is accepted exactly when it is one JSON
//! listing: each element and the skeleton are then both valid.
//!
//! Precedence (cli-contract.md "What to fetch"): within one path the folder's
//! own secrets beat its sub-folders' (with `recursive`; among those the later
//! one wins), which beat imported ones; among imports the last one wins, and
//! inside one import the first occurrence (its folder's own secrets come before
//! the imports it nests). Later paths win over earlier ones in the caller.

use std::borrow::Cow;
use std::fmt;

use secrecy::SecretString;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use super::secret_json::{self, NotASecret};
use super::PathSummary;
use crate::secrets::SecretSet;

/// The value a server puts in place of a secret the identity may only describe.
const HIDDEN_PLACEHOLDER: &str = "<hidden-by-infisical>";

/// A secret whose value the server sent as something other than a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadValue {
    pub(crate) key: String,
    pub(crate) why: NotASecret,
}

/// Why a listing could not be merged.
#[cfg(test)]
#[derive(Debug)]
pub(crate) enum ListingError {
    /// Not the JSON of a listing.
    Json(serde_json::Error),
    /// A value that is not a string.
    Bad(BadValue),
}

#[derive(Deserialize)]
struct RawSecret<'a> {
    #[serde(rename = "secretKey", borrow)]
    key: Cow<'a, str>,
    /// Raw JSON; `None` when absent or `null`.
    #[serde(rename = "secretValue", default, borrow)]
    value: Option<&'a RawValue>,
    #[serde(rename = "secretValueHidden", default)]
    hidden: Option<bool>,
    #[serde(rename = "secretPath", default, borrow)]
    path: Option<Cow<'a, str>>,
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
}

/// Where a candidate comes from, in increasing precedence.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// An import (its index among the imports).
    Import(u32),
    /// A sub-folder's secret (`recursive`).
    Sub,
    /// The folder's own secret.
    Top,
}

/// One secret of the listing, its value already decoded (`None`: hidden).
struct Candidate {
    key: Box<str>,
    value: Option<Result<SecretString, NotASecret>>,
    class: Class,
    /// The sub-folder, for the warning about a name in several of them.
    folder: Option<Box<str>>,
}

impl Candidate {
    fn hidden(&self) -> bool {
        self.value.is_none()
    }

    /// Whether `self` (later in the body) beats `best` (earlier): a higher
    /// class wins; within the folder or its sub-folders the later one, within
    /// one import the first one.
    fn beats(&self, best: &Self) -> bool {
        match self.class.cmp(&best.class) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => !matches!(self.class, Class::Import(_)),
        }
    }
}

/// One path's parsed listing, applied with [`PathListing::finish`].
pub(crate) struct PathListing {
    /// The folder asked for, normalised.
    path: String,
    /// Every secret, in the order of the body.
    candidates: Vec<Candidate>,
    /// Readable secrets of the folder (and sub-folders), duplicates included.
    own: usize,
}

impl PathListing {
    fn add(&mut self, secret: RawSecret<'_>, import: Option<u32>) {
        if secret.kind.as_deref() == Some("personal") {
            return;
        }
        let hidden = secret.hidden == Some(true)
            || (secret.hidden.is_none()
                && secret_json::is_string(secret.value, HIDDEN_PLACEHOLDER));
        let (class, folder) = match (import, secret.path) {
            (Some(index), _) => (Class::Import(index), None),
            (None, Some(folder)) if !same_folder(&folder, &self.path) => {
                (Class::Sub, Some(folder.into()))
            }
            (None, _) => (Class::Top, None),
        };
        if import.is_none() {
            self.own += usize::from(!hidden);
        }
        self.candidates.push(Candidate {
            key: secret.key.into(),
            value: (!hidden).then(|| secret_json::decode(secret.value)),
            class,
            folder,
        });
    }

    /// Picks each name's winner and applies it to `out` (this path overrides
    /// earlier ones). A compact list sorted by name, not a map: at 10,000
    /// secrets a hash map of the candidates cost more memory than the body.
    pub(crate) fn finish(
        mut self,
        out: &mut SecretSet,
        hidden: &mut Vec<String>,
    ) -> Result<PathSummary, BadValue> {
        // Stable: a name's candidates stay in the body's order.
        self.candidates.sort_by(|a, b| a.key.cmp(&b.key));
        let mut imported = 0;
        let mut bad: Option<BadValue> = None;
        // Winners in name order, applied at the end (built in one go when
        // this is the first path).
        let mut winners: Vec<(String, SecretString)> = Vec::with_capacity(self.candidates.len());
        let mut rest = self.candidates.as_mut_slice();
        while !rest.is_empty() {
            let len = rest.iter().take_while(|c| c.key == rest[0].key).count();
            let (group, tail) = std::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            let mut best = 0;
            let mut best_import: Option<usize> = None;
            let mut last_sub: Option<usize> = None;
            for (i, candidate) in group.iter().enumerate() {
                if candidate.beats(&group[best]) {
                    best = i;
                }
                match candidate.class {
                    Class::Import(_) => {
                        if best_import.is_none_or(|b| candidate.class > group[b].class) {
                            best_import = Some(i);
                        }
                    }
                    Class::Sub => {
                        if let Some(previous) = last_sub {
                            tracing::warn!(key = %candidate.key, kept = %candidate.folder.as_deref().unwrap_or_default(), dropped = %group[previous].folder.as_deref().unwrap_or_default(), "the same key is in several sub-folders; the later one is used");
                        }
                        last_sub = Some(i);
                    }
                    Class::Top => {}
                }
            }
            imported += usize::from(best_import.is_some_and(|i| !group[i].hidden()));
            let best = &mut group[best];
            match best.value.take() {
                None => {
                    // It removes every lower-precedence value of its name (an
                    // earlier path's): a value the server would not deliver never
                    // leaks in from behind it.
                    out.remove(&best.key);
                    hidden.push(best.key.to_string());
                }
                Some(Ok(value)) => winners.push((std::mem::take(&mut best.key).into(), value)),
                // The first bad name in name order (the list is sorted).
                Some(Err(why)) if bad.is_none() => {
                    bad = Some(BadValue {
                        key: best.key.to_string(),
                        why,
                    });
                }
                Some(Err(_)) => {}
            }
        }
        if let Some(bad) = bad {
            return Err(bad);
        }
        // The losers' values are wiped now, before the set is built.
        drop(self.candidates);
        if out.is_empty() {
            *out = winners.into_iter().collect();
        } else {
            for (key, value) in winners {
                out.insert(key, value);
            }
        }
        Ok(PathSummary {
            path: self.path,
            own: self.own,
            imported,
        })
    }
}

/// Whether the server's `secretPath` of a secret names the folder `path`
/// (itself normalised), without allocating: `app/`, `/app` and ` /app/ ` do.
fn same_folder(raw: &str, path: &str) -> bool {
    let raw = raw.trim().trim_end_matches('/');
    let path = path.trim_end_matches('/');
    raw.strip_prefix('/').unwrap_or(raw) == path.strip_prefix('/').unwrap_or(path)
}

/// Parses the whole listing `text` of folder `path` and merges it into `out`
/// (the streaming parser fed in one piece).
///
/// A hidden value takes its place in the precedence like any other and is
/// named in `hidden`. A winning readable value that is `null`, missing or not
/// a string is refused (an empty value in its place would start the program
/// with a wrong secret).
#[cfg(test)]
pub(crate) fn merge_listing(
    path: &str,
    text: &str,
    out: &mut SecretSet,
    hidden: &mut Vec<String>,
) -> Result<PathSummary, ListingError> {
    let mut stream = ListingStream::new(path);
    stream.feed(text.as_bytes());
    stream
        .end()
        .map_err(ListingError::Json)?
        .finish(out, hidden)
        .map_err(ListingError::Bad)
}

/// What a container of the body is, as far as the listing goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The top-level object.
    Top,
    /// An array of secrets (the import's index, `None` for the folder's own).
    Secrets(Option<u32>),
    /// The array of imports (how many objects it has opened so far).
    Imports(u32),
    /// One import object.
    Import(u32),
    /// Anything else: kept in the skeleton as it is.
    Other,
}

/// The field an object's next value belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    /// Before the key (after `{` or `,`).
    Expected,
    Secrets,
    Imports,
    Other,
}

struct Frame {
    role: Role,
    /// In an object: which field the next value is.
    key: Key,
    object: bool,
}

/// The streaming parser of one path's listing: [`ListingStream::feed`] each
/// chunk as it arrives, then [`ListingStream::end`].
pub(crate) struct ListingStream {
    listing: PathListing,
    /// The containers open around the scanner (outside a secret).
    stack: Vec<Frame>,
    /// Inside a JSON string, and just after its backslash.
    in_string: bool,
    escaped: bool,
    /// The body outside the secrets, each secret replaced by `{}`.
    skeleton: Zeroizing<Vec<u8>>,
    /// Where the string being scanned starts in the skeleton (a key's name).
    string_start: usize,
    /// The secret being cut out: its bytes so far, its nesting depth, and the
    /// import it belongs to.
    element: Zeroizing<Vec<u8>>,
    element_depth: usize,
    element_import: Option<u32>,
    /// The first error; the rest of the body is then ignored.
    error: Option<serde_json::Error>,
    /// Bytes fed so far.
    pub(crate) len: usize,
}

impl ListingStream {
    /// A parser for the listing of folder `path` (normalised).
    pub(crate) fn new(path: &str) -> Self {
        Self {
            listing: PathListing {
                path: path.to_owned(),
                candidates: Vec::new(),
                own: 0,
            },
            stack: Vec::new(),
            in_string: false,
            escaped: false,
            skeleton: Zeroizing::new(Vec::with_capacity(1024)),
            string_start: 0,
            element: Zeroizing::new(Vec::with_capacity(1024)),
            element_depth: 0,
            element_import: None,
            error: None,
            len: 0,
        }
    }

    /// Forgets what was fed (a retried request's body starts over).
    pub(crate) fn reset(&mut self) {
        *self = Self::new(&self.listing.path);
    }

    /// Scans the next piece of the body.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        self.len += chunk.len();
        if self.error.is_some() {
            return;
        }
        let mut rest = chunk;
        while !rest.is_empty() {
            rest = if self.element_depth > 0 {
                self.scan_element(rest)
            } else {
                self.scan_skeleton(rest)
            };
        }
    }

    /// Inside a string from `chunk[at..]`: the index just past its closing
    /// quote, or `None` when the chunk ends first (the state says where).
    fn skip_string(&mut self, chunk: &[u8], mut at: usize) -> Option<usize> {
        if self.escaped {
            if at == chunk.len() {
                return None;
            }
            self.escaped = false;
            at += 1;
        }
        // Most of a listing is inside strings: jump to the next quote or
        // backslash instead of looking at every byte.
        while let Some(found) = memchr::memchr2(b'"', b'\\', &chunk[at..]) {
            let i = at + found;
            if chunk[i] == b'"' {
                self.in_string = false;
                return Some(i + 1);
            }
            if i + 1 == chunk.len() {
                self.escaped = true;
                return None;
            }
            at = i + 2;
        }
        None
    }

    /// Inside a secret: up to and including its closing bracket; the rest.
    fn scan_element<'c>(&mut self, chunk: &'c [u8]) -> &'c [u8] {
        let mut end = chunk.len();
        let mut i = 0;
        while i < chunk.len() {
            if self.in_string {
                match self.skip_string(chunk, i) {
                    Some(next) => i = next,
                    None => break,
                }
                continue;
            }
            match chunk[i] {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.element_depth += 1,
                b'}' | b']' => {
                    self.element_depth -= 1;
                    if self.element_depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        let (this, rest) = chunk.split_at(end);
        push_zeroizing(&mut self.element, this);
        if self.element_depth == 0 {
            match serde_json::from_slice::<RawSecret<'_>>(&self.element) {
                Ok(secret) => self.listing.add(secret, self.element_import),
                Err(e) => self.error = Some(e),
            }
            // Overwritten by the next secret, wiped when the parser drops.
            self.element.clear();
        }
        rest
    }

    /// Outside the secrets: up to the start of the next one; the rest.
    fn scan_skeleton<'c>(&mut self, chunk: &'c [u8]) -> &'c [u8] {
        // `chunk[..copied]` is in the skeleton already.
        let mut copied = 0;
        let mut i = 0;
        while i < chunk.len() {
            if self.in_string {
                match self.skip_string(chunk, i) {
                    Some(next) => {
                        push_zeroizing(&mut self.skeleton, &chunk[copied..next]);
                        copied = next;
                        i = next;
                        self.string_end();
                    }
                    None => break,
                }
                continue;
            }
            let at = i;
            let b = chunk[at];
            i += 1;
            match b {
                b'"' => {
                    self.in_string = true;
                    self.string_start = self.skeleton.len() + (at - copied);
                }
                b'{' | b'[' => {
                    let role = match (self.stack.last().map(|p| (p.role, p.key)), b) {
                        (None, b'{') => Role::Top,
                        (Some((Role::Top, Key::Secrets)), b'[') => Role::Secrets(None),
                        (Some((Role::Top, Key::Imports)), b'[') => Role::Imports(0),
                        (Some((Role::Imports(n), _)), b'{') => Role::Import(n),
                        (Some((Role::Import(n), Key::Secrets)), b'[') => Role::Secrets(Some(n)),
                        (Some((Role::Secrets(import), _)), _) => {
                            // A secret: cut out from here, `{}` in its place.
                            push_zeroizing(&mut self.skeleton, &chunk[copied..at]);
                            push_zeroizing(&mut self.skeleton, b"{}");
                            // Whole in this chunk (nearly every one): parsed
                            // where it is, borrowing from the chunk.
                            let mut one = serde_json::Deserializer::from_slice(&chunk[at..])
                                .into_iter::<RawSecret<'_>>();
                            match one.next() {
                                Some(Ok(secret)) => {
                                    self.listing.add(secret, import);
                                    i = at + one.byte_offset();
                                    copied = i;
                                    continue;
                                }
                                Some(Err(e)) if !e.is_eof() => {
                                    self.error = Some(e);
                                    return &[];
                                }
                                // Cut by the chunk's end: gathered and parsed
                                // once whole.
                                _ => {}
                            }
                            push_zeroizing(&mut self.element, &chunk[at..=at]);
                            self.element_depth = 1;
                            self.element_import = import;
                            return &chunk[at + 1..];
                        }
                        _ => Role::Other,
                    };
                    if let Some(Frame {
                        role: Role::Imports(n),
                        ..
                    }) = self.stack.last_mut()
                    {
                        *n += 1;
                    }
                    self.stack.push(Frame {
                        role,
                        key: Key::Expected,
                        object: b == b'{',
                    });
                }
                b'}' | b']' => {
                    self.stack.pop();
                }
                b',' => {
                    if let Some(frame) = self.stack.last_mut() {
                        if frame.object {
                            frame.key = Key::Expected;
                        }
                    }
                }
                _ => {}
            }
        }
        push_zeroizing(&mut self.skeleton, &chunk[copied..]);
        &[]
    }

    /// A string of the skeleton ended (the skeleton holds it whole): is it a
    /// key of an object the listing looks into?
    fn string_end(&mut self) {
        let Some(frame) = self.stack.last_mut() else {
            return;
        };
        if !frame.object || frame.key != Key::Expected {
            return;
        }
        let raw = &self.skeleton[self.string_start..];
        let name: Cow<'_, str> = if raw.contains(&b'\\') {
            serde_json::from_slice::<String>(raw).map_or(Cow::Borrowed(""), Cow::Owned)
        } else {
            String::from_utf8_lossy(&raw[1..raw.len() - 1])
        };
        frame.key = match &*name {
            "secrets" => Key::Secrets,
            "imports" => Key::Imports,
            _ => Key::Other,
        };
    }

    /// The body is complete: checks the skeleton is a listing and hands the
    /// parsed secrets over.
    pub(crate) fn end(self) -> Result<PathListing, serde_json::Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut de = serde_json::Deserializer::from_slice(&self.skeleton);
        Skeleton.deserialize(&mut de).and_then(|()| de.end())?;
        Ok(self.listing)
    }
}

/// Appends `chunk` to a zeroizing buffer (grown without leaving a copy).
fn push_zeroizing(buf: &mut Zeroizing<Vec<u8>>, chunk: &[u8]) {
    // The caller bounds the body; no limit here.
    super::push_zeroizing(buf, chunk, usize::MAX);
}

/// The top-level object's field names.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Secrets,
    Imports,
    #[serde(other)]
    Other,
}

/// The skeleton: `{secrets: [{}, ...], imports: [{secrets: [{}, ...]}, ...]}`.
struct Skeleton;

impl<'de> DeserializeSeed<'de> for Skeleton {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Skeleton {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secrets listing")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let mut secrets = false;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Secrets => {
                    map.next_value_seed(Placeholders)?;
                    secrets = true;
                }
                Field::Imports => map.next_value_seed(Imports)?,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if secrets {
            Ok(())
        } else {
            Err(de::Error::missing_field("secrets"))
        }
    }
}

/// An array of secrets, each cut out: only `{}` are left (anything else in it
/// is not a secret).
struct Placeholders;

impl<'de> DeserializeSeed<'de> for Placeholders {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Placeholders {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of secrets")
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        while seq.next_element_seed(Placeholder)?.is_some() {}
        Ok(())
    }
}

/// `{}`, where a secret was.
struct Placeholder;

impl<'de> DeserializeSeed<'de> for Placeholder {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Placeholder {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// The array of imports, each `{secrets: [...], ...}`.
struct Imports;

impl<'de> DeserializeSeed<'de> for Imports {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Imports {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of imports")
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        while seq.next_element_seed(Import)?.is_some() {}
        Ok(())
    }
}

/// One import: only its `secrets` matter.
struct Import;

impl<'de> DeserializeSeed<'de> for Import {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Import {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an import")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(field) = map.next_key::<Field>()? {
            if let Field::Secrets = field {
                map.next_value_seed(Placeholders)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    /// Merges the listing `json` as folder `path`; only a bad value may fail.
    fn merge(
        path: &str,
        json: &str,
        out: &mut SecretSet,
        hidden: &mut Vec<String>,
    ) -> Result<PathSummary, BadValue> {
        merge_listing(path, json, out, hidden).map_err(|e| match e {
            ListingError::Bad(bad) => bad,
            ListingError::Json(e) => panic!("{e}: {json}"),
        })
    }

    fn value(set: &SecretSet, key: &str) -> String {
        set.get(key)
            .map(|v| v.expose_secret().to_owned())
            .unwrap_or_default()
    }

    #[test]
    fn own_secrets_beat_imports_and_the_last_import_wins() {
        let l = r#"{
            "secrets": [ {"secretKey":"A","secretValue":"own-a","type":"shared"} ],
            "imports": [
              {"secretPath":"/first","environment":"prod","secrets":[
                 {"secretKey":"A","secretValue":"first-a"},
                 {"secretKey":"B","secretValue":"first-b"},
                 {"secretKey":"C","secretValue":"first-c"} ]},
              {"secretPath":"/second","environment":"prod","secrets":[
                 {"secretKey":"B","secretValue":"second-b"},
                 {"secretKey":"B","secretValue":"second-nested-b"} ]}
            ]}"#;
        let mut out = SecretSet::new();
        let mut hidden = Vec::new();
        let s = merge("/", l, &mut out, &mut hidden).unwrap();
        assert_eq!(value(&out, "A"), "own-a");
        assert_eq!(
            value(&out, "B"),
            "second-b",
            "last import wins; inside one, its own beat nested"
        );
        assert_eq!(value(&out, "C"), "first-c");
        assert_eq!(out.len(), 3);
        assert_eq!((s.own, s.imported), (1, 3));
    }

    #[test]
    fn later_paths_win_across_paths() {
        let mut out = SecretSet::new();
        let mut hidden = Vec::new();
        merge("/a", r#"{"secrets":[{"secretKey":"K","secretValue":"from-a"},{"secretKey":"ONLY_A","secretValue":"1"}]}"#, &mut out, &mut hidden).unwrap();
        merge("/b", r#"{"secrets":[],"imports":[{"secrets":[{"secretKey":"K","secretValue":"from-b-import"}]}]}"#, &mut out, &mut hidden).unwrap();
        assert_eq!(value(&out, "K"), "from-b-import");
        assert_eq!(value(&out, "ONLY_A"), "1");
    }

    #[test]
    fn recursive_listing_prefers_the_folder_itself_over_sub_folders() {
        let l = r#"{"secrets":[
              {"secretKey":"X","secretValue":"sub-1","secretPath":"/app/one"},
              {"secretKey":"X","secretValue":"top","secretPath":"/app"},
              {"secretKey":"Y","secretValue":"sub-1","secretPath":"/app/one/"},
              {"secretKey":"Y","secretValue":"sub-2","secretPath":"/app/two"}
            ]}"#;
        let mut out = SecretSet::new();
        merge("/app", l, &mut out, &mut Vec::new()).unwrap();
        assert_eq!(value(&out, "X"), "top");
        assert_eq!(value(&out, "Y"), "sub-2");
    }

    #[test]
    fn values_are_kept_byte_exact() {
        let l = r#"{"secrets":[
              {"secretKey":"PEM","secretValue":"-----BEGIN KEY-----\nAAA=\n-----END KEY-----\n"},
              {"secretKey":"U","secretValue":"h\u00e9llo \"q\" a=b \u2603"}
            ]}"#;
        let mut out = SecretSet::new();
        merge("/", l, &mut out, &mut Vec::new()).unwrap();
        assert_eq!(
            value(&out, "PEM"),
            "-----BEGIN KEY-----\nAAA=\n-----END KEY-----\n"
        );
        assert_eq!(value(&out, "U"), "h\u{e9}llo \"q\" a=b \u{2603}");
    }

    #[test]
    fn hidden_and_personal_secrets_are_left_out() {
        let l = r#"{"secrets":[
              {"secretKey":"H","secretValue":"<hidden-by-infisical>","secretValueHidden":true},
              {"secretKey":"P","secretValue":"mine","type":"personal"},
              {"secretKey":"HN","secretValue":null,"secretValueHidden":true}
            ]}"#;
        let mut out = SecretSet::new();
        let mut hidden = Vec::new();
        merge("/", l, &mut out, &mut hidden).unwrap();
        hidden.sort();
        assert_eq!(hidden, vec!["H", "HN"]);
        assert!(out.is_empty());
    }

    #[test]
    fn a_null_or_missing_value_is_refused_naming_the_key_not_made_empty() {
        for (json, why) in [
            (r#"{"secretKey":"N","secretValue":null}"#, NotASecret::Null),
            (r#"{"secretKey":"N"}"#, NotASecret::Null),
            (
                r#"{"secretKey":"N","secretValue":3}"#,
                NotASecret::NotAString,
            ),
        ] {
            for listing in [
                format!(r#"{{"secrets":[{json}]}}"#),
                format!(r#"{{"secrets":[],"imports":[{{"secrets":[{json}]}}]}}"#),
            ] {
                let err = merge("/", &listing, &mut SecretSet::new(), &mut Vec::new()).unwrap_err();
                assert_eq!(
                    err,
                    BadValue {
                        key: "N".into(),
                        why
                    },
                    "{listing}"
                );
            }
        }
        // An empty string is a value like any other.
        let mut out = SecretSet::new();
        merge(
            "/",
            r#"{"secrets":[{"secretKey":"E","secretValue":""}]}"#,
            &mut out,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(value(&out, "E"), "");
    }

    #[test]
    fn secret_paths_name_the_folder_in_any_spelling() {
        assert!(same_folder("/app", "/app"));
        assert!(same_folder("app/", "/app"));
        assert!(same_folder(" /app/ ", "/app"));
        assert!(same_folder("", "/"));
        assert!(same_folder("/", "/"));
        assert!(!same_folder("/app/db", "/app"));
        assert!(!same_folder("/ap", "/app"));
    }

    #[test]
    fn a_hidden_own_secret_is_not_replaced_by_an_imported_value() {
        let l = r#"{
            "secrets": [ {"secretKey":"A","secretValue":"<hidden-by-infisical>","secretValueHidden":true} ],
            "imports": [ {"secrets":[ {"secretKey":"A","secretValue":"import-a"},
                                      {"secretKey":"B","secretValue":"import-b"} ]} ]
            }"#;
        let mut out = SecretSet::new();
        let mut hidden = Vec::new();
        let s = merge("/", l, &mut out, &mut hidden).unwrap();
        assert!(!out.contains("A"), "own secrets win, even hidden ones");
        assert_eq!(value(&out, "B"), "import-b");
        assert_eq!(hidden, vec!["A"]);
        assert_eq!((s.own, s.imported), (0, 2));
    }

    #[test]
    fn a_hidden_import_hides_an_earlier_import_of_the_same_name() {
        let l = r#"{"secrets":[],"imports":[
              {"secrets":[ {"secretKey":"A","secretValue":"first-a"} ]},
              {"secrets":[ {"secretKey":"A","secretValue":"x","secretValueHidden":true} ]} ]}"#;
        let mut out = SecretSet::new();
        let mut hidden = Vec::new();
        merge("/", l, &mut out, &mut hidden).unwrap();
        assert!(!out.contains("A"));
        assert_eq!(hidden, vec!["A"]);
    }

    #[test]
    fn a_hidden_value_in_a_later_path_removes_the_earlier_paths_value() {
        let mut out = SecretSet::new();
        let mut hidden = Vec::new();
        merge("/a", r#"{"secrets":[{"secretKey":"A","secretValue":"from-a"},{"secretKey":"K","secretValue":"k"}]}"#, &mut out, &mut hidden).unwrap();
        merge("/b", r#"{"secrets":[{"secretKey":"A","secretValue":"<hidden-by-infisical>","secretValueHidden":true}]}"#, &mut out, &mut hidden).unwrap();
        assert!(
            !out.contains("A"),
            "path /b wins on A and its value is hidden"
        );
        assert_eq!(value(&out, "K"), "k");
        assert_eq!(hidden, vec!["A"]);
    }

    #[test]
    fn a_readable_value_in_a_later_path_overrides_an_earlier_hidden_one() {
        let mut out = SecretSet::new();
        let mut hidden = Vec::new();
        merge(
            "/a",
            r#"{"secrets":[{"secretKey":"A","secretValue":"x","secretValueHidden":true}]}"#,
            &mut out,
            &mut hidden,
        )
        .unwrap();
        merge(
            "/b",
            r#"{"secrets":[{"secretKey":"A","secretValue":"from-b"}]}"#,
            &mut out,
            &mut hidden,
        )
        .unwrap();
        assert_eq!(value(&out, "A"), "from-b");
    }

    #[test]
    fn a_body_without_secrets_is_not_a_listing() {
        for body in [
            r#"{"message":"hi"}"#,
            r#"{"secrets":[{"secretValue":"v"}]}"#,
            r#"{"secrets":[]} trailing"#,
            r#"{"secrets":{}}"#,
            "[]",
        ] {
            let err = merge_listing("/", body, &mut SecretSet::new(), &mut Vec::new());
            assert!(matches!(err, Err(ListingError::Json(_))), "{body}");
        }
    }

    #[test]
    fn escaped_names_fields_in_any_order_and_unknown_fields_are_handled() {
        let mut out = SecretSet::new();
        let mut hidden = Vec::new();
        let s = merge(
            "/",
            r#"{"imports":[{"environment":"prod","secrets":[{"secretKey":"I","secretValue":"i","tags":[{"a":[1,{"b":null}]}]}]}],
               "meta":{"x":[true,false,1.5e3,"s\"q"]},
               "secrets":[{"secretValue":"v\n","secretKey":"K\u00e9","secretMetadata":[],"version":3}]}"#,
            &mut out,
            &mut hidden,
        )
        .unwrap();
        assert_eq!(value(&out, "K\u{e9}"), "v\n");
        assert_eq!(value(&out, "I"), "i");
        assert_eq!((s.own, s.imported), (1, 1));
    }

    #[test]
    fn a_bad_value_that_loses_to_a_later_one_is_not_an_error() {
        let mut out = SecretSet::new();
        merge(
            "/",
            r#"{"secrets":[{"secretKey":"A","secretValue":null},{"secretKey":"A","secretValue":"ok"}],
               "imports":[{"secrets":[{"secretKey":"B","secretValue":null}]},
                          {"secrets":[{"secretKey":"B","secretValue":"later"}]}]}"#,
            &mut out,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(value(&out, "A"), "ok");
        assert_eq!(value(&out, "B"), "later");
    }

    /// The merged names and values, and the hidden names.
    type Merged = (Vec<(String, String)>, Vec<String>);

    /// The merged set and hidden names of `body` fed in the pieces `cuts`.
    fn fed_in_pieces(body: &[u8], cuts: &[usize]) -> Result<Merged, String> {
        let mut stream = ListingStream::new("/app");
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&body.len())) {
            stream.feed(&body[from..cut]);
            from = cut;
        }
        let mut out = SecretSet::new();
        let mut hidden = Vec::new();
        let listing = stream.end().map_err(|e| e.to_string())?;
        listing
            .finish(&mut out, &mut hidden)
            .map_err(|bad| bad.key)?;
        let pairs = out
            .iter()
            .map(|(k, v)| (k.to_owned(), v.expose_secret().to_owned()))
            .collect();
        Ok((pairs, hidden))
    }

    #[test]
    fn a_listing_parses_the_same_however_it_is_cut_into_chunks() {
        // Brackets, quotes and backslashes inside strings, an escaped field
        // name, nesting in unknown fields, imports and a hidden value.
        let body = br#" { "meta" : {"a":[{"secrets":[{"secretKey":"NOT","secretValue":"x"}]}], "s":"]}\"["},
            "secr\u0065ts":[{"secretKey":"A","secretValue":"v{[\"}]\\","tags":[{"x":"}"}]},
                            {"secretKey":"H","secretValue":"<hidden-by-infisical>"},
                            {"secretKey":"S","secretValue":"sub","secretPath":"/app/x"}],
            "imports":[{"secretPath":"/i","secrets":[{"secretKey":"I","secretValue":"\u00e9\n"},
                                                     {"secretKey":"A","secretValue":"import-a"}]},
                       {"secrets":[]}] } "#;
        let whole = fed_in_pieces(body, &[]).unwrap();
        assert_eq!(
            whole.0,
            vec![
                ("A".to_owned(), "v{[\"}]\\".to_owned()),
                ("I".to_owned(), "\u{e9}\n".to_owned()),
                ("S".to_owned(), "sub".to_owned()),
            ]
        );
        assert_eq!(whole.1, vec!["H"]);
        for cut in 0..body.len() {
            assert_eq!(fed_in_pieces(body, &[cut]).unwrap(), whole, "cut at {cut}");
        }
        let every_byte: Vec<usize> = (1..body.len()).collect();
        assert_eq!(fed_in_pieces(body, &every_byte).unwrap(), whole);
    }

    #[test]
    fn a_broken_listing_is_refused_however_it_is_cut() {
        for body in [
            &br#"{"secrets":[{"secretKey":"A","secretValue":"a"} {"secretKey":"B","secretValue":"b"}]}"#[..],
            br#"{"secrets":[{"secretKey":"A","secretValue":"a"]}"#,
            br#"{"secrets":[{"secretKey":"A","secretValue":"a"}]"#,
            br#"{"secrets":[1]}"#,
            br#"{"secrets":[],"imports":[1]}"#,
            b"{\"secrets\":[{\"secretKey\":\"A\",\"secretValue\":\"a\xff\"}]}",
            br#"{"secrets" [{"secretKey":"A","secretValue":"a"}]}"#,
        ] {
            for cut in 0..body.len() {
                assert!(
                    fed_in_pieces(body, &[cut]).is_err(),
                    "{} cut at {cut}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn the_body_is_not_kept_whole_only_the_secrets_and_a_skeleton() {
        use std::fmt::Write as _;
        let mut body = String::from(r#"{"secrets":["#);
        for i in 0..2_000 {
            let _ = write!(
                body,
                r#"{}{{"id":"{i:0>36}","workspace":"{:0>36}","environment":"prod","version":1,"type":"shared","secretKey":"KEY_{i}","secretValue":"value-{i}","secretComment":"{:x<200}","tags":[]}}"#,
                if i == 0 { "" } else { "," },
                0,
                ""
            );
        }
        body.push_str("]}");
        let mut stream = ListingStream::new("/");
        for chunk in body.as_bytes().chunks(16 * 1024) {
            stream.feed(chunk);
        }
        // 2,000 secrets of ~400 bytes: 800 KB of body; kept: `{}` per secret
        // and the largest one secret.
        assert!(body.len() > 700_000);
        assert!(
            stream.skeleton.capacity() < 16 * 1024,
            "{}",
            stream.skeleton.capacity()
        );
        assert!(
            stream.element.capacity() < 2 * 1024,
            "{}",
            stream.element.capacity()
        );
        let listing = stream.end().unwrap();
        assert_eq!(listing.candidates.len(), 2_000);
    }
}
