//! Secrets from the Infisical stand-in: v3 and v4 agree, imports come back
//! separately, references expand on request, tags filter, recursion labels
//! paths, unknown folders are an empty 200, `ETag`s give 304s.

use crate::support::*;
use serde_json::{json, Value};

fn keys(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["secretKey"].as_str().unwrap().to_string(),
                s["secretValue"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

const TRICKY: &str = "line one\nline two ünïcødé ✓ a=b=c \"quoted\" $HOME";

#[test]
fn v3_and_v4_return_the_same_secrets_with_full_objects() {
    let stack = stand_ins();
    let inf = &stack.infisical;
    inf.set_secret(PROJECT_ID, ENVIRONMENT, "/", "DB_PASSWORD", TRICKY);
    inf.set_secret(PROJECT_ID, ENVIRONMENT, "/", "API_KEY", "k");
    let token = stack.token();
    let v4 = stack
        .client()
        .v4(&token, "secretPath=/&includeImports=false");
    assert_eq!(v4.status, 200, "{}", v4.text);
    let v3 = stack.client().get(
        &format!(
            "/api/v3/secrets/raw?workspaceId={PROJECT_ID}&environment={ENVIRONMENT}&secretPath=/"
        ),
        Some(&token),
    );
    assert_eq!(v3.status, 200, "{}", v3.text);
    let (v4, v3) = (v4.json(), v3.json());
    assert_eq!(keys(&v4["secrets"]), keys(&v3["secrets"]));
    assert_eq!(
        keys(&v4["secrets"]),
        pairs(&[("API_KEY", "k"), ("DB_PASSWORD", TRICKY)])
    );
    let s = &v4["secrets"][1];
    for field in [
        "id",
        "_id",
        "workspace",
        "environment",
        "version",
        "type",
        "secretComment",
        "secretPath",
        "tags",
        "createdAt",
        "updatedAt",
        "secretValueHidden",
    ] {
        assert!(s.get(field).is_some(), "{field} missing: {s}");
    }
    assert_eq!(s["type"], "shared");
    assert_eq!(s["workspace"], PROJECT_ID);
    // Without imports the server answers `{secrets}` alone.
    assert!(v4.get("imports").is_none(), "{v4}");
}

#[test]
fn imports_are_returned_separately_in_position_order() {
    let stack = stand_ins();
    let inf = &stack.infisical;
    inf.set_secret(PROJECT_ID, ENVIRONMENT, "/app", "SHARED", "own");
    inf.set_secret(PROJECT_ID, ENVIRONMENT, "/common", "SHARED", "common");
    inf.set_secret(PROJECT_ID, ENVIRONMENT, "/common", "ONLY_COMMON", "c");
    inf.set_secret(PROJECT_ID, "staging", "/", "SHARED", "staging");
    inf.set_secret(PROJECT_ID, "staging", "/nested", "DEEP", "deep");
    inf.add_import(PROJECT_ID, ENVIRONMENT, "/app", ENVIRONMENT, "/common");
    inf.add_import(PROJECT_ID, ENVIRONMENT, "/app", "staging", "/");
    inf.add_import(PROJECT_ID, "staging", "/", "staging", "/nested");
    let token = stack.token();
    let v4 = stack
        .client()
        .v4(&token, "secretPath=/app&includeImports=true")
        .json();
    assert_eq!(keys(&v4["secrets"]), pairs(&[("SHARED", "own")]));
    let imports = v4["imports"].as_array().unwrap();
    assert_eq!(imports.len(), 2);
    assert_eq!(
        (
            imports[0]["environment"].as_str(),
            imports[0]["secretPath"].as_str()
        ),
        (Some(ENVIRONMENT), Some("/common"))
    );
    assert_eq!(
        keys(&imports[0]["secrets"]),
        pairs(&[("SHARED", "common"), ("ONLY_COMMON", "c")])
    );
    // Nested imports are flattened after the import's own secrets.
    assert_eq!(
        keys(&imports[1]["secrets"]),
        pairs(&[("SHARED", "staging"), ("DEEP", "deep")])
    );
    assert!(imports[1]["folderId"].is_string());

    // v4 includes imports by default; v3 only with snake_case include_imports.
    let default = stack.client().v4(&token, "secretPath=/app").json();
    assert_eq!(default["imports"].as_array().unwrap().len(), 2);
    let v3 = |flag: &str| {
        stack
            .client()
            .get(
                &format!("/api/v3/secrets/raw?workspaceId={PROJECT_ID}&environment={ENVIRONMENT}&secretPath=/app&{flag}"),
                Some(&token),
            )
            .json()
            .get("imports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    assert_eq!(v3("include_imports=true"), 2);
    // Recursive listing returns the imports of every folder in the subtree.
    let deep = stack
        .client()
        .v4(&token, "secretPath=/&recursive=true&includeImports=true")
        .json();
    assert_eq!(deep["imports"].as_array().unwrap().len(), 2);
    let root_only = stack
        .client()
        .v4(&token, "secretPath=/&includeImports=true")
        .json();
    assert_eq!(root_only["imports"], json!([]));
    assert_eq!(v3("includeImports=true"), 0, "camelCase is ignored on v3");
}

#[test]
fn references_expand_only_when_asked_and_unresolvable_ones_stay_literal() {
    let stack = stand_ins();
    let inf = &stack.infisical;
    inf.set_secret(PROJECT_ID, ENVIRONMENT, "/", "HOST", "db.internal");
    inf.set_secret(PROJECT_ID, "staging", "/a/b", "PORT", "5432");
    inf.set_secret(
        PROJECT_ID,
        ENVIRONMENT,
        "/",
        "URL",
        "pg://${HOST}:${staging.a.b.PORT}/${NOPE}",
    );
    let token = stack.token();
    let raw = stack
        .client()
        .v4(&token, "expandSecretReferences=false")
        .json();
    let expanded = stack
        .client()
        .v4(&token, "expandSecretReferences=true")
        .json();
    let url = |v: &Value| {
        keys(&v["secrets"])
            .into_iter()
            .find(|(k, _)| k == "URL")
            .unwrap()
            .1
    };
    assert_eq!(url(&raw), "pg://${HOST}:${staging.a.b.PORT}/${NOPE}");
    assert_eq!(url(&expanded), "pg://db.internal:5432/${NOPE}");
}

#[test]
fn tags_filter_and_recursion_labels_each_secret_with_its_path() {
    let stack = stand_ins();
    let inf = &stack.infisical;
    inf.set_secret_tagged(PROJECT_ID, ENVIRONMENT, "/", "A", "a", &["backend"]);
    inf.set_secret_tagged(PROJECT_ID, ENVIRONMENT, "/", "B", "b", &["frontend"]);
    inf.set_secret(PROJECT_ID, ENVIRONMENT, "/svc/api", "C", "c");
    let token = stack.token();
    let tagged = stack.client().v4(&token, "tagSlugs=backend").json();
    assert_eq!(keys(&tagged["secrets"]), pairs(&[("A", "a")]));
    assert_eq!(tagged["secrets"][0]["tags"][0]["slug"], "backend");
    let flat = stack.client().v4(&token, "recursive=false").json();
    assert_eq!(flat["secrets"].as_array().unwrap().len(), 2);
    let deep = stack.client().v4(&token, "recursive=true").json();
    let paths: Vec<(&str, &str)> = deep["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["secretKey"].as_str().unwrap(),
                s["secretPath"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(paths, vec![("A", "/"), ("B", "/"), ("C", "/svc/api")]);
    let sub = stack
        .client()
        .v4(&token, "secretPath=/svc/&recursive=true")
        .json();
    assert_eq!(keys(&sub["secrets"]), pairs(&[("C", "c")]));
}

#[test]
fn unknown_folders_and_environments_answer_200_with_nothing() {
    let stack = stand_ins();
    stack
        .infisical
        .set_secret(PROJECT_ID, ENVIRONMENT, "/", "A", "a");
    let token = stack.token();
    let r = stack.client().v4(&token, "secretPath=/does/not/exist");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"secrets": [], "imports": []}));
    let r = stack.client().get(
        &format!("/api/v4/secrets?projectId={PROJECT_ID}&environment=nope"),
        Some(&token),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["secrets"], json!([]));
}

#[test]
fn permissions_projects_by_slug_and_the_old_server_switch() {
    let stack = stand_ins();
    let inf = &stack.infisical;
    inf.add_project("proj-2", "secret-project");
    inf.set_secret("proj-2", ENVIRONMENT, "/", "X", "x");
    let token = stack.token();
    stack
        .client()
        .get(
            &format!("/api/v4/secrets?projectId=proj-2&environment={ENVIRONMENT}"),
            Some(&token),
        )
        .error(403, "PermissionDenied");
    stack
        .client()
        .get(
            &format!("/api/v4/secrets?projectId=nope&environment={ENVIRONMENT}"),
            Some(&token),
        )
        .error(404, "NotFound");
    stack
        .client()
        .get(
            &format!("/api/v4/secrets?environment={ENVIRONMENT}"),
            Some(&token),
        )
        .error(400, "BadRequest");
    let project = stack.client().get(
        &format!("/api/v1/projects/slug/{PROJECT_SLUG}"),
        Some(&token),
    );
    assert_eq!(project.status, 200, "{}", project.text);
    let project = project.json();
    assert_eq!(project["id"], PROJECT_ID);
    assert_eq!(project["environments"][0]["slug"], ENVIRONMENT);
    stack
        .client()
        .get("/api/v1/projects/slug/unknown", Some(&token))
        .error(404, "NotFound");

    inf.set_v4_disabled(true);
    let body = stack.client().v4(&token, "").error(404, "Not Found");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Route GET:/api/v4/secrets"),
        "{body}"
    );
    let v3 = stack.client().get(
        &format!("/api/v3/secrets/raw?workspaceSlug={PROJECT_SLUG}&environment={ENVIRONMENT}"),
        Some(&token),
    );
    assert_eq!(v3.status, 200, "{}", v3.text);
}

#[test]
fn an_unchanged_etag_gives_304_and_a_change_gives_a_new_etag() {
    let stack = stand_ins();
    let inf = &stack.infisical;
    inf.set_secret(PROJECT_ID, ENVIRONMENT, "/", "A", "1");
    let token = stack.token();
    let path = format!("/api/v4/secrets?projectId={PROJECT_ID}&environment={ENVIRONMENT}");
    let first = stack.client().get(&path, Some(&token));
    let etag = first.headers["etag"].to_str().unwrap().to_string();
    let again = stack.client().get_etag(&path, Some(&token), Some(&etag));
    assert_eq!(again.status, 304);
    assert!(again.text.is_empty());

    inf.set_secret(PROJECT_ID, ENVIRONMENT, "/", "A", "2");
    let changed = stack.client().get_etag(&path, Some(&token), Some(&etag));
    assert_eq!(changed.status, 200);
    assert_ne!(changed.headers["etag"].to_str().unwrap(), etag);
    assert_eq!(keys(&changed.json()["secrets"]), pairs(&[("A", "2")]));

    assert!(inf.delete_secret(PROJECT_ID, ENVIRONMENT, "/", "A"));
    assert_eq!(
        stack.client().get(&path, Some(&token)).json()["secrets"],
        json!([])
    );
    let statuses: Vec<u16> = inf
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v4/secrets")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![200, 304, 200, 200]);
}

#[test]
fn values_can_be_hidden_and_status_needs_no_auth() {
    let stack = stand_ins();
    stack
        .infisical
        .set_secret(PROJECT_ID, ENVIRONMENT, "/", "A", "1");
    let token = stack.token();
    let hidden = stack.client().v4(&token, "viewSecretValue=false").json();
    assert_eq!(hidden["secrets"][0]["secretValue"], "<hidden-by-infisical>");
    assert_eq!(hidden["secrets"][0]["secretValueHidden"], true);
    let status = stack.client().get("/api/status", None);
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["message"], "Ok");
}
