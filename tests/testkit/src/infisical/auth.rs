//! Machine-identity logins: body validation, identity lookup, key retrieval
//! (OIDC discovery + JWKS, a JWKS URL, static keys, a SPIFFE bundle), JWT
//! verification and the bound checks, in the order and with the status codes
//! of the real services (§1.3, §1.5, §9).

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{json, Value};

use super::error::ApiError;
use super::glob::{matches, split_list};
use super::tokens;
use super::{AuthMethod, JwtKeys, State};

/// Which login route was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginKind {
    Oidc,
    Jwt,
    Spiffe,
}

impl LoginKind {
    fn not_configured(self) -> ApiError {
        let name = match self {
            Self::Oidc => "OIDC",
            Self::Jwt => "JWT",
            Self::Spiffe => "SPIFFE",
        };
        ApiError::not_found(format!(
            "{name} auth method not found for identity, did you configure {name} auth?"
        ))
    }
    fn token_method(self) -> &'static str {
        match self {
            Self::Oidc => "oidc-auth",
            Self::Jwt => "jwt-auth",
            Self::Spiffe => "spiffe-auth",
        }
    }
}

fn type_name(v: Option<&Value>) -> &'static str {
    match v {
        None => "undefined",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

/// Parses `{identityId, jwt}` as zod would (strings, trimmed; unknown keys stripped).
pub(crate) fn parse_login_body(body: &[u8]) -> Result<(String, String), ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_request(
            "Body is not valid JSON but content-type is set to 'application/json'",
        )
    })?;
    if !value.is_object() {
        let got = type_name(Some(&value));
        return Err(ApiError::validation(vec![json!({
            "code": "invalid_type", "expected": "object", "received": got,
            "path": [], "message": format!("Expected object, received {got}"),
        })]));
    }
    let mut issues = Vec::new();
    let mut field = |name: &str| -> String {
        let v = value.get(name);
        if let Some(Value::String(s)) = v {
            return s.trim().to_string();
        }
        let got = type_name(v);
        let message = if v.is_none() {
            "Required".to_string()
        } else {
            format!("Expected string, received {got}")
        };
        issues.push(json!({
            "code": "invalid_type", "expected": "string", "received": got,
            "path": [name], "message": message,
        }));
        String::new()
    };
    let identity_id = field("identityId");
    let jwt = field("jwt");
    if issues.is_empty() {
        Ok((identity_id, jwt))
    } else {
        Err(ApiError::validation(issues))
    }
}

/// A login: verifies `jwt` for `identity_id` and issues an access token.
pub(crate) async fn login(
    state: &State,
    kind: LoginKind,
    identity_id: &str,
    jwt: &str,
) -> Result<Value, ApiError> {
    let identity = state
        .lock()
        .identities
        .get(identity_id)
        .cloned()
        .ok_or_else(|| kind.not_configured())?;
    match (&identity.auth, kind) {
        (AuthMethod::Oidc(cfg), LoginKind::Oidc) => {
            let key_source = oidc_keys(&cfg.oidc_discovery_url, cfg.ca_cert.as_deref()).await?;
            let claims = verify_jwt(jwt, &key_source)?;
            time_claims(&claims, state.now_ms())?;
            if claims.get("iss").and_then(Value::as_str) != Some(cfg.bound_issuer.as_str()) {
                return Err(ApiError::unauthorized(format!(
                    "Access denied: jwt issuer invalid. expected: {}",
                    cfg.bound_issuer
                )));
            }
            if state
                .array_aud_bug
                .load(std::sync::atomic::Ordering::SeqCst)
                && claims.get("aud").is_some_and(Value::is_array)
            {
                return Err(ApiError::internal());
            }
            bound_checks(
                "OIDC",
                &claims,
                &cfg.bound_subject,
                &cfg.bound_audiences,
                &cfg.bound_claims,
            )?;
        }
        (AuthMethod::Jwt(cfg), LoginKind::Jwt) => {
            let key_source = match &cfg.keys {
                JwtKeys::JwksUrl { url, ca_cert } => {
                    let client = outbound_client(ca_cert.as_deref())?;
                    let jwks = fetch_json(&client, url).await.map_err(|e| {
                        ApiError::unauthorized(format!(
                            "Access denied: Failed to fetch JWKS from {url}. {e}"
                        ))
                    })?;
                    KeySource::Jwks(jwks_keys(&jwks, false))
                }
                JwtKeys::Jwks(jwks) => {
                    KeySource::Static(jwks_keys(jwks, false).into_iter().map(|(_, k)| k).collect())
                }
                JwtKeys::PublicKeysPem(pems) => {
                    KeySource::Static(pems.iter().filter_map(|p| pem_key(p)).collect())
                }
            };
            let claims = verify_jwt(jwt, &key_source)?;
            time_claims(&claims, state.now_ms())?;
            if !cfg.bound_issuer.is_empty()
                && claims.get("iss").and_then(Value::as_str) != Some(cfg.bound_issuer.as_str())
            {
                return Err(ApiError::forbidden("Access denied: issuer mismatch"));
            }
            bound_checks(
                "JWT",
                &claims,
                &cfg.bound_subject,
                &cfg.bound_audiences,
                &cfg.bound_claims,
            )?;
        }
        (AuthMethod::Spiffe(cfg), LoginKind::Spiffe) => {
            spiffe_verify(jwt, cfg, state.now_ms())?;
        }
        _ => return Err(kind.not_configured()),
    }
    let mut inner = state.lock();
    Ok(tokens::issue(
        state,
        &mut inner,
        &identity,
        kind.token_method(),
    ))
}

/// Where verification keys come from.
enum KeySource {
    /// `(kid, key)` pairs from a JWKS: pick by `kid` (all when the header has none).
    Jwks(Vec<(Option<String>, DecodingKey)>),
    /// Try each key in turn.
    Static(Vec<DecodingKey>),
}

fn outbound_client(ca_cert: Option<&str>) -> Result<reqwest::Client, ApiError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    if let Some(pem) = ca_cert.filter(|p| !p.trim().is_empty()) {
        let cert = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|_| ApiError::bad_request("Invalid CA certificate"))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|_| ApiError::internal())
}

/// The whole cause chain, as a Node error message would carry it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn fetch_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = client.get(url).send().await.map_err(|e| chain(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "Request failed with status code {}",
            status.as_u16()
        ));
    }
    response.json::<Value>().await.map_err(|e| chain(&e))
}

async fn oidc_keys(discovery_url: &str, ca_cert: Option<&str>) -> Result<KeySource, ApiError> {
    let client = outbound_client(ca_cert)?;
    let doc_url = format!("{discovery_url}/.well-known/openid-configuration");
    let doc = fetch_json(&client, &doc_url).await.map_err(|e| {
        ApiError::unauthorized(format!(
            "Access denied: Failed to fetch OIDC discovery document from {discovery_url}. {e}"
        ))
    })?;
    let Some(jwks_uri) = doc.get("jwks_uri").and_then(Value::as_str) else {
        return Err(ApiError::unauthorized(
            "Access denied: OIDC discovery document does not contain jwks_uri",
        ));
    };
    let jwks = fetch_json(&client, jwks_uri).await.map_err(|e| {
        ApiError::unauthorized(format!(
            "Access denied: Failed to fetch JWKS from {jwks_uri}. {e}"
        ))
    })?;
    Ok(KeySource::Jwks(jwks_keys(&jwks, false)))
}

/// Usable keys of a JWKS. With `spiffe`, SPIRE's `use: "jwt-svid"` counts as
/// `sig` and X.509/WIT authorities are dropped (the fixed server's behaviour).
fn jwks_keys(jwks: &Value, spiffe: bool) -> Vec<(Option<String>, DecodingKey)> {
    let Some(keys) = jwks.get("keys").and_then(Value::as_array) else {
        return Vec::new();
    };
    keys.iter()
        .filter_map(|k| {
            let mut k = k.clone();
            if spiffe {
                match k.get("use").and_then(Value::as_str) {
                    None | Some("sig") => {}
                    Some("jwt-svid") => k["use"] = json!("sig"),
                    Some(_) => return None,
                }
            }
            let jwk: Jwk = serde_json::from_value(k).ok()?;
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                return None;
            }
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some((jwk.common.key_id.clone(), key))
        })
        .collect()
}

fn pem_key(pem: &str) -> Option<DecodingKey> {
    DecodingKey::from_ec_pem(pem.as_bytes())
        .or_else(|_| DecodingKey::from_rsa_pem(pem.as_bytes()))
        .ok()
}

fn decode_header(jwt: &str) -> Result<Header, ApiError> {
    jsonwebtoken::decode_header(jwt).map_err(|_| ApiError::unauthorized("Invalid JWT"))
}

/// Only a signature check: claims are checked afterwards with the real messages.
fn signature_validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v
}

fn jwt_message(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "invalid signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "invalid algorithm",
        _ => "jwt malformed",
    }
}

fn verify_jwt(jwt: &str, source: &KeySource) -> Result<Value, ApiError> {
    let header = decode_header(jwt)?;
    if !matches!(
        header.alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
    ) {
        return Err(ApiError::unauthorized("Access denied: invalid algorithm"));
    }
    let candidates: Vec<&DecodingKey> = match source {
        KeySource::Jwks(keys) => {
            if let Some(kid) = &header.kid {
                let found: Vec<&DecodingKey> = keys
                    .iter()
                    .filter(|(k, _)| k.as_deref() == Some(kid.as_str()))
                    .map(|(_, key)| key)
                    .collect();
                if found.is_empty() {
                    return Err(ApiError::unauthorized(format!(
                        "Access denied: Unable to find a signing key that matches '{kid}'"
                    )));
                }
                found
            } else {
                if keys.len() > 10 {
                    return Err(ApiError::unauthorized(
                        "Tokens must include 'kid' header when provider has more than 10 keys",
                    ));
                }
                keys.iter().map(|(_, key)| key).collect()
            }
        }
        KeySource::Static(keys) => keys.iter().collect(),
    };
    let validation = signature_validation(header.alg);
    let mut last = "invalid signature";
    for key in candidates {
        match jsonwebtoken::decode::<Value>(jwt, key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => last = jwt_message(e.kind()),
        }
    }
    Err(ApiError::unauthorized(format!("Access denied: {last}")))
}

/// `nbf` and `exp`, checked only when present, with zero tolerance (jsonwebtoken defaults).
fn time_claims(claims: &Value, now_ms: u64) -> Result<(), ApiError> {
    let now = now_ms / 1000;
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_u64) {
        if nbf > now {
            return Err(ApiError::unauthorized("Access denied: jwt not active"));
        }
    }
    if let Some(exp) = claims.get("exp").and_then(Value::as_u64) {
        if now >= exp {
            return Err(ApiError::unauthorized("Access denied: jwt expired"));
        }
    }
    Ok(())
}

/// `aud` as a list (a string is one element).
fn audiences(claims: &Value) -> Vec<&str> {
    match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn by_dot<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn claim_allowed(value: &Value, policy: &str) -> bool {
    let patterns = split_list(policy);
    patterns.iter().any(|p| match value {
        Value::Bool(b) => *b == (*p == "true"),
        Value::Number(n) => p.parse::<i64>().is_ok_and(|want| n.as_i64() == Some(want)),
        Value::Array(items) => items.iter().any(|item| match item {
            Value::String(s) => matches(p, s),
            _ => false,
        }),
        Value::String(s) => matches(p, s),
        _ => false,
    })
}

/// `boundSubject` (403), `boundAudiences` and `boundClaims` (401), in the service's order.
fn bound_checks(
    name: &str,
    claims: &Value,
    subject: &str,
    audience_list: &str,
    bound_claims: &std::collections::BTreeMap<String, String>,
) -> Result<(), ApiError> {
    if !subject.is_empty() {
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        if sub.is_empty() || !matches(subject, sub) {
            return Err(ApiError::forbidden(format!(
                "Access denied: {name} subject not allowed."
            )));
        }
    }
    if !audience_list.is_empty() {
        let auds = audiences(claims);
        let patterns = split_list(audience_list);
        if !patterns.iter().any(|p| auds.iter().any(|a| matches(p, a))) {
            return Err(ApiError::unauthorized(format!(
                "Access denied: {name} audience not allowed."
            )));
        }
    }
    for (key, policy) in bound_claims {
        let Some(value) = by_dot(claims, key).filter(|v| truthy(v)) else {
            return Err(ApiError::unauthorized(format!(
                "Access denied: token has no {key} field"
            )));
        };
        if !claim_allowed(value, policy) {
            return Err(ApiError::unauthorized(format!(
                "Access denied: {name} claim not allowed."
            )));
        }
    }
    Ok(())
}

/// SPIFFE Auth: jose-style verification against the static bundle (no `iss`
/// check), then trust domain and allowed SPIFFE IDs.
fn spiffe_verify(jwt: &str, cfg: &super::SpiffeAuth, now_ms: u64) -> Result<(), ApiError> {
    let header = decode_header(jwt)?;
    if !matches!(
        header.alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
    ) {
        return Err(ApiError::unauthorized(
            "Access denied: \"alg\" (Algorithm) Header Parameter value not allowed",
        ));
    }
    let keys = jwks_keys(&cfg.bundle, true);
    let candidates: Vec<&DecodingKey> = keys
        .iter()
        .filter(|(kid, _)| header.kid.is_none() || kid.as_deref() == header.kid.as_deref())
        .map(|(_, k)| k)
        .collect();
    if candidates.is_empty() {
        return Err(ApiError::unauthorized(
            "Access denied: no applicable key found in the JSON Web Key Set",
        ));
    }
    let validation = signature_validation(header.alg);
    let claims = candidates
        .iter()
        .find_map(|key| jsonwebtoken::decode::<Value>(jwt, key, &validation).ok())
        .map(|d| d.claims)
        .ok_or_else(|| ApiError::unauthorized("Access denied: signature verification failed"))?;
    let now = now_ms / 1000;
    if claims
        .get("exp")
        .and_then(Value::as_u64)
        .is_some_and(|exp| now >= exp)
    {
        return Err(ApiError::unauthorized(
            "Access denied: \"exp\" claim timestamp check failed",
        ));
    }
    if claims
        .get("nbf")
        .and_then(Value::as_u64)
        .is_some_and(|nbf| nbf > now)
    {
        return Err(ApiError::unauthorized(
            "Access denied: \"nbf\" claim timestamp check failed",
        ));
    }
    let auds = audiences(&claims);
    if auds.is_empty() {
        return Err(ApiError::unauthorized(
            "Access denied: missing required \"aud\" claim",
        ));
    }
    let allowed = split_list(&cfg.allowed_audiences);
    if !auds.iter().any(|a| allowed.contains(a)) {
        return Err(ApiError::unauthorized(
            "Access denied: unexpected \"aud\" claim value",
        ));
    }
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    let Some(rest) = sub.strip_prefix("spiffe://") else {
        return Err(ApiError::forbidden("Access denied: invalid SPIFFE ID."));
    };
    let trust_domain = rest.split('/').next().unwrap_or("");
    if trust_domain != cfg.trust_domain {
        return Err(ApiError::forbidden(
            "Access denied: SPIFFE ID trust domain mismatch.",
        ));
    }
    if !split_list(&cfg.allowed_spiffe_ids)
        .iter()
        .any(|p| matches(p, sub))
    {
        return Err(ApiError::forbidden("Access denied: SPIFFE ID not allowed."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyAlg, KeyRing};

    #[test]
    fn spiffe_bundles_keep_jwt_svid_keys_and_drop_x509_authorities() {
        let ring = KeyRing::new(KeyAlg::Es256);
        ring.rotate(KeyAlg::Rs256);
        let mut bundle = ring.jwks();
        bundle["keys"][0]["use"] = json!("jwt-svid");
        bundle["keys"][1]["use"] = json!("x509-svid");
        assert_eq!(jwks_keys(&bundle, true).len(), 1);
        assert_eq!(jwks_keys(&json!({"keys": "nope"}), true).len(), 0);
    }

    #[test]
    fn bound_claims_compare_booleans_numbers_arrays_and_globs() {
        assert!(claim_allowed(&json!(true), "true"));
        assert!(!claim_allowed(&json!(false), "true"));
        assert!(claim_allowed(&json!(42), "7, 42"));
        assert!(claim_allowed(&json!(["x", "team-a"]), "team-*"));
        assert!(!claim_allowed(&json!([1, 2]), "1"));
        assert!(claim_allowed(&json!("spiffe://td/a/b"), "spiffe://td/**"));
    }
}
