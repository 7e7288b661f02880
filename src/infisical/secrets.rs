//! Listing secrets: `GET /api/v4/secrets` (falling back to `/api/v3/secrets/raw`
//! on servers without v4), project slug resolution, `ETag`s for polling, and the
//! client-side merge of paths and imports.
//!
//! Precedence (cli-contract.md "What to fetch"): paths are fetched in order and
//! later paths win on the same key; within one path the folder's own secrets
//! beat imported ones, and among imports the last one wins (as the Infisical CLI).

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::time::Instant;

use super::auth::AccessToken;
use super::error::{self, Call, InfisicalError};
use super::listing::{ListingStream, PathListing};
use super::{parse_json, Client};
use crate::secrets::SecretSet;

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

enum Listed {
    NotModified,
    /// A 200, parsed as it arrived; merged with the other paths' in order.
    Body {
        endpoint: String,
        listing: PathListing,
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
        let authorization = super::bearer(token.secret())?;
        let reply = self
            .with_retry(deadline, |bound| {
                let request = self
                    .http
                    .get(&url)
                    .header(reqwest::header::AUTHORIZATION, authorization.clone());
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
        let mut listings: Vec<Option<Listed>> = Vec::with_capacity(paths.len());
        let mut unchanged_so_far = previous.is_some();
        for (i, path) in paths.iter().enumerate() {
            let etag = if unchanged_so_far {
                previous.and_then(|p| p.0[i].as_deref())
            } else {
                None
            };
            match self.list(token, spec, path, etag, deadline).await? {
                Listed::NotModified => listings.push(None),
                body @ Listed::Body { .. } => {
                    if unchanged_so_far && i > 0 {
                        // The earlier paths answered 304 but their content is needed now.
                        for (j, earlier) in paths[..i].iter().enumerate() {
                            match self.list(token, spec, earlier, None, deadline).await? {
                                body @ Listed::Body { .. } => listings[j] = Some(body),
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
                    listings.push(Some(body));
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
            let Some(Listed::Body {
                endpoint,
                listing,
                etag,
            }) = listed
            else {
                return Err(InfisicalError::BadResponse {
                    endpoint: format!("GET secrets (path {path})"),
                    detail: "no listing for this path".to_owned(),
                });
            };
            let summary = listing.finish(&mut secrets, &mut hidden).map_err(|bad| {
                InfisicalError::BadSecret {
                    endpoint: endpoint.clone(),
                    key: bad.key,
                    why: bad.why.describe(),
                }
            })?;
            summaries.push(summary);
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
            let authorization = super::bearer(token.secret())?;
            let stream = Mutex::new(ListingStream::new(path));
            let reply = self
                .with_retry(deadline, |bound| {
                    let mut request = self
                        .http
                        .get(&url)
                        .query(&query)
                        .header(reqwest::header::AUTHORIZATION, authorization.clone());
                    if let Some(etag) = etag {
                        request = request.header(reqwest::header::IF_NONE_MATCH, etag);
                    }
                    self.send_to(request, &endpoint, bound, &scrub, Some(&stream))
                })
                .await?;
            match reply.status {
                200 => {
                    let listing = stream
                        .into_inner()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .end()
                        .map_err(|e| super::json_error(&endpoint, &e))?;
                    let etag = reply
                        .headers
                        .get(reqwest::header::ETAG)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    return Ok(Listed::Body {
                        endpoint,
                        listing,
                        etag,
                    });
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
