//! Projects, environments, folders, secrets, tags and imports, and the list
//! answer of `/api/v4/secrets` and `/api/v3/secrets/raw` (§4.1): own secrets
//! and imports returned separately, references expanded on request, tag
//! filter, recursion, and an empty 200 for a folder or environment that does
//! not exist (§9).

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

use super::tokens::now_ms;

fn random_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let hex: String = b.iter().fold(String::new(), |mut s, x| {
        use std::fmt::Write as _;
        let _ = write!(s, "{x:02x}");
        s
    });
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `2026-11-29T14:45:00.123Z` for the current time.
pub(crate) fn iso_now_pub() -> String {
    iso_now()
}

fn iso_now() -> String {
    let ms = now_ms();
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).expect("days");
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// `/a/b/` and `a/b` become `/a/b`; empty becomes `/`.
pub(crate) fn normalize_path(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

fn in_subtree(root: &str, path: &str) -> bool {
    root == "/" || path == root || path.starts_with(&format!("{root}/"))
}

#[derive(Debug, Clone)]
struct Secret {
    id: String,
    env: String,
    path: String,
    key: String,
    value: String,
    /// The identity may only describe this secret (`secretValueHidden`).
    value_hidden: bool,
    tags: Vec<String>,
    version: u64,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Clone)]
struct Import {
    env: String,
    path: String,
    from_env: String,
    from_path: String,
}

#[derive(Debug, Clone)]
struct Tag {
    id: String,
    slug: String,
}

/// One project.
#[derive(Debug, Clone)]
pub(crate) struct Project {
    pub(crate) id: String,
    pub(crate) slug: String,
    envs: Vec<(String, String)>,
    folders: BTreeMap<(String, String), String>,
    secrets: Vec<Secret>,
    imports: Vec<Import>,
    tags: Vec<Tag>,
    created_at: String,
}

/// All projects, by ID.
#[derive(Debug, Default)]
pub(crate) struct Store {
    projects: BTreeMap<String, Project>,
}

/// What a list call asks for.
#[derive(Debug, Clone)]
#[allow(clippy::struct_excessive_bools, reason = "mirrors the query flags")]
pub(crate) struct ListQuery {
    pub(crate) env: String,
    pub(crate) path: String,
    pub(crate) recursive: bool,
    pub(crate) expand: bool,
    pub(crate) include_imports: bool,
    pub(crate) tag_slugs: Vec<String>,
    pub(crate) view_value: bool,
}

impl Store {
    pub(crate) fn add_project(&mut self, id: &str, slug: &str) {
        self.projects
            .entry(id.to_string())
            .or_insert_with(|| Project {
                id: id.to_string(),
                slug: slug.to_string(),
                envs: Vec::new(),
                folders: BTreeMap::new(),
                secrets: Vec::new(),
                imports: Vec::new(),
                tags: Vec::new(),
                created_at: iso_now(),
            });
    }

    /// The project; panics in the test's own thread if it was never added.
    pub(crate) fn project_mut(&mut self, id: &str) -> &mut Project {
        self.projects
            .get_mut(id)
            .unwrap_or_else(|| panic!("testkit: add_project({id:?}, …) first"))
    }

    pub(crate) fn project(&self, id: &str) -> Option<&Project> {
        self.projects.get(id)
    }

    pub(crate) fn project_by_slug(&self, slug: &str) -> Option<&Project> {
        self.projects.values().find(|p| p.slug == slug)
    }
}

impl Project {
    pub(crate) fn add_env(&mut self, env: &str) {
        if !self.envs.iter().any(|(slug, _)| slug == env) {
            self.envs.push((env.to_string(), random_uuid()));
            self.folders
                .insert((env.to_string(), "/".to_string()), random_uuid());
        }
    }

    pub(crate) fn add_folder(&mut self, env: &str, path: &str) {
        self.add_env(env);
        let path = normalize_path(path);
        let mut current = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            current = format!("{current}/{part}");
            self.folders
                .entry((env.to_string(), current.clone()))
                .or_insert_with(random_uuid);
        }
    }

    pub(crate) fn set_secret(
        &mut self,
        env: &str,
        path: &str,
        key: &str,
        value: &str,
        tags: &[&str],
    ) {
        self.add_folder(env, path);
        let path = normalize_path(path);
        for slug in tags {
            if !self.tags.iter().any(|t| t.slug == *slug) {
                self.tags.push(Tag {
                    id: random_uuid(),
                    slug: (*slug).to_string(),
                });
            }
        }
        let tags: Vec<String> = tags.iter().map(|t| (*t).to_string()).collect();
        let now = iso_now();
        if let Some(s) = self
            .secrets
            .iter_mut()
            .find(|s| s.env == env && s.path == path && s.key == key)
        {
            s.value = value.to_string();
            s.tags = tags;
            s.version += 1;
            s.updated_at = now;
        } else {
            self.secrets.push(Secret {
                id: random_uuid(),
                env: env.to_string(),
                path,
                key: key.to_string(),
                value: value.to_string(),
                value_hidden: false,
                tags,
                version: 1,
                created_at: now.clone(),
                updated_at: now,
            });
        }
    }

    /// Marks a secret's value hidden (a describe-only permission on it); `true` if it exists.
    pub(crate) fn hide_secret_value(&mut self, env: &str, path: &str, key: &str) -> bool {
        let path = normalize_path(path);
        self.secrets
            .iter_mut()
            .find(|s| s.env == env && s.path == path && s.key == key)
            .map(|s| s.value_hidden = true)
            .is_some()
    }

    pub(crate) fn delete_secret(&mut self, env: &str, path: &str, key: &str) -> bool {
        let path = normalize_path(path);
        let before = self.secrets.len();
        self.secrets
            .retain(|s| !(s.env == env && s.path == path && s.key == key));
        before != self.secrets.len()
    }

    pub(crate) fn add_import(&mut self, env: &str, path: &str, from_env: &str, from_path: &str) {
        self.add_folder(env, path);
        self.imports.push(Import {
            env: env.to_string(),
            path: normalize_path(path),
            from_env: from_env.to_string(),
            from_path: normalize_path(from_path),
        });
    }

    /// The unwrapped project object of `GET /api/v1/projects/slug/:slug`.
    pub(crate) fn to_json(&self) -> Value {
        let envs: Vec<Value> = self
            .envs
            .iter()
            .map(|(slug, id)| json!({"id": id, "name": slug, "slug": slug}))
            .collect();
        json!({
            "id": self.id, "_id": self.id, "name": self.slug, "slug": self.slug,
            "orgId": "testkit-org", "version": 3, "type": "secret-manager",
            "environments": envs, "createdAt": self.created_at, "updatedAt": self.created_at,
        })
    }

    fn find(&self, env: &str, path: &str, key: &str) -> Option<&Secret> {
        self.secrets
            .iter()
            .find(|s| s.env == env && s.path == path && s.key == key)
    }

    /// Expands `${KEY}` (same env and folder) and `${env.a.b.KEY}`; unresolvable
    /// references stay literal. At most 10 levels deep.
    fn expand(&self, value: &str, env: &str, path: &str, depth: u32) -> String {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}');
            let valid = end.is_some_and(|e| {
                e > 0
                    && after[..e]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            });
            let (Some(end), true) = (end, valid) else {
                out.push_str("${");
                rest = after;
                continue;
            };
            let reference = &after[..end];
            let literal = &rest[start..=(start + 2 + end)];
            let parts: Vec<&str> = reference.split('.').collect();
            let target = if parts.len() == 1 {
                Some((env.to_string(), path.to_string(), parts[0]))
            } else {
                let folder = format!("/{}", parts[1..parts.len() - 1].join("/"));
                Some((
                    parts[0].to_string(),
                    normalize_path(&folder),
                    parts[parts.len() - 1],
                ))
            };
            match target.and_then(|(e, p, k)| self.find(&e, &p, k)) {
                Some(s) if depth < 10 => {
                    out.push_str(&self.expand(&s.value, &s.env, &s.path, depth + 1));
                }
                _ => out.push_str(literal),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn secret_json(&self, s: &Secret, q: &ListQuery, full: bool) -> Value {
        let hidden = !q.view_value || s.value_hidden;
        let value = if hidden {
            "<hidden-by-infisical>".to_string()
        } else if q.expand {
            self.expand(&s.value, &s.env, &s.path, 0)
        } else {
            s.value.clone()
        };
        let mut v = json!({
            "id": s.id, "_id": s.id, "workspace": self.id, "environment": s.env,
            "version": s.version, "type": "shared", "secretKey": s.key,
            "secretValue": value, "secretValueHidden": hidden, "secretComment": "",
            "secretPath": s.path, "skipMultilineEncoding": false,
            "secretReminderNote": null, "secretReminderRepeatDays": null,
            "secretMetadata": [], "isRotatedSecret": false, "rotationId": null,
        });
        if full {
            let tags: Vec<Value> = s
                .tags
                .iter()
                .filter_map(|slug| self.tags.iter().find(|t| &t.slug == slug))
                .map(|t| json!({"id": t.id, "slug": t.slug, "name": t.slug, "color": null}))
                .collect();
            v["tags"] = json!(tags);
            v["createdAt"] = json!(s.created_at);
            v["updatedAt"] = json!(s.updated_at);
        }
        v
    }

    /// An import's secrets: the source folder's own, then its nested imports
    /// flattened (depth 10, cycles skipped); with expansion, first occurrence wins.
    fn import_secrets(
        &self,
        env: &str,
        path: &str,
        q: &ListQuery,
        depth: u32,
        seen: &mut HashSet<(String, String)>,
        out: &mut Vec<Value>,
    ) {
        if depth > 10 || !seen.insert((env.to_string(), path.to_string())) {
            return;
        }
        for s in self
            .secrets
            .iter()
            .filter(|s| s.env == env && s.path == path)
        {
            if q.expand && out.iter().any(|v| v["secretKey"] == s.key.as_str()) {
                continue;
            }
            out.push(self.secret_json(s, q, false));
        }
        for imp in self
            .imports
            .iter()
            .filter(|i| i.env == env && i.path == path)
        {
            self.import_secrets(&imp.from_env, &imp.from_path, q, depth + 1, seen, out);
        }
    }

    /// The `{secrets, imports}` answer.
    pub(crate) fn list(&self, q: &ListQuery) -> Value {
        let path = normalize_path(&q.path);
        if !self.folders.contains_key(&(q.env.clone(), path.clone())) {
            return json!({"secrets": [], "imports": []});
        }
        let mut own: Vec<&Secret> = self
            .secrets
            .iter()
            .filter(|s| s.env == q.env)
            .filter(|s| {
                if q.recursive {
                    in_subtree(&path, &s.path)
                } else {
                    s.path == path
                }
            })
            .filter(|s| q.tag_slugs.is_empty() || s.tags.iter().any(|t| q.tag_slugs.contains(t)))
            .collect();
        own.sort_by(|a, b| (&a.path, &a.key).cmp(&(&b.path, &b.key)));
        let secrets: Vec<Value> = own.iter().map(|s| self.secret_json(s, q, true)).collect();
        if !q.include_imports {
            // The service answers `{ secrets }` alone: no `imports` key at all.
            return json!({ "secrets": secrets });
        }
        // Imports of every folder listed (the whole subtree when recursive).
        let listed = |i: &&Import| {
            i.env == q.env
                && if q.recursive {
                    in_subtree(&path, &i.path)
                } else {
                    i.path == path
                }
        };
        let mut imports = Vec::new();
        for imp in self.imports.iter().filter(listed) {
            let mut list = Vec::new();
            let mut seen = HashSet::new();
            seen.insert((q.env.clone(), imp.path.clone()));
            self.import_secrets(&imp.from_env, &imp.from_path, q, 0, &mut seen, &mut list);
            imports.push(json!({
                "secretPath": imp.from_path,
                "environment": imp.from_env,
                "folderId": self.folders.get(&(imp.from_env.clone(), imp.from_path.clone())),
                "secrets": list,
            }));
        }
        json!({"secrets": secrets, "imports": imports})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> Project {
        let mut store = Store::default();
        store.add_project("p", "p");
        store.project_mut("p").clone()
    }

    #[test]
    fn references_expand_across_folders_and_unresolvable_ones_stay_literal() {
        let mut p = project();
        p.set_secret("dev", "/", "HOST", "db", &[]);
        p.set_secret("prod", "/a/b", "PORT", "5432", &[]);
        p.set_secret(
            "dev",
            "/",
            "URL",
            "${HOST}:${prod.a.b.PORT}/${MISSING}${",
            &[],
        );
        let s = p.find("dev", "/", "URL").unwrap().clone();
        assert_eq!(p.expand(&s.value, "dev", "/", 0), "db:5432/${MISSING}${");
    }

    #[test]
    fn self_reference_stops_at_the_depth_limit() {
        let mut p = project();
        p.set_secret("dev", "/", "A", "x${A}", &[]);
        let out = p.expand("${A}", "dev", "/", 0);
        assert!(out.starts_with("xxxxxxxxxx"), "{out}");
        assert!(out.ends_with("${A}"), "{out}");
    }

    #[test]
    fn paths_normalise_like_the_server() {
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/a/b/"), "/a/b");
        assert_eq!(normalize_path("a"), "/a");
        assert!(iso_now().ends_with('Z'));
    }
}
