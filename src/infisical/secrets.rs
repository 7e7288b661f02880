//! Listing secrets: `GET /api/v4/secrets` (falling back to `/api/v3/secrets/raw`
//! on servers without v4), project slug resolution, `ETag`s for polling, and the
//! client-side merge of paths and imports.
//!
//! Precedence (cli-contract.md "What to fetch"): paths are fetched in order and
//! later paths win on the same key; within one path the folder's own secrets
//! beat imported ones, and among imports the last one wins (as the Infisical CLI).

use std::sync::atomic::Ordering;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;

use super::auth::{secret_string, AccessToken};
use super::error::{self, Call, InfisicalError};
use super::{parse_json, Client};
use crate::secrets::SecretSet;

/// The value a server puts in place of a secret the identity may only describe.
const HIDDEN_PLACEHOLDER: &str = "<hidden-by-infisical>";

/// Which project: by ID, or by slug ([`Client::resolve_project_slug`] turns
/// it into the ID once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectRef {
    /// By ID.
    Id(String),
    /// By slug.
    Slug(String),
}

impl std::fmt::Display for ProjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "project {id}"),
            Self::Slug(slug) => write!(f, "project slug {slug}"),
        }
    }
}

/// What to fetch. `P` is the project: its ID (`String`) in a request; a
/// [`ProjectRef`] in the configured template, until the slug is resolved
/// ([`FetchSpec::for_project`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSpec<P = String> {
    /// Project (workspace) id, or how to find it.
    pub project_id: P,
    /// Environment slug.
    pub environment: String,
    /// Folders, in precedence order (later wins). Empty means `/`.
    pub paths: Vec<String>,
    /// Include sub-folders.
    pub recursive: bool,
    /// Include imported secrets.
    pub include_imports: bool,
    /// Expand `${...}` references on the server.
    pub expand: bool,
    /// Only secrets with these tag slugs.
    pub tags: Vec<String>,
}

impl<P> FetchSpec<P> {
    /// The same request for another project (the template's, resolved).
    pub fn for_project<Q>(&self, project_id: Q) -> FetchSpec<Q> {
        FetchSpec {
            project_id,
            environment: self.environment.clone(),
            paths: self.paths.clone(),
            recursive: self.recursive,
            include_imports: self.include_imports,
            expand: self.expand,
            tags: self.tags.clone(),
        }
    }

    fn paths(&self) -> Vec<String> {
        if self.paths.is_empty() {
            vec!["/".to_owned()]
        } else {
            self.paths.iter().map(|p| normalize_path(p)).collect()
        }
    }
}

/// Which listing route the server answered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `GET /api/v4/secrets`.
    V4,
    /// `GET /api/v3/secrets/raw` (older self-hosted servers).
    V3,
}

/// Per-path `ETag`s of the last fetch, for `If-None-Match` on the next poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Etags(Vec<Option<String>>);

impl Etags {
    /// Whether every path had an `ETag` (otherwise a poll can never be "not modified").
    pub fn is_complete(&self) -> bool {
        !self.0.is_empty() && self.0.iter().all(Option::is_some)
    }
}

/// What one path contributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSummary {
    /// The folder.
    pub path: String,
    /// Secrets of the folder (and sub-folders with `recursive`).
    pub own: usize,
    /// Secrets that came in through imports.
    pub imported: usize,
}

/// A successful listing.
#[derive(Debug)]
pub struct Fetched {
    /// The merged secrets.
    pub secrets: SecretSet,
    /// For the next poll.
    pub etags: Etags,
    /// Per path, in order.
    pub paths: Vec<PathSummary>,
    /// Names whose values the identity may not read (`secretValueHidden`); left out of `secrets`.
    pub hidden: Vec<String>,
    /// The route used.
    pub api: ApiVersion,
}

/// The result of [`Client::fetch`].
#[derive(Debug)]
pub enum FetchOutcome {
    /// New content (or the first fetch).
    Fetched(Fetched),
    /// Every path answered 304 to the `ETag`s given.
    NotModified,
}

#[derive(Deserialize)]
pub(crate) struct ListResponse {
    secrets: Vec<RawSecret>,
    #[serde(default)]
    imports: Vec<RawImport>,
}

#[derive(Deserialize)]
struct RawSecret {
    #[serde(rename = "secretKey")]
    key: String,
    #[serde(rename = "secretValue", default, deserialize_with = "secret_string")]
    value: SecretString,
    #[serde(rename = "secretValueHidden", default)]
    hidden: Option<bool>,
    #[serde(rename = "secretPath", default)]
    path: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

impl RawSecret {
    fn is_hidden(&self) -> bool {
        self.hidden == Some(true)
            || (self.hidden.is_none() && self.value.expose_secret() == HIDDEN_PLACEHOLDER)
    }
}

#[derive(Deserialize)]
struct RawImport {
    #[serde(default)]
    secrets: Vec<RawSecret>,
}

#[derive(Deserialize)]
struct ProjectResponse {
    id: Option<String>,
    #[serde(alias = "workspace")]
    project: Option<Box<ProjectResponse>>,
}

fn normalize_path(path: &str) -> String {
    let trimmed = path.trim();
    let with_root = if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    };
    let t = with_root.trim_end_matches('/');
    if t.is_empty() {
        "/".to_owned()
    } else {
        t.to_owned()
    }
}

/// Merges one path's listing into `out` (later paths override) and returns its summary.
///
/// A hidden value (`secretValueHidden`) takes its place in the precedence like any
/// other: it removes every lower-precedence value of its name (an import's, an
/// earlier path's), so a readable value the server would not deliver never leaks
/// in from behind it. Its name is added to `hidden`.
pub(crate) fn merge_path(
    path: &str,
    listing: ListResponse,
    out: &mut SecretSet,
    hidden: &mut Vec<String>,
) -> PathSummary {
    // `None` marks a value this identity may not read.
    let mut set: std::collections::BTreeMap<String, Option<SecretString>> =
        std::collections::BTreeMap::new();
    let readable = |secret: RawSecret| {
        let value = (!secret.is_hidden()).then_some(secret.value);
        (secret.key, value)
    };
    let mut imported = 0;
    // Imports, last first, first occurrence kept: the last import wins, and inside
    // one import its folder's own secrets beat the imports it nests (the server
    // flattens those after them).
    for import in listing.imports.into_iter().rev() {
        for secret in import.secrets {
            if secret.kind.as_deref() == Some("personal") || set.contains_key(&secret.key) {
                continue;
            }
            let (key, value) = readable(secret);
            imported += usize::from(value.is_some());
            set.insert(key, value);
        }
    }
    // The folder's own secrets beat imports. With `recursive`, sub-folder secrets
    // come in server order (later wins) and the folder's own beat them all.
    let mut own = 0;
    let mut sub: Vec<RawSecret> = Vec::new();
    let mut top: Vec<RawSecret> = Vec::new();
    for secret in listing.secrets {
        if secret.kind.as_deref() == Some("personal") {
            continue;
        }
        match secret.path.as_deref().map(normalize_path) {
            Some(p) if p != path => sub.push(secret),
            _ => top.push(secret),
        }
    }
    let mut seen_sub: std::collections::BTreeMap<String, String> =
        std::collections::BTreeMap::new();
    for secret in sub {
        let folder = secret
            .path
            .as_deref()
            .map(normalize_path)
            .unwrap_or_default();
        if let Some(prev) = seen_sub.insert(secret.key.clone(), folder.clone()) {
            tracing::warn!(key = %secret.key, kept = %folder, dropped = %prev, "the same key is in several sub-folders; the later one is used");
        }
        let (key, value) = readable(secret);
        own += usize::from(value.is_some());
        set.insert(key, value);
    }
    for secret in top {
        let (key, value) = readable(secret);
        own += usize::from(value.is_some());
        set.insert(key, value);
    }
    let summary = PathSummary {
        path: path.to_owned(),
        own,
        imported,
    };
    for (key, value) in set {
        if let Some(value) = value {
            out.insert(key, value);
        } else {
            out.remove(&key);
            hidden.push(key);
        }
    }
    summary
}

enum Listed {
    NotModified,
    Body {
        listing: ListResponse,
        etag: Option<String>,
    },
}

impl Client {
    /// Resolves a project slug to its id (`GET /api/v1/projects/slug/{slug}`).
    pub async fn resolve_project_slug(
        &self,
        token: &AccessToken,
        slug: &str,
        deadline: Instant,
    ) -> Result<String, InfisicalError> {
        let encoded: String = slug
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let path = format!("/api/v1/projects/slug/{encoded}");
        let endpoint = format!("GET /api/v1/projects/slug/{slug}");
        let url = self.url(&path);
        let scrub = [token.secret().expose_secret()];
        let reply = self
            .with_retry(deadline, |bound| {
                let request = self
                    .http
                    .get(&url)
                    .bearer_auth(token.secret().expose_secret());
                self.send(request, &endpoint, bound, &scrub)
            })
            .await?;
        if reply.status != 200 {
            let server = reply.server_error(&scrub);
            return Err(error::status_error(
                Call::Authenticated,
                &endpoint,
                server,
                None,
            ));
        }
        let resp: ProjectResponse = parse_json(&endpoint, &reply.body)?;
        let id = resp
            .id
            .or_else(|| resp.project.and_then(|p| p.id))
            .filter(|id| !id.is_empty());
        let id = id.ok_or_else(|| InfisicalError::BadResponse {
            endpoint: endpoint.clone(),
            detail: "no project id in it".to_owned(),
        })?;
        tracing::info!(slug, project_id = %id, "resolved the project slug");
        Ok(id)
    }

    /// Fetches the secrets of `spec`, merged. With `previous` `ETag`s (from the last
    /// fetch of the same spec), answers [`FetchOutcome::NotModified`] when every
    /// path is unchanged.
    pub async fn fetch(
        &self,
        token: &AccessToken,
        spec: &FetchSpec,
        previous: Option<&Etags>,
        deadline: Instant,
    ) -> Result<FetchOutcome, InfisicalError> {
        let paths = spec.paths();
        let previous = previous.filter(|e| e.0.len() == paths.len());
        let mut listings: Vec<Option<(ListResponse, Option<String>)>> =
            Vec::with_capacity(paths.len());
        let mut unchanged_so_far = previous.is_some();
        for (i, path) in paths.iter().enumerate() {
            let etag = if unchanged_so_far {
                previous.and_then(|p| p.0[i].as_deref())
            } else {
                None
            };
            match self.list(token, spec, path, etag, deadline).await? {
                Listed::NotModified => listings.push(None),
                Listed::Body { listing, etag } => {
                    if unchanged_so_far && i > 0 {
                        // The earlier paths answered 304 but their content is needed now.
                        for (j, earlier) in paths[..i].iter().enumerate() {
                            match self.list(token, spec, earlier, None, deadline).await? {
                                Listed::Body { listing, etag } => {
                                    listings[j] = Some((listing, etag));
                                }
                                Listed::NotModified => {
                                    return Err(InfisicalError::BadResponse {
                                        endpoint: format!("GET secrets (path {earlier})"),
                                        detail:
                                            "304 Not Modified to a request without If-None-Match"
                                                .to_owned(),
                                    })
                                }
                            }
                        }
                    }
                    unchanged_so_far = false;
                    listings.push(Some((listing, etag)));
                }
            }
        }
        if unchanged_so_far {
            return Ok(FetchOutcome::NotModified);
        }
        let mut secrets = SecretSet::new();
        let mut hidden = Vec::new();
        let mut summaries = Vec::with_capacity(paths.len());
        let mut etags = Vec::with_capacity(paths.len());
        for (path, listed) in paths.iter().zip(listings) {
            // Once a change is seen every path has a body; guard anyway rather than panic.
            let Some((listing, etag)) = listed else {
                return Err(InfisicalError::BadResponse {
                    endpoint: format!("GET secrets (path {path})"),
                    detail: "no listing for this path".to_owned(),
                });
            };
            summaries.push(merge_path(path, listing, &mut secrets, &mut hidden));
            etags.push(etag);
        }
        // A hidden value a later path overrides with a readable one is delivered.
        hidden.retain(|name| !secrets.contains(name));
        hidden.sort();
        hidden.dedup();
        if !hidden.is_empty() {
            tracing::warn!(names = ?hidden, "the identity may not read these secrets' values (describe-only permission); they are left out");
        }
        let api = if self.use_v3.load(Ordering::Relaxed) {
            ApiVersion::V3
        } else {
            ApiVersion::V4
        };
        tracing::info!(count = secrets.len(), paths = ?summaries.iter().map(|s| &s.path).collect::<Vec<_>>(), "fetched secrets");
        Ok(FetchOutcome::Fetched(Fetched {
            secrets,
            etags: Etags(etags),
            paths: summaries,
            hidden,
            api,
        }))
    }

    /// Lists one path, on v4 or (after a v4 404) v3.
    async fn list(
        &self,
        token: &AccessToken,
        spec: &FetchSpec,
        path: &str,
        etag: Option<&str>,
        deadline: Instant,
    ) -> Result<Listed, InfisicalError> {
        loop {
            let v3 = self.use_v3.load(Ordering::Relaxed);
            let route = if v3 {
                "/api/v3/secrets/raw"
            } else {
                "/api/v4/secrets"
            };
            let endpoint = format!(
                "GET {route} (project {}, environment {}, path {path})",
                spec.project_id, spec.environment
            );
            let query = list_query(spec, path, v3);
            let url = self.url(route);
            let scrub = [token.secret().expose_secret()];
            let reply = self
                .with_retry(deadline, |bound| {
                    let mut request = self
                        .http
                        .get(&url)
                        .query(&query)
                        .bearer_auth(token.secret().expose_secret());
                    if let Some(etag) = etag {
                        request = request.header(reqwest::header::IF_NONE_MATCH, etag);
                    }
                    self.send(request, &endpoint, bound, &scrub)
                })
                .await?;
            match reply.status {
                200 => {
                    let listing: ListResponse = parse_json(&endpoint, &reply.body)?;
                    let etag = reply
                        .headers
                        .get(reqwest::header::ETAG)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    return Ok(Listed::Body { listing, etag });
                }
                304 if etag.is_some() => return Ok(Listed::NotModified),
                404 if !v3 => {
                    let server = reply.server_error(&scrub);
                    // A missing *route* (fastify's "Not Found") means an old server; a
                    // missing project/environment says "NotFound" and is a real 404.
                    if server.error.as_deref() == Some("NotFound") {
                        return Err(error::status_error(
                            Call::Authenticated,
                            &endpoint,
                            server,
                            None,
                        ));
                    }
                    tracing::info!(
                        "the server has no /api/v4/secrets; using /api/v3/secrets/raw from now on"
                    );
                    self.use_v3.store(true, Ordering::Relaxed);
                }
                _ => {
                    let server = reply.server_error(&scrub);
                    return Err(error::status_error(
                        Call::Authenticated,
                        &endpoint,
                        server,
                        None,
                    ));
                }
            }
        }
    }
}

/// The query of a listing, every boolean explicit (defaults changed between versions).
fn list_query(spec: &FetchSpec, path: &str, v3: bool) -> Vec<(&'static str, String)> {
    let flag = |b: bool| if b { "true" } else { "false" }.to_owned();
    let mut q = vec![
        (
            if v3 { "workspaceId" } else { "projectId" },
            spec.project_id.clone(),
        ),
        ("environment", spec.environment.clone()),
        ("secretPath", path.to_owned()),
        ("recursive", flag(spec.recursive)),
        ("expandSecretReferences", flag(spec.expand)),
        ("includeImports", flag(spec.include_imports)),
        ("include_imports", flag(spec.include_imports)),
        ("viewSecretValue", "true".to_owned()),
        ("includePersonalOverrides", "false".to_owned()),
    ];
    if !spec.tags.is_empty() {
        q.push(("tagSlugs", spec.tags.join(",")));
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(json: &str) -> ListResponse {
        parse_json("GET /test", json.as_bytes()).unwrap()
    }

    fn value(set: &SecretSet, key: &str) -> String {
        set.get(key)
            .map(|v| v.expose_secret().to_owned())
            .unwrap_or_default()
    }

    #[test]
    fn own_secrets_beat_imports_and_the_last_import_wins() {
        let l = listing(
            r#"{
            "secrets": [ {"secretKey":"A","secretValue":"own-a","type":"shared"} ],
            "imports": [
              {"secretPath":"/first","environment":"prod","secrets":[
                 {"secretKey":"A","secretValue":"first-a"},
                 {"secretKey":"B","secretValue":"first-b"},
                 {"secretKey":"C","secretValue":"first-c"} ]},
              {"secretPath":"/second","environment":"prod","secrets":[
                 {"secretKey":"B","secretValue":"second-b"},
                 {"secretKey":"B","secretValue":"second-nested-b"} ]}
            ]}"#,
        );
        let mut out = SecretSet::new();
        let mut hidden = Vec::new();
        let s = merge_path("/", l, &mut out, &mut hidden);
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
        merge_path(
            "/a",
            listing(
                r#"{"secrets":[{"secretKey":"K","secretValue":"from-a"},{"secretKey":"ONLY_A","secretValue":"1"}]}"#,
            ),
            &mut out,
            &mut hidden,
        );
        merge_path(
            "/b",
            listing(
                r#"{"secrets":[],"imports":[{"secrets":[{"secretKey":"K","secretValue":"from-b-import"}]}]}"#,
            ),
            &mut out,
            &mut hidden,
        );
        assert_eq!(value(&out, "K"), "from-b-import");
        assert_eq!(value(&out, "ONLY_A"), "1");
    }

    #[test]
    fn recursive_listing_prefers_the_folder_itself_over_sub_folders() {
        let l = listing(
            r#"{"secrets":[
              {"secretKey":"X","secretValue":"sub-1","secretPath":"/app/one"},
              {"secretKey":"X","secretValue":"top","secretPath":"/app"},
              {"secretKey":"Y","secretValue":"sub-1","secretPath":"/app/one/"},
              {"secretKey":"Y","secretValue":"sub-2","secretPath":"/app/two"}
            ]}"#,
        );
        let mut out = SecretSet::new();
        merge_path("/app", l, &mut out, &mut Vec::new());
        assert_eq!(value(&out, "X"), "top");
        assert_eq!(value(&out, "Y"), "sub-2");
    }

    #[test]
    fn values_are_kept_byte_exact() {
        let l = listing(
            r#"{"secrets":[
              {"secretKey":"PEM","secretValue":"-----BEGIN KEY-----\nAAA=\n-----END KEY-----\n"},
              {"secretKey":"U","secretValue":"h\u00e9llo \"q\" a=b \u2603"}
            ]}"#,
        );
        let mut out = SecretSet::new();
        merge_path("/", l, &mut out, &mut Vec::new());
        assert_eq!(
            value(&out, "PEM"),
            "-----BEGIN KEY-----\nAAA=\n-----END KEY-----\n"
        );
        assert_eq!(value(&out, "U"), "h\u{e9}llo \"q\" a=b \u{2603}");
    }

    #[test]
    fn hidden_and_personal_secrets_are_left_out() {
        let l = listing(
            r#"{"secrets":[
              {"secretKey":"H","secretValue":"<hidden-by-infisical>","secretValueHidden":true},
              {"secretKey":"P","secretValue":"mine","type":"personal"},
              {"secretKey":"N","secretValue":null}
            ]}"#,
        );
        let mut out = SecretSet::new();
        let mut hidden = Vec::new();
        merge_path("/", l, &mut out, &mut hidden);
        assert_eq!(hidden, vec!["H"]);
        assert!(!out.contains("H") && !out.contains("P"));
        assert_eq!(value(&out, "N"), "");
    }

    #[test]
    fn a_hidden_own_secret_is_not_replaced_by_an_imported_value() {
        let l = listing(
            r#"{
            "secrets": [ {"secretKey":"A","secretValue":"<hidden-by-infisical>","secretValueHidden":true} ],
            "imports": [ {"secrets":[ {"secretKey":"A","secretValue":"import-a"},
                                      {"secretKey":"B","secretValue":"import-b"} ]} ]
            }"#,
        );
        let mut out = SecretSet::new();
        let mut hidden = Vec::new();
        let s = merge_path("/", l, &mut out, &mut hidden);
        assert!(!out.contains("A"), "own secrets win, even hidden ones");
        assert_eq!(value(&out, "B"), "import-b");
        assert_eq!(hidden, vec!["A"]);
        assert_eq!((s.own, s.imported), (0, 2));
    }

    #[test]
    fn a_hidden_import_hides_an_earlier_import_of_the_same_name() {
        let l = listing(
            r#"{"secrets":[],"imports":[
              {"secrets":[ {"secretKey":"A","secretValue":"first-a"} ]},
              {"secrets":[ {"secretKey":"A","secretValue":"x","secretValueHidden":true} ]} ]}"#,
        );
        let mut out = SecretSet::new();
        let mut hidden = Vec::new();
        merge_path("/", l, &mut out, &mut hidden);
        assert!(!out.contains("A"));
        assert_eq!(hidden, vec!["A"]);
    }

    #[test]
    fn a_hidden_value_in_a_later_path_removes_the_earlier_paths_value() {
        let mut out = SecretSet::new();
        let mut hidden = Vec::new();
        merge_path(
            "/a",
            listing(
                r#"{"secrets":[{"secretKey":"A","secretValue":"from-a"},{"secretKey":"K","secretValue":"k"}]}"#,
            ),
            &mut out,
            &mut hidden,
        );
        merge_path(
            "/b",
            listing(
                r#"{"secrets":[{"secretKey":"A","secretValue":"<hidden-by-infisical>","secretValueHidden":true}]}"#,
            ),
            &mut out,
            &mut hidden,
        );
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
        merge_path(
            "/a",
            listing(
                r#"{"secrets":[{"secretKey":"A","secretValue":"x","secretValueHidden":true}]}"#,
            ),
            &mut out,
            &mut hidden,
        );
        merge_path(
            "/b",
            listing(r#"{"secrets":[{"secretKey":"A","secretValue":"from-b"}]}"#),
            &mut out,
            &mut hidden,
        );
        assert_eq!(value(&out, "A"), "from-b");
    }

    #[test]
    fn a_body_without_secrets_is_not_a_listing() {
        assert!(parse_json::<ListResponse>("GET /x", br#"{"message":"hi"}"#).is_err());
        assert!(
            parse_json::<ListResponse>("GET /x", br#"{"secrets":[{"secretValue":"v"}]}"#).is_err()
        );
    }

    #[test]
    fn query_sends_every_flag_and_both_import_spellings() {
        let spec = FetchSpec {
            project_id: "p1".into(),
            environment: "prod".into(),
            paths: vec![],
            recursive: false,
            include_imports: true,
            expand: false,
            tags: vec!["a".into(), "b".into()],
        };
        let q = list_query(&spec, "/", false);
        let get = |k: &str| q.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("projectId"), Some("p1"));
        assert_eq!(get("recursive"), Some("false"));
        assert_eq!(get("expandSecretReferences"), Some("false"));
        assert_eq!(get("includeImports"), Some("true"));
        assert_eq!(get("include_imports"), Some("true"));
        assert_eq!(get("viewSecretValue"), Some("true"));
        assert_eq!(get("includePersonalOverrides"), Some("false"));
        assert_eq!(get("tagSlugs"), Some("a,b"));
        let q3 = list_query(&spec, "/", true);
        assert!(q3.iter().any(|(n, v)| *n == "workspaceId" && v == "p1"));
        assert!(!q3.iter().any(|(n, _)| *n == "projectId"));
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("app/"), "/app");
        assert_eq!(normalize_path("/app/db//"), "/app/db");
    }
}
