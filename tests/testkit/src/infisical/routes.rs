//! The HTTP surface: routes, parameter parsing (v4 `camelCase` vs v3
//! `snake_case`), Bearer authentication and the project read permission.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{header, HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::{self, LoginKind};
use super::error::ApiError;
use super::secrets::ListQuery;
use super::{faults, tokens, State};

type Shared = AxState<Arc<State>>;

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/api/status", get(status))
        .route("/api/v1/auth/oidc-auth/login", post(login_oidc))
        .route("/api/v1/auth/jwt-auth/login", post(login_jwt))
        .route("/api/v1/auth/spiffe-auth/login", post(login_spiffe))
        .route("/api/v1/auth/token/renew", post(renew))
        .route("/api/v1/auth/token/revoke", post(revoke))
        .route("/api/v1/projects/slug/{slug}", get(project_by_slug))
        .route("/api/v1/projects/{id}", get(project_by_id))
        .route("/api/v4/secrets", get(list_v4))
        .route("/api/v3/secrets/raw", get(list_v3))
        .fallback(no_route)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            faults::layer,
        ))
        .with_state(state)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::no_route(method.as_str(), &uri.to_string())
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or(value);
    Some(token.trim().to_string())
}

/// Authenticates the request's Bearer token (one use); returns the identity ID.
fn authenticate(state: &State, headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::unauthorized(
            "Failed to authenticate: missing authentication token",
        ));
    };
    let mut inner = state.lock();
    tokens::authenticate(state, &mut inner, &token)
}

/// Login, renew and revoke refuse any `Authorization` header: the global hook
/// tries it as a token first and fails (observed on a real server, §9).
fn refuse_authorization(state: &State, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = bearer(headers) else {
        return Ok(());
    };
    let mut inner = state.lock();
    match tokens::authenticate(state, &mut inner, &token) {
        Err(e) => Err(ApiError::token_error(
            e.message
                .as_str()
                .unwrap_or("invalid algorithm")
                .to_string(),
        )),
        Ok(_) => Err(ApiError::token_error("invalid algorithm")),
    }
}

async fn status(AxState(state): Shared, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    if headers.contains_key(header::AUTHORIZATION) {
        authenticate(&state, &headers)?;
    }
    Ok(Json(json!({
        "date": super::secrets::iso_now_pub(),
        "message": "Ok",
        "emailConfigured": false,
        "inviteOnlySignup": false,
        "redisConfigured": true,
        "secretScanningConfigured": false,
        "samlDefaultOrgSlug": null,
    })))
}

async fn login(state: Arc<State>, kind: LoginKind, headers: &HeaderMap, body: &Bytes) -> Response {
    let result = async {
        refuse_authorization(&state, headers)?;
        let (identity_id, jwt) = auth::parse_login_body(body)?;
        auth::login(&state, kind, &identity_id, &jwt).await
    }
    .await;
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => {
            state.lock().counters.login_failures += 1;
            e.into_response()
        }
    }
}

async fn login_oidc(AxState(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    login(state, LoginKind::Oidc, &headers, &body).await
}
async fn login_jwt(AxState(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    login(state, LoginKind::Jwt, &headers, &body).await
}
async fn login_spiffe(AxState(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    login(state, LoginKind::Spiffe, &headers, &body).await
}

fn token_body(body: &Bytes) -> Result<String, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_request(
            "Body is not valid JSON but content-type is set to 'application/json'",
        )
    })?;
    match value.get("accessToken") {
        Some(Value::String(s)) => Ok(s.trim().to_string()),
        other => Err(ApiError::validation(vec![json!({
            "code": "invalid_type", "expected": "string",
            "received": if other.is_none() { "undefined" } else { "unknown" },
            "path": ["accessToken"], "message": "Required",
        })])),
    }
}

async fn renew(
    AxState(state): Shared,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    refuse_authorization(&state, &headers)?;
    let token = token_body(&body)?;
    let mut inner = state.lock();
    tokens::renew(&state, &mut inner, &token).map(Json)
}

async fn revoke(
    AxState(state): Shared,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    refuse_authorization(&state, &headers)?;
    let token = token_body(&body)?;
    let mut inner = state.lock();
    tokens::revoke(&state, &mut inner, &token)?;
    Ok(Json(
        json!({"message": "Successfully revoked access token"}),
    ))
}

fn check_read(state: &State, identity: &str, project_id: &str) -> Result<(), ApiError> {
    let inner = state.lock();
    if inner.store.project(project_id).is_none() {
        return Err(ApiError::not_found(format!(
            "Project with ID '{project_id}' not found"
        )));
    }
    if !inner
        .grants
        .contains(&(identity.to_string(), project_id.to_string()))
    {
        return Err(ApiError::permission_denied(
            "You are not allowed to perform this action on this resource",
        ));
    }
    Ok(())
}

async fn project_by_slug(
    AxState(state): Shared,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let identity = authenticate(&state, &headers)?;
    let id = state
        .lock()
        .store
        .project_by_slug(&slug)
        .map(|p| p.id.clone())
        .ok_or_else(|| ApiError::not_found(format!("Project with slug '{slug}' not found")))?;
    check_read(&state, &identity, &id)?;
    let inner = state.lock();
    Ok(Json(inner.store.project(&id).expect("project").to_json()))
}

async fn project_by_id(
    AxState(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let identity = authenticate(&state, &headers)?;
    check_read(&state, &identity, &id)?;
    let inner = state.lock();
    Ok(Json(
        json!({"project": inner.store.project(&id).expect("project").to_json()}),
    ))
}

/// A zod `booleanSchema`: "true"/"false" (or absent: the default).
fn flag(q: &HashMap<String, String>, name: &str, default: bool) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(ApiError::validation(vec![json!({
            "code": "invalid_enum_value", "options": ["true", "false"],
            "path": [name], "message": "Invalid enum value. Expected 'true' | 'false'",
        })])),
    }
}

fn list(
    state: &State,
    identity: &str,
    project_id: &str,
    query: &ListQuery,
) -> Result<Json<Value>, ApiError> {
    check_read(state, identity, project_id)?;
    let inner = state.lock();
    Ok(Json(
        inner
            .store
            .project(project_id)
            .expect("project")
            .list(query),
    ))
}

fn tag_slugs(q: &HashMap<String, String>) -> Vec<String> {
    q.get("tagSlugs")
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

async fn list_v4(
    AxState(state): Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    if state.v4_disabled.load(Ordering::SeqCst) {
        return Err(ApiError::no_route(method.as_str(), &uri.to_string()));
    }
    let identity = authenticate(&state, &headers)?;
    let (Some(project_id), Some(env)) = (q.get("projectId"), q.get("environment")) else {
        return Err(ApiError::bad_request("Missing project id or environment"));
    };
    // Current servers read camelCase; older v4 routers read snake_case.
    let include_imports = match q.get("includeImports") {
        Some(_) => flag(&q, "includeImports", true)?,
        None => flag(&q, "include_imports", true)?,
    };
    let query = ListQuery {
        env: env.clone(),
        path: q.get("secretPath").cloned().unwrap_or_else(|| "/".into()),
        recursive: flag(&q, "recursive", false)?,
        expand: flag(&q, "expandSecretReferences", false)?,
        include_imports,
        tag_slugs: tag_slugs(&q),
        view_value: flag(&q, "viewSecretValue", true)?,
    };
    list(&state, &identity, project_id, &query)
}

async fn list_v3(
    AxState(state): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let identity = authenticate(&state, &headers)?;
    let project_id = match (q.get("workspaceId"), q.get("workspaceSlug")) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(slug)) => state
            .lock()
            .store
            .project_by_slug(slug)
            .map(|p| p.id.clone()),
        (None, None) => None,
    };
    let (Some(project_id), Some(env)) = (project_id, q.get("environment")) else {
        return Err(ApiError::bad_request("Missing workspace id or environment"));
    };
    let query = ListQuery {
        env: env.clone(),
        path: q.get("secretPath").cloned().unwrap_or_else(|| "/".into()),
        recursive: flag(&q, "recursive", false)?,
        expand: flag(&q, "expandSecretReferences", false)?,
        // v3 reads only snake_case `include_imports`; camelCase is ignored (§4.1).
        include_imports: flag(&q, "include_imports", false)?,
        tag_slugs: tag_slugs(&q),
        view_value: flag(&q, "viewSecretValue", true)?,
    };
    list(&state, &identity, &project_id, &query)
}
