//! `SecretSet`: the fetched secrets, by name, values in zeroizing memory; and
//! [`Selection`], which of them are delivered under which names (`--only`,
//! `--map`).
//!
//! Values are `SecretString`s (zeroized on drop, never shown by `Debug`). Names
//! are not secret. The set is ordered by name so every delivery is
//! deterministic, and its fingerprint covers exactly the delivered name/value
//! pairs, so comments or metadata changing on the server never count as a change.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Secrets by name. Inserting an existing name replaces its value (later wins).
#[derive(Default, Clone)]
pub struct SecretSet {
    entries: BTreeMap<String, SecretString>,
}

impl SecretSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `name`.
    pub fn insert(&mut self, name: impl Into<String>, value: SecretString) {
        self.entries.insert(name.into(), value);
    }

    /// Removes `name` (its value is zeroized on drop).
    pub fn remove(&mut self, name: &str) {
        self.entries.remove(name);
    }

    /// Moves every entry of `other` in, replacing values of names already present.
    pub fn extend_overriding(&mut self, other: SecretSet) {
        self.entries.extend(other.entries);
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&SecretString> {
        self.entries.get(name)
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Number of secrets.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no secrets.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// `(name, value)` pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretString)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// SHA-256 over the length-prefixed names and values, in name order.
    /// Equal fingerprints mean the same delivered content.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for (name, value) in &self.entries {
            let value = value.expose_secret().as_bytes();
            hasher.update((name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            hasher.update((value.len() as u64).to_le_bytes());
            hasher.update(value);
        }
        hasher.finalize().into()
    }
}

impl IntoIterator for SecretSet {
    type Item = (String, SecretString);
    type IntoIter = std::collections::btree_map::IntoIter<String, SecretString>;

    /// The entries in name order, moved out (no copy of a value is made).
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Which fetched secrets are delivered, and under which names: `--only`
/// (these keys) and `--map SRC=DST` (SRC delivered as DST). Applied once to
/// every fetched set, before any way of delivering sees it, so the
/// environment, the files, the dotenv and JSON files (and anything added
/// later) all deliver the same selected set.
///
/// Every name given here is a key as named in Infisical except DST. With
/// `--only`, the mapped keys are delivered too (under their new names); a
/// mapped key is delivered only under its new name (mapped twice, under both).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    only: Vec<String>,
    map: Vec<(String, String)>,
}

/// Two secrets that would be delivered under one name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--map would deliver several secrets under one name: {}", .0.join("; "))]
pub struct Collision(
    /// `DB_URL (from DATABASE_URL and DB_URL)`.
    pub Vec<String>,
);

impl Selection {
    /// Keys to deliver (`--only`; empty: every key) and renames (`--map`).
    pub fn new(only: Vec<String>, map: Vec<(String, String)>) -> Self {
        Self { only, map }
    }

    /// Whether everything is delivered under its own name.
    pub fn is_everything(&self) -> bool {
        self.only.is_empty() && self.map.is_empty()
    }

    /// One canonical line per rule, sorted (their order does not change what
    /// is delivered): `only\0KEY`, `map\0SRC\0DST`. NUL cannot be in a
    /// name given on the command line, so two selections have the same lines
    /// only when they select the same way (what the fallback binds a stored
    /// set to).
    pub fn rules(&self) -> Vec<String> {
        let only = self.only.iter().map(|key| format!("only\0{key}"));
        let map = self
            .map
            .iter()
            .map(|(src, dst)| format!("map\0{src}\0{dst}"));
        let mut rules: Vec<String> = only.chain(map).collect();
        rules.sort_unstable();
        rules.dedup();
        rules
    }

    /// The keys this selection needs that `fetched` lacks, each with what
    /// asked for it: `KEY (--only)`, `SRC (--map SRC=DST)`.
    pub fn missing(&self, fetched: &SecretSet) -> Vec<String> {
        let only = self
            .only
            .iter()
            .filter(|key| !fetched.contains(key))
            .map(|key| format!("{key} (--only)"));
        let map = self
            .map
            .iter()
            .filter(|(src, _)| !fetched.contains(src))
            .map(|(src, dst)| format!("{src} (--map {src}={dst})"));
        only.chain(map).collect()
    }

    /// The delivered set: the selected keys under their delivered names.
    /// Keys this selection needs but `fetched` lacks are left out here
    /// (they are refused before, with [`Selection::missing`]).
    pub fn apply(&self, fetched: SecretSet) -> Result<SecretSet, Collision> {
        if self.is_everything() {
            return Ok(fetched);
        }
        let mut out = SecretSet::new();
        let mut sources: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in fetched {
            let targets: Vec<&str> = self
                .map
                .iter()
                .filter(|(src, _)| *src == name)
                .map(|(_, dst)| dst.as_str())
                .collect();
            if targets.is_empty() {
                if self.only.is_empty() || self.only.contains(&name) {
                    sources.entry(name.clone()).or_default().push(name.clone());
                    out.insert(name, value);
                }
                continue;
            }
            for target in targets {
                sources
                    .entry(target.to_owned())
                    .or_default()
                    .push(name.clone());
                out.insert(target, value.clone());
            }
        }
        let clashes: Vec<String> = sources
            .into_iter()
            .filter(|(_, from)| from.len() > 1)
            .map(|(name, from)| format!("{name} (from {})", from.join(" and ")))
            .collect();
        if clashes.is_empty() {
            Ok(out)
        } else {
            Err(Collision(clashes))
        }
    }
}

impl FromIterator<(String, SecretString)> for SecretSet {
    /// Builds the set in one go: a sorted input is built without comparing
    /// names (inserting sorted names one by one is the B-tree's worst case);
    /// on a repeated name the later value wins, as with [`SecretSet::insert`].
    fn from_iter<I: IntoIterator<Item = (String, SecretString)>>(iter: I) -> Self {
        Self {
            entries: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
impl SecretSet {
    /// A set from `(name, value)` pairs (unit tests).
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), SecretString::from(*value)))
            .collect()
    }
}

impl fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.keys().map(|k| (k, "[redacted]")))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_owned())
    }

    #[test]
    fn debug_shows_names_never_values() {
        let mut set = SecretSet::new();
        set.insert("DB_PASSWORD", s("hunter2-very-secret"));
        let shown = format!("{set:?} {set:#?}");
        assert!(shown.contains("DB_PASSWORD"));
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn later_insert_wins_and_remove_removes() {
        let mut set = SecretSet::new();
        set.insert("A", s("1"));
        set.insert("A", s("2"));
        assert_eq!(set.get("A").unwrap().expose_secret(), "2");
        set.remove("A");
        set.remove("never-there");
        assert!(set.is_empty());
    }

    fn selection(only: &[&str], map: &[(&str, &str)]) -> Selection {
        Selection::new(
            only.iter().map(|s| (*s).to_owned()).collect(),
            map.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        )
    }

    fn delivered(set: &SecretSet) -> Vec<(String, String)> {
        set.iter()
            .map(|(k, v)| (k.to_owned(), v.expose_secret().to_owned()))
            .collect()
    }

    type Pairs = &'static [(&'static str, &'static str)];

    /// `--only` and `--map` as a table: selection, renames, what --only
    /// keeps when a key is also mapped, one key under two names, a swap.
    #[test]
    fn selection_picks_and_renames() {
        let fetched = SecretSet::from_pairs(&[("A", "1"), ("B", "2"), ("my-key", "3")]);
        let table: &[(&[&str], Pairs, Pairs)] = &[
            (&[], &[], &[("A", "1"), ("B", "2"), ("my-key", "3")]),
            (&["A"], &[], &[("A", "1")]),
            (
                &[],
                &[("my-key", "MY_KEY")],
                &[("A", "1"), ("B", "2"), ("MY_KEY", "3")],
            ),
            (
                &["A"],
                &[("my-key", "MY_KEY")],
                &[("A", "1"), ("MY_KEY", "3")],
            ),
            (
                &[],
                &[("A", "X"), ("A", "Y")],
                &[("B", "2"), ("X", "1"), ("Y", "1"), ("my-key", "3")],
            ),
            (
                &["A", "B"],
                &[("A", "B"), ("B", "A")],
                &[("A", "2"), ("B", "1")],
            ),
        ];
        for (only, map, expected) in table {
            let got = selection(only, map).apply(fetched.clone()).unwrap();
            let expected: Vec<(String, String)> = expected
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            assert_eq!(delivered(&got), expected, "--only {only:?} --map {map:?}");
        }
    }

    #[test]
    fn selection_refuses_two_secrets_under_one_name_and_lists_what_is_missing() {
        let fetched = SecretSet::from_pairs(&[("A", "1"), ("B", "2"), ("C", "3")]);
        let err = selection(&[], &[("A", "B")])
            .apply(fetched.clone())
            .unwrap_err();
        assert_eq!(err.0, ["B (from A and B)"]);
        let err = selection(&[], &[("A", "X"), ("C", "X")])
            .apply(fetched.clone())
            .unwrap_err();
        assert_eq!(err.0, ["X (from A and C)"]);
        let missing = selection(&["A", "Z"], &[("Y", "W")]).missing(&fetched);
        assert_eq!(missing, ["Z (--only)", "Y (--map Y=W)"]);
        assert!(selection(&["A"], &[]).missing(&fetched).is_empty());
    }

    #[test]
    fn collecting_keeps_the_later_value_of_a_repeated_name() {
        let set: SecretSet = [("B", "1"), ("A", "2"), ("B", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), s(v)))
            .collect();
        assert_eq!(set.names().collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(set.get("B").unwrap().expose_secret(), "3");
    }

    #[test]
    fn fingerprint_changes_with_any_value_and_is_not_fooled_by_concatenation() {
        let mut a = SecretSet::new();
        a.insert("AB", s("C"));
        let mut b = SecretSet::new();
        b.insert("A", s("BC"));
        assert_ne!(a.fingerprint(), b.fingerprint());
        let mut c = a.clone();
        assert_eq!(a.fingerprint(), c.fingerprint());
        c.insert("AB", s("D"));
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
