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
    let now = state.now_ms() / 1000;
    match (&identity.auth, kind) {
        (AuthMethod::Oidc(cfg), LoginKind::Oidc) => {
            let claims = oidc_verify(jwt, cfg, now).await?;
            if state
                .array_aud_bug
                .load(std::sync::atomic::Ordering::SeqCst)
                && claims.get("aud").is_some_and(Value::is_array)
            {
                return Err(ApiError::internal());
            }
            bound_checks(
                &OIDC_MESSAGES,
                &claims,
                &cfg.bound_subject,
                &cfg.bound_audiences,
                &cfg.bound_claims,
            )?;
        }
        (AuthMethod::Jwt(cfg), LoginKind::Jwt) => {
            let claims = jwt_auth_verify(jwt, &cfg.keys, now).await?;
            if !cfg.bound_issuer.is_empty()
                && claims.get("iss").and_then(Value::as_str) != Some(cfg.bound_issuer.as_str())
            {
                return Err(ApiError::forbidden("Access denied: issuer mismatch"));
            }
            bound_checks(
                &JWT_MESSAGES,
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

/// An outbound client like the server's: no redirects; with a CA, only that
/// CA is trusted; `dangerous_no_verify` imitates `rejectUnauthorized: false`.
fn outbound_client(
    ca_cert: Option<&str>,
    dangerous_no_verify: bool,
) -> Result<reqwest::Client, ApiError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    if let Some(pem) = ca_cert.filter(|p| !p.trim().is_empty()) {
        let cert = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|_| ApiError::bad_request("Invalid CA certificate"))?;
        builder = builder.add_root_certificate(cert);
    } else if dangerous_no_verify {
        builder = builder.danger_accept_invalid_certs(true);
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

/// How keys of a JWKS are selected.
#[derive(Clone, Copy)]
enum JwksMode {
    /// `jwks-rsa` (OIDC and JWT Auth): only keys with `use` absent or `sig`.
    JwksRsa,
    /// The SPIFFE service: `jwt-svid` counts as `sig`; X.509/WIT authorities dropped.
    Spiffe,
}

/// Usable `(kid, key)` pairs of a JWKS document.
fn jwks_keys(jwks: &Value, mode: JwksMode) -> Vec<(Option<String>, DecodingKey)> {
    let Some(keys) = jwks.get("keys").and_then(Value::as_array) else {
        return Vec::new();
    };
    keys.iter()
        .filter_map(|k| {
            let mut k = k.clone();
            match (k.get("use").and_then(Value::as_str), mode) {
                (None | Some("sig"), _) => {}
                (Some("jwt-svid"), JwksMode::Spiffe) => k["use"] = json!("sig"),
                _ => return None,
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

/// Asymmetric algorithms only: jsonwebtoken picks them from the key type, so
/// `HS*` and `none` never verify against a public key.
fn asymmetric(alg: Algorithm) -> bool {
    matches!(
        alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
    )
}

/// node-jsonwebtoken's `verify(jwt, key, {issuer?})`: signature, then `nbf`,
/// `exp` (only when present, zero tolerance), then `iss`. The error is its message.
fn node_verify(
    jwt: &str,
    header: &Header,
    key: &DecodingKey,
    issuer: Option<&str>,
    now: u64,
) -> Result<Value, String> {
    if !asymmetric(header.alg) {
        return Err("invalid algorithm".into());
    }
    let mut v = Validation::new(header.alg);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(jwt, key, &v)
        .map_err(|e| {
            match e.kind() {
                ErrorKind::InvalidSignature => "invalid signature",
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    "invalid algorithm"
                }
                _ => "jwt malformed",
            }
            .to_string()
        })?
        .claims;
    if claims
        .get("nbf")
        .and_then(Value::as_u64)
        .is_some_and(|nbf| nbf > now)
    {
        return Err("jwt not active".into());
    }
    if claims
        .get("exp")
        .and_then(Value::as_u64)
        .is_some_and(|exp| now >= exp)
    {
        return Err("jwt expired".into());
    }
    if let Some(issuer) = issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
            return Err(format!("jwt issuer invalid. expected: {issuer}"));
        }
    }
    Ok(claims)
}

/// OIDC Auth (§1.3): discovery, JWKS, key by `kid` (or each key), verify with `issuer`.
async fn oidc_verify(jwt: &str, cfg: &super::OidcAuth, now: u64) -> Result<Value, ApiError> {
    let client = outbound_client(cfg.ca_cert.as_deref(), false)?;
    let url = &cfg.oidc_discovery_url;
    let doc = fetch_json(&client, &format!("{url}/.well-known/openid-configuration"))
        .await
        .map_err(|e| {
            ApiError::unauthorized(format!(
                "Access denied: Failed to fetch OIDC discovery document from {url}. {e}"
            ))
        })?;
    let Some(jwks_uri) = doc.get("jwks_uri").and_then(Value::as_str) else {
        return Err(ApiError::unauthorized(
            "Access denied: OIDC discovery document does not contain a jwks_uri. The identity provider may be misconfigured.",
        ));
    };
    let header =
        jsonwebtoken::decode_header(jwt).map_err(|_| ApiError::unauthorized("Invalid JWT"))?;
    let issuer = Some(cfg.bound_issuer.as_str());
    let jwks = fetch_json(&client, jwks_uri).await;
    if let Some(kid) = &header.kid {
        let jwks = jwks.map_err(|e| {
            ApiError::unauthorized(format!(
                "Access denied: Failed to retrieve signing key from OIDC provider: {e}"
            ))
        })?;
        let keys = jwks_keys(&jwks, JwksMode::JwksRsa);
        let Some((_, key)) = keys
            .iter()
            .find(|(k, _)| k.as_deref() == Some(kid.as_str()))
        else {
            return Err(ApiError::unauthorized(format!(
                "Access denied: Unable to verify JWT signature. The signing key '{kid}' was not found in the OIDC provider's JWKS endpoint. This may indicate an invalid token or misconfigured OIDC provider."
            )));
        };
        return node_verify(jwt, &header, key, issuer, now)
            .map_err(|m| ApiError::unauthorized(format!("Access denied: {m}")));
    }
    let jwks = jwks.map_err(|e| {
        ApiError::unauthorized(format!(
            "Access denied: Failed to retrieve signing keys from OIDC provider: {e}"
        ))
    })?;
    let keys = jwks_keys(&jwks, JwksMode::JwksRsa);
    if keys.is_empty() {
        return Err(ApiError::unauthorized(
            "Access denied: No signing keys available from OIDC provider's JWKS endpoint.",
        ));
    }
    if keys.len() > 10 {
        return Err(ApiError::unauthorized(format!(
            "Access denied: OIDC provider has {} signing keys. Tokens must include 'kid' header when provider has more than 10 keys.",
            keys.len()
        )));
    }
    let mut last = String::from("Invalid token");
    for (_, key) in &keys {
        match node_verify(jwt, &header, key, issuer, now) {
            Ok(claims) => return Ok(claims),
            Err(m) => last = m,
        }
    }
    Err(ApiError::unauthorized(format!(
        "Access denied: Unable to verify JWT signature with any available signing key. {last}"
    )))
}

/// JWT Auth: a JWKS URL through jwks-rsa (whose failures the service does not
/// wrap: 500), or static keys tried in turn.
async fn jwt_auth_verify(jwt: &str, keys: &JwtKeys, now: u64) -> Result<Value, ApiError> {
    let header =
        jsonwebtoken::decode_header(jwt).map_err(|_| ApiError::unauthorized("Invalid JWT"))?;
    let statics: Vec<DecodingKey> = match keys {
        JwtKeys::JwksUrl { url, ca_cert } => {
            // `rejectUnauthorized: !!jwksCaCert`: no CA configured = no TLS verification.
            let client = outbound_client(ca_cert.as_deref(), true)?;
            let jwks = fetch_json(&client, url)
                .await
                .map_err(|_| ApiError::internal())?;
            let keys = jwks_keys(&jwks, JwksMode::JwksRsa);
            let key = match &header.kid {
                Some(kid) => keys
                    .iter()
                    .find(|(k, _)| k.as_deref() == Some(kid.as_str())),
                None if keys.len() == 1 => keys.first(),
                None => None,
            };
            let Some((_, key)) = key else {
                return Err(ApiError::internal());
            };
            return node_verify(jwt, &header, key, None, now)
                .map_err(|m| ApiError::unauthorized(format!("Access denied: {m}")));
        }
        JwtKeys::Jwks(jwks) => jwks_keys(jwks, JwksMode::JwksRsa)
            .into_iter()
            .map(|(_, k)| k)
            .collect(),
        JwtKeys::PublicKeysPem(pems) => pems.iter().filter_map(|p| pem_key(p)).collect(),
    };
    let mut errors = Vec::new();
    for key in &statics {
        match node_verify(jwt, &header, key, None, now) {
            Ok(claims) => return Ok(claims),
            Err(m) => errors.push(m),
        }
    }
    Err(ApiError::unauthorized(format!(
        "Access denied: JWT verification failed with all keys. Errors - {}",
        errors.join("; ")
    )))
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

/// The refusal messages of one auth method's bound checks.
struct BoundMessages {
    no_subject: Option<&'static str>,
    subject: &'static str,
    no_audience: Option<&'static str>,
    audience: &'static str,
    claim: fn(&str) -> String,
}

const OIDC_MESSAGES: BoundMessages = BoundMessages {
    no_subject: None,
    subject: "Access denied: OIDC subject not allowed.",
    no_audience: None,
    audience: "Access denied: OIDC audience not allowed.",
    claim: |_| "Access denied: OIDC claim not allowed.".to_string(),
};

const JWT_MESSAGES: BoundMessages = BoundMessages {
    no_subject: Some("Access denied: token has no subject field"),
    subject: "Access denied: subject not allowed",
    no_audience: Some("Access denied: token has no audience field"),
    audience: "Access denied: token audience not allowed",
    claim: |key| format!("Access denied: claim mismatch for field {key}"),
};

/// `boundSubject` (403), `boundAudiences` and `boundClaims` (401), in the services' order.
fn bound_checks(
    messages: &BoundMessages,
    claims: &Value,
    subject: &str,
    audience_list: &str,
    bound_claims: &std::collections::BTreeMap<String, String>,
) -> Result<(), ApiError> {
    if !subject.is_empty() {
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        if sub.is_empty() {
            if let Some(message) = messages.no_subject {
                return Err(ApiError::unauthorized(message));
            }
        }
        if sub.is_empty() || !matches(subject, sub) {
            return Err(ApiError::forbidden(messages.subject));
        }
    }
    if !audience_list.is_empty() {
        let auds = audiences(claims);
        if auds.is_empty() {
            if let Some(message) = messages.no_audience {
                return Err(ApiError::unauthorized(message));
            }
        }
        let patterns = split_list(audience_list);
        if !patterns.iter().any(|p| auds.iter().any(|a| matches(p, a))) {
            return Err(ApiError::unauthorized(messages.audience));
        }
    }
    for (key, policy) in bound_claims {
        let Some(value) = by_dot(claims, key).filter(|v| truthy(v)) else {
            return Err(ApiError::unauthorized(format!(
                "Access denied: token has no {key} field"
            )));
        };
        if !claim_allowed(value, policy) {
            return Err(ApiError::unauthorized((messages.claim)(key)));
        }
    }
    Ok(())
}

/// SPIFFE Auth: jose `jwtVerify` against the static bundle (no `iss` check),
/// then trust domain and allowed SPIFFE IDs. Every refusal is 401, with the
/// service's messages.
fn spiffe_verify(jwt: &str, cfg: &super::SpiffeAuth, now_ms: u64) -> Result<(), ApiError> {
    let failed = || ApiError::unauthorized("JWT-SVID verification failed");
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| failed())?;
    if !asymmetric(header.alg) {
        return Err(failed());
    }
    let keys = jwks_keys(&cfg.bundle, JwksMode::Spiffe);
    let candidates: Vec<&DecodingKey> = keys
        .iter()
        .filter(|(kid, _)| header.kid.is_none() || kid.as_deref() == header.kid.as_deref())
        .map(|(_, k)| k)
        .collect();
    if candidates.is_empty() {
        // jose: "no applicable key found in the JSON Web Key Set".
        return Err(failed());
    }
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = candidates
        .iter()
        .find_map(|key| jsonwebtoken::decode::<Value>(jwt, key, &validation).ok())
        .map(|d| d.claims)
        .ok_or_else(|| ApiError::unauthorized("JWT-SVID signature verification failed"))?;
    let now = now_ms / 1000;
    if claims
        .get("exp")
        .and_then(Value::as_u64)
        .is_some_and(|exp| now >= exp)
    {
        return Err(ApiError::unauthorized("JWT-SVID has expired"));
    }
    // jose reports nbf and aud failures alike (JWTClaimValidationFailed).
    let claim_failed = || ApiError::unauthorized("JWT-SVID audience validation failed");
    if claims
        .get("nbf")
        .and_then(Value::as_u64)
        .is_some_and(|nbf| nbf > now)
    {
        return Err(claim_failed());
    }
    let allowed = split_list(&cfg.allowed_audiences);
    if !audiences(&claims).iter().any(|a| allowed.contains(a)) {
        return Err(claim_failed());
    }
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    let trust_domain = sub
        .strip_prefix("spiffe://")
        .map(|rest| rest.split('/').next().unwrap_or(""));
    let allowed_id = split_list(&cfg.allowed_spiffe_ids)
        .iter()
        .any(|p| matches(p, sub));
    if trust_domain != Some(cfg.trust_domain.as_str()) || !allowed_id {
        return Err(ApiError::unauthorized("Access denied"));
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
        assert_eq!(jwks_keys(&bundle, JwksMode::Spiffe).len(), 1);
        // jwks-rsa (OIDC, JWT Auth) ignores `jwt-svid` keys.
        assert_eq!(jwks_keys(&bundle, JwksMode::JwksRsa).len(), 0);
        assert_eq!(
            jwks_keys(&json!({"keys": "nope"}), JwksMode::Spiffe).len(),
            0
        );
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
