//! One path's listing (`{secrets, imports}`) parsed in one pass over the body
//! into a compact list of candidates that borrow their names and raw values
//! from it (no `String` per field, no parsed secret kept whole), then merged:
//! only the winning value of each name is decoded, once, straight into its
//! `SecretString` (`secret_json`).
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

/// One secret of the listing, borrowing its name and raw value from the body;
/// decoded only if it wins.
struct Candidate<'a> {
    key: Cow<'a, str>,
    /// Raw JSON; `None` when absent or `null`.
    value: Option<&'a RawValue>,
    /// The identity may not read it (`secretValueHidden`, or the placeholder).
    hidden: bool,
    class: Class,
    /// The sub-folder, for the warning about a name in several of them.
    folder: Option<Cow<'a, str>>,
}

impl Candidate<'_> {
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

struct Merge<'p, 'a> {
    /// The folder asked for, normalised.
    path: &'p str,
    /// Every secret, in the order of the body.
    candidates: Vec<Candidate<'a>>,
    /// Readable secrets of the folder (and sub-folders), duplicates included.
    own: usize,
}

impl<'a> Merge<'_, 'a> {
    fn add(&mut self, secret: RawSecret<'a>, import: Option<u32>) {
        if secret.kind.as_deref() == Some("personal") {
            return;
        }
        let hidden = secret.hidden == Some(true)
            || (secret.hidden.is_none()
                && secret_json::is_string(secret.value, HIDDEN_PLACEHOLDER));
        let (class, folder) = match (import, secret.path) {
            (Some(index), _) => (Class::Import(index), None),
            (None, Some(folder)) if !same_folder(&folder, self.path) => (Class::Sub, Some(folder)),
            (None, _) => (Class::Top, None),
        };
        if import.is_none() {
            self.own += usize::from(!hidden);
        }
        self.candidates.push(Candidate {
            key: secret.key,
            value: secret.value,
            hidden,
            class,
            folder,
        });
    }

    /// Picks each name's winner and applies it to `out` (this path overrides
    /// earlier ones). A compact list sorted by name, not a map: at 10,000
    /// secrets a hash map of the candidates cost more memory than the body.
    fn finish(
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
        let mut rest = self.candidates.as_slice();
        while let Some(first) = rest.first() {
            let len = rest.iter().take_while(|c| c.key == first.key).count();
            let (group, tail) = rest.split_at(len);
            rest = tail;
            let mut best = &group[0];
            let mut best_import: Option<&Candidate<'_>> = None;
            let mut last_sub: Option<&Candidate<'_>> = None;
            for candidate in group {
                if candidate.beats(best) {
                    best = candidate;
                }
                match candidate.class {
                    Class::Import(_) => {
                        if best_import.is_none_or(|b| candidate.class > b.class) {
                            best_import = Some(candidate);
                        }
                    }
                    Class::Sub => {
                        if let Some(previous) = last_sub {
                            tracing::warn!(key = %candidate.key, kept = %candidate.folder.as_deref().unwrap_or_default(), dropped = %previous.folder.as_deref().unwrap_or_default(), "the same key is in several sub-folders; the later one is used");
                        }
                        last_sub = Some(candidate);
                    }
                    Class::Top => {}
                }
            }
            imported += usize::from(best_import.is_some_and(|c| !c.hidden));
            if best.hidden {
                // It removes every lower-precedence value of its name (an
                // earlier path's): a value the server would not deliver never
                // leaks in from behind it.
                out.remove(&best.key);
                hidden.push(best.key.clone().into_owned());
                continue;
            }
            match secret_json::decode(best.value) {
                Ok(value) => winners.push((best.key.clone().into_owned(), value)),
                // The first bad name in name order (the list is sorted).
                Err(why) if bad.is_none() => {
                    bad = Some(BadValue {
                        key: best.key.clone().into_owned(),
                        why,
                    });
                }
                Err(_) => {}
            }
        }
        if let Some(bad) = bad {
            return Err(bad);
        }
        if out.is_empty() {
            *out = winners.into_iter().collect();
        } else {
            for (key, value) in winners {
                out.insert(key, value);
            }
        }
        Ok(PathSummary {
            path: self.path.to_owned(),
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

/// Parses the listing `text` of folder `path` and merges it into `out`.
///
/// A hidden value takes its place in the precedence like any other and is
/// named in `hidden`. A winning readable value that is `null`, missing or not
/// a string is refused (an empty value in its place would start the program
/// with a wrong secret).
pub(crate) fn merge_listing(
    path: &str,
    text: &str,
    out: &mut SecretSet,
    hidden: &mut Vec<String>,
) -> Result<PathSummary, ListingError> {
    // Sized once from the number of names in the body (an upper bound).
    let mut merge = Merge {
        path,
        candidates: Vec::with_capacity(text.matches("\"secretKey\"").count()),
        own: 0,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    Listing(&mut merge)
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(ListingError::Json)?;
    merge.finish(out, hidden).map_err(ListingError::Bad)
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

/// `{secrets: [...], imports: [{secrets: [...]}, ...]}`.
struct Listing<'m, 'p, 'a>(&'m mut Merge<'p, 'a>);

impl<'a> DeserializeSeed<'a> for Listing<'_, '_, 'a> {
    type Value = ();
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'a> Visitor<'a> for Listing<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secrets listing")
    }
    fn visit_map<M: MapAccess<'a>>(self, mut map: M) -> Result<(), M::Error> {
        let mut secrets = false;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Secrets => {
                    map.next_value_seed(Secrets {
                        merge: &mut *self.0,
                        import: None,
                    })?;
                    secrets = true;
                }
                Field::Imports => map.next_value_seed(Imports(&mut *self.0))?,
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

/// An array of secrets, each applied as it is parsed.
struct Secrets<'m, 'p, 'a> {
    merge: &'m mut Merge<'p, 'a>,
    /// The import's index, `None` for the folder's own secrets.
    import: Option<u32>,
}

impl<'a> DeserializeSeed<'a> for Secrets<'_, '_, 'a> {
    type Value = ();
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'a> Visitor<'a> for Secrets<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of secrets")
    }
    fn visit_seq<S: SeqAccess<'a>>(self, mut seq: S) -> Result<(), S::Error> {
        while let Some(secret) = seq.next_element::<RawSecret<'a>>()? {
            self.merge.add(secret, self.import);
        }
        Ok(())
    }
}

/// The array of imports, each `{secrets: [...], ...}`.
struct Imports<'m, 'p, 'a>(&'m mut Merge<'p, 'a>);

impl<'a> DeserializeSeed<'a> for Imports<'_, '_, 'a> {
    type Value = ();
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'a> Visitor<'a> for Imports<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of imports")
    }
    fn visit_seq<S: SeqAccess<'a>>(self, mut seq: S) -> Result<(), S::Error> {
        let mut index = 0;
        while seq
            .next_element_seed(Import {
                merge: &mut *self.0,
                index,
            })?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }
}

/// One import: only its `secrets` matter.
struct Import<'m, 'p, 'a> {
    merge: &'m mut Merge<'p, 'a>,
    index: u32,
}

impl<'a> DeserializeSeed<'a> for Import<'_, '_, 'a> {
    type Value = ();
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'a> Visitor<'a> for Import<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an import")
    }
    fn visit_map<M: MapAccess<'a>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(field) = map.next_key::<Field>()? {
            if let Field::Secrets = field {
                map.next_value_seed(Secrets {
                    merge: &mut *self.merge,
                    import: Some(self.index),
                })?;
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
}
