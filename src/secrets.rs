//! `SecretSet`: the fetched secrets, by name, values in zeroizing memory.
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
