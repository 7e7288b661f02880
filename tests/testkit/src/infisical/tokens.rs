//! Identity access tokens: HS256 JWTs signed with the server's secret, with a
//! server-side record (TTL, max TTL, uses, revocation). Two lifecycles: the
//! current one (§3.3: `exp` = the real lifetime, renew mints a new string
//! bounded by the max-TTL budget) and the legacy one (§3.4, §9: `exp` = issue +
//! max TTL, TTL enforced server-side, renew returns the same string).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

use super::error::ApiError;
use super::{Identity, Inner, State};

/// The server's `MAX_MACHINE_IDENTITY_TOKEN_AGE` ceiling (90 days).
const CEILING_SECS: u64 = 7_776_000;

/// What the server remembers about one issued token.
#[derive(Debug, Clone)]
pub(crate) struct TokenRecord {
    pub(crate) identity_id: String,
    auth_method: &'static str,
    created_ms: u64,
    last_renewed_ms: u64,
    ttl: u64,
    max_ttl: u64,
    uses_limit: u64,
    uses: u64,
    pub(crate) revoked: bool,
    legacy: bool,
    version: u64,
    /// The string handed out last (legacy renew returns it again).
    current: String,
}

impl TokenRecord {
    /// The string handed out last.
    pub(crate) fn current(&self) -> String {
        self.current.clone()
    }
}

pub(crate) fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
    )
    .expect("millis fit u64")
}

fn random_id() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]),
        u16::from_be_bytes([b[8], b[9]]),
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

fn sign(state: &State, id: &str, rec: &TokenRecord, iat: u64, exp: Option<u64>) -> String {
    let mut claims = json!({
        "identityId": rec.identity_id,
        "identityName": rec.identity_id,
        "orgId": "testkit-org",
        "rootOrgId": "testkit-org",
        "parentOrgId": "testkit-org",
        "identityAuth": {},
        "identityAccessTokenId": id,
        "jti": id,
        "authMethod": rec.auth_method,
        "authTokenType": "identityAccessToken",
        "accessTokenTTL": rec.ttl,
        "accessTokenMaxTTL": rec.max_ttl,
        "accessTokenPeriod": 0,
        "creationEpoch": rec.created_ms / 1000,
        "ipRestrictionEnabled": false,
        // Makes each renewal's string distinct even within one second.
        "tokenVersion": rec.version,
        "iat": iat,
    });
    if rec.uses_limit > 0 {
        claims["numUsesLimit"] = json!(rec.uses_limit);
    }
    if let Some(exp) = exp {
        claims["exp"] = json!(exp);
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&state.token_secret),
    )
    .expect("sign access token")
}

/// The lifetime the current design gives a token now: min(TTL, max-TTL budget, ceiling).
fn current_lifetime(rec: &TokenRecord, now_s: u64) -> Option<u64> {
    let ttl = if rec.ttl == 0 {
        CEILING_SECS
    } else {
        rec.ttl.min(CEILING_SECS)
    };
    if rec.max_ttl == 0 {
        return Some(ttl);
    }
    let end = rec.created_ms / 1000 + rec.max_ttl;
    let budget = end.saturating_sub(now_s);
    (budget > 0).then_some(ttl.min(budget))
}

/// Issues a token after a successful login; returns the login response body.
pub(crate) fn issue(
    state: &State,
    inner: &mut Inner,
    identity: &Identity,
    method: &'static str,
) -> Value {
    let now = state.now_ms();
    let iat = now / 1000;
    let id = random_id();
    let legacy = state.legacy();
    let mut rec = TokenRecord {
        identity_id: identity.id.clone(),
        auth_method: method,
        created_ms: now,
        last_renewed_ms: now,
        ttl: identity.access_token_ttl,
        max_ttl: identity.access_token_max_ttl,
        uses_limit: identity.access_token_num_uses_limit,
        uses: 0,
        revoked: false,
        legacy,
        version: 0,
        current: String::new(),
    };
    let exp = if legacy {
        (rec.max_ttl > 0).then_some(iat + rec.max_ttl)
    } else {
        Some(iat + current_lifetime(&rec, iat).unwrap_or(0))
    };
    let token = sign(state, &id, &rec, iat, exp);
    rec.current.clone_from(&token);
    inner.tokens.insert(id, rec);
    inner.counters.logins += 1;
    json!({
        "accessToken": token,
        "expiresIn": identity.access_token_ttl,
        "accessTokenMaxTTL": identity.access_token_max_ttl,
        "tokenType": "Bearer",
    })
}

/// Verifies signature and `exp` (zero leeway) of an access token; returns its id.
fn verify(state: &State, token: &str) -> Result<String, ApiError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(&state.token_secret),
        &validation,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => ApiError::token_error("invalid signature"),
        ErrorKind::InvalidAlgorithm => ApiError::token_error("invalid algorithm"),
        _ => {
            ApiError::token_error("The provided access token is malformed. Please re-authenticate.")
        }
    })?;
    if let Some(exp) = data.claims.get("exp").and_then(Value::as_u64) {
        if state.now_ms() / 1000 >= exp {
            return Err(ApiError::token_error(
                "Your token has expired. Please re-authenticate.",
            ));
        }
    }
    data.claims
        .get("identityAccessTokenId")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::token_error("The provided access token is malformed. Please re-authenticate.")
        })
}

fn ttl_over(rec: &TokenRecord, now: u64) -> bool {
    rec.ttl > 0 && now > rec.last_renewed_ms + rec.ttl * 1000
}

/// Authenticates a Bearer token on an ordinary request, counting one use.
/// Returns the identity ID.
pub(crate) fn authenticate(
    state: &State,
    inner: &mut Inner,
    token: &str,
) -> Result<String, ApiError> {
    let id = verify(state, token)?;
    let now = state.now_ms();
    let Some(rec) = inner.tokens.get_mut(&id) else {
        return Err(ApiError::unauthorized(
            "Failed to authorize: token not found",
        ));
    };
    if rec.revoked {
        return Err(ApiError::unauthorized(
            "Failed to authorize: token has been revoked",
        ));
    }
    if rec.legacy {
        // The old server ran its renew checks on every request, messages included.
        if rec.uses_limit > 0 && rec.uses >= rec.uses_limit {
            inner.tokens.remove(&id);
            return Err(ApiError::unauthorized(
                "Unable to renew because access token number of uses limit reached",
            ));
        }
        if ttl_over(rec, now) {
            inner.tokens.remove(&id);
            return Err(ApiError::unauthorized(
                "Failed to renew MI access token due to TTL expiration",
            ));
        }
    }
    if rec.uses_limit > 0 && rec.uses >= rec.uses_limit {
        return Err(ApiError::unauthorized(
            "Failed to authorize: token usage limit reached",
        ));
    }
    rec.uses += 1;
    Ok(rec.identity_id.clone())
}

/// `POST /api/v1/auth/token/renew`.
pub(crate) fn renew(state: &State, inner: &mut Inner, token: &str) -> Result<Value, ApiError> {
    let id = verify(state, token)?;
    let now = state.now_ms();
    let Some(rec) = inner.tokens.get_mut(&id) else {
        return Err(ApiError::unauthorized(
            "Failed to authorize: token not found",
        ));
    };
    if rec.revoked {
        return Err(ApiError::unauthorized(
            "Cannot renew: token has been revoked",
        ));
    }
    if rec.uses_limit > 0 && rec.uses >= rec.uses_limit {
        return Err(ApiError::unauthorized(
            "Unable to renew because access token number of uses limit reached",
        ));
    }
    let body = if rec.legacy {
        if ttl_over(rec, now) {
            inner.tokens.remove(&id);
            return Err(ApiError::unauthorized(
                "Failed to renew MI access token due to TTL expiration",
            ));
        }
        let max_end = rec.created_ms + rec.max_ttl * 1000;
        if rec.max_ttl > 0 && now > max_end {
            inner.tokens.remove(&id);
            return Err(ApiError::unauthorized(
                "Failed to renew MI access token due to Max TTL expiration",
            ));
        }
        if rec.max_ttl > 0 && now + rec.ttl * 1000 > max_end {
            inner.tokens.remove(&id);
            return Err(ApiError::unauthorized(
                "Failed to renew MI access token past its Max TTL expiration",
            ));
        }
        rec.last_renewed_ms = now;
        json!({
            "accessToken": rec.current,
            "expiresIn": rec.ttl,
            "accessTokenMaxTTL": rec.max_ttl,
            "tokenType": "Bearer",
        })
    } else {
        let iat = now / 1000;
        let Some(lifetime) = current_lifetime(rec, iat) else {
            return Err(ApiError::unauthorized(
                "Cannot renew: identity access token has reached its max TTL",
            ));
        };
        rec.version += 1;
        rec.last_renewed_ms = now;
        let rec_snapshot = rec.clone();
        let fresh = sign(state, &id, &rec_snapshot, iat, Some(iat + lifetime));
        rec.current.clone_from(&fresh);
        json!({
            "accessToken": fresh,
            "expiresIn": lifetime,
            "accessTokenMaxTTL": rec.max_ttl,
            "tokenType": "Bearer",
        })
    };
    inner.counters.renewals += 1;
    Ok(body)
}

/// `POST /api/v1/auth/token/revoke`.
pub(crate) fn revoke(state: &State, inner: &mut Inner, token: &str) -> Result<(), ApiError> {
    let id = verify(state, token)?;
    let Some(rec) = inner.tokens.get_mut(&id) else {
        return Err(ApiError::unauthorized(
            "Failed to authorize: token not found",
        ));
    };
    if rec.revoked {
        return Err(ApiError::unauthorized(
            "Failed to authorize: token has been revoked",
        ));
    }
    rec.revoked = true;
    inner.counters.revocations += 1;
    Ok(())
}
