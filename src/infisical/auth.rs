//! Machine-identity login with a JWT (OIDC, JWT or SPIFFE Auth), token renewal
//! and revocation. None of these calls carries an `Authorization` header: a real
//! server answers 403 to a login that has one, and on renew/revoke it would
//! count a token use and could fail first (infisical-api.md §3.1, §9).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::error::{self, AuthMethod, Call, InfisicalError};
use super::secret_json;
use super::{json_body, parse_json, Client};
use crate::svid::{decode_payload, Jwt};

/// An Infisical access token with what is known about its lifetime.
pub struct AccessToken {
    token: SecretString,
    /// `expiresIn` of the last login/renew: the configured TTL; zero means unknown.
    pub expires_in: Duration,
    /// `accessTokenMaxTTL`: the budget from the first login; zero means none/unknown.
    pub max_ttl: Duration,
    /// The token's own `exp` when it is a decodable JWT (on older servers this is
    /// issue time + max TTL, not the TTL).
    pub exp: Option<SystemTime>,
    /// When this token string was obtained (login or renew).
    pub obtained_at: Instant,
    /// Wall-clock time at `obtained_at`, to compare with `exp`.
    pub obtained_wall: SystemTime,
    /// When the login that started this token's max-TTL budget happened.
    pub login_at: Instant,
}

impl AccessToken {
    /// The token; expose it only to build an `Authorization` header or a renew/revoke body.
    pub fn secret(&self) -> &SecretString {
        &self.token
    }

    /// Time from `obtained_at` until `exp`, when `exp` is known.
    pub fn exp_after_obtained(&self) -> Option<Duration> {
        self.exp.map(|exp| {
            exp.duration_since(self.obtained_wall)
                .unwrap_or(Duration::ZERO)
        })
    }

    fn from_response(
        endpoint: &str,
        resp: &TokenResponse<'_>,
        login_at: Option<Instant>,
    ) -> Result<Self, InfisicalError> {
        let token = resp.token(endpoint)?;
        let obtained_at = Instant::now();
        let exp = decode_payload::<TokenClaims>(token.expose_secret())
            .ok()
            .and_then(|c| c.exp)
            .and_then(|e| u64::try_from(e).ok())
            .map(|e| UNIX_EPOCH + Duration::from_secs(e));
        Ok(Self {
            token,
            expires_in: Duration::from_secs(resp.expires_in.unwrap_or(0)),
            max_ttl: Duration::from_secs(resp.max_ttl.unwrap_or(0)),
            exp,
            obtained_at,
            obtained_wall: SystemTime::now(),
            login_at: login_at.unwrap_or(obtained_at),
        })
    }

    /// A token built by hand (tests, the lead's planners).
    pub fn from_parts(
        token: SecretString,
        expires_in: Duration,
        max_ttl: Duration,
        exp: Option<SystemTime>,
    ) -> Self {
        let now = Instant::now();
        Self {
            token,
            expires_in,
            max_ttl,
            exp,
            obtained_at: now,
            obtained_wall: SystemTime::now(),
            login_at: now,
        }
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .field("max_ttl", &self.max_ttl)
            .field("exp", &self.exp)
            .field("obtained_at", &self.obtained_at)
            .finish_non_exhaustive()
    }
}

/// `{accessToken, expiresIn, accessTokenMaxTTL, tokenType}` of login and renew.
#[derive(Deserialize)]
struct TokenResponse<'a> {
    /// Raw JSON, decoded by `secret_json` (`None` when absent or `null`).
    #[serde(rename = "accessToken", default, borrow)]
    access_token: Option<&'a RawValue>,
    #[serde(rename = "expiresIn", default, deserialize_with = "lenient_secs")]
    expires_in: Option<u64>,
    #[serde(
        rename = "accessTokenMaxTTL",
        default,
        deserialize_with = "lenient_secs"
    )]
    max_ttl: Option<u64>,
}

impl TokenResponse<'_> {
    /// The token, refused when `null`, missing, not a string or empty: sending
    /// `Authorization: Bearer ` with nothing after it would only turn the
    /// server's fault into a confusing refusal later.
    fn token(&self, endpoint: &str) -> Result<SecretString, InfisicalError> {
        let bad = |why: &'static str| InfisicalError::BadSecret {
            endpoint: endpoint.to_owned(),
            key: "accessToken".to_owned(),
            why,
        };
        let token = secret_json::decode(self.access_token).map_err(|e| bad(e.describe()))?;
        if token.expose_secret().trim().is_empty() {
            return Err(bad("is empty"));
        }
        Ok(token)
    }
}

#[derive(Deserialize)]
struct TokenClaims {
    exp: Option<i64>,
}

#[derive(Serialize)]
struct LoginBody<'a> {
    #[serde(rename = "identityId")]
    identity_id: &'a str,
    jwt: &'a str,
    #[serde(rename = "organizationSlug", skip_serializing_if = "Option::is_none")]
    organization_slug: Option<&'a str>,
    // Older servers named the same field `subOrganizationName`; unknown keys are stripped.
    #[serde(
        rename = "subOrganizationName",
        skip_serializing_if = "Option::is_none"
    )]
    sub_organization_name: Option<&'a str>,
}

#[derive(Serialize)]
struct TokenBody<'a> {
    #[serde(rename = "accessToken")]
    access_token: &'a str,
}

/// Seconds as an integer, a float or null.
fn lenient_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let n: Option<serde_json::Number> = Option::deserialize(d)?;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "seconds, clamped at zero"
    )]
    Ok(n.and_then(|n| n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64))))
}

impl Client {
    /// Logs in as `identity_id` with `jwt` (`POST /api/v1/auth/{method}/login`),
    /// retrying 429/5xx/network errors until `deadline`.
    pub async fn login(
        &self,
        method: AuthMethod,
        identity_id: &str,
        organization_slug: Option<&str>,
        jwt: &Jwt,
        deadline: Instant,
    ) -> Result<AccessToken, InfisicalError> {
        let path = format!("/api/v1/auth/{}/login", method.slug());
        let endpoint = format!("POST {path}");
        let url = self.url(&path);
        let body = json_body(&LoginBody {
            identity_id,
            jwt: jwt.token().expose_secret(),
            organization_slug,
            sub_organization_name: organization_slug,
        });
        let scrub = [jwt.token().expose_secret()];
        let reply = self
            .with_retry(deadline, |bound| {
                let request = self
                    .http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
                self.send(request, &endpoint, bound, &scrub)
            })
            .await?;
        if reply.status == 200 || reply.status == 201 {
            let resp: TokenResponse<'_> = parse_json(&endpoint, &reply.body)?;
            let token = AccessToken::from_response(&endpoint, &resp, None)?;
            tracing::info!(
                method = %method,
                identity_id,
                expires_in = ?token.expires_in,
                max_ttl = ?token.max_ttl,
                "logged in to Infisical"
            );
            return Ok(token);
        }
        let server = reply.server_error(&[jwt.token().expose_secret()]);
        let claims = jwt.claims();
        Err(match reply.status {
            401 | 403 => InfisicalError::LoginRefused {
                method,
                identity_id: identity_id.to_owned(),
                hint: error::login_hint(
                    method,
                    &server,
                    claims.sub.as_deref(),
                    claims.iss.as_deref(),
                    &claims.aud,
                ),
                server: Box::new(server),
            },
            404 if server.is_resource_not_found() => InfisicalError::NoSuchAuthMethod {
                method,
                identity_id: identity_id.to_owned(),
                server: Box::new(server),
            },
            // A route 404 (infisical-api.md §9: `"error": "Not Found"`, "Route …
            // not found") or a page that is not Infisical's: the URL is wrong.
            404 => InfisicalError::NotInfisicalApi {
                url: self.base_url().to_owned(),
                endpoint,
                server: Box::new(server),
                suggestion: self.url_suggestion(),
            },
            _ => error::status_error(Call::Login, &endpoint, server, None),
        })
    }

    /// What to try when this URL serves no Infisical API: the origin without
    /// the path prefix, or the instance origin as the browser shows it.
    fn url_suggestion(&self) -> String {
        let origin = self.url.url().origin().ascii_serialization();
        if self.base_url() == origin {
            "set --api-url to the instance origin as the browser shows it (e.g. https://app.infisical.com, https://infisical.example.com), without a route".to_owned()
        } else {
            format!("try --api-url {origin} (without the path), or the prefix your reverse proxy really serves the API under")
        }
    }

    /// Renews `token` (`POST /api/v1/auth/token/renew`) and returns the token the
    /// server answers with (a new string on current servers, the same on old ones).
    /// A refusal is [`InfisicalError::RenewRefused`]: log in again.
    pub async fn renew(
        &self,
        token: &AccessToken,
        deadline: Instant,
    ) -> Result<AccessToken, InfisicalError> {
        let endpoint = "POST /api/v1/auth/token/renew";
        let reply = self
            .token_call("/api/v1/auth/token/renew", endpoint, token, deadline)
            .await?;
        if reply.status != 200 {
            let server = reply.server_error(&[token.secret().expose_secret()]);
            return Err(error::status_error(Call::Renew, endpoint, server, None));
        }
        let resp: TokenResponse<'_> = parse_json(endpoint, &reply.body)?;
        let renewed = AccessToken::from_response(endpoint, &resp, Some(token.login_at))?;
        tracing::debug!(expires_in = ?renewed.expires_in, "renewed the access token");
        Ok(renewed)
    }

    /// Revokes `token` (`POST /api/v1/auth/token/revoke`). A token the server no
    /// longer knows (401/403 token error) counts as revoked.
    pub async fn revoke(
        &self,
        token: &AccessToken,
        deadline: Instant,
    ) -> Result<(), InfisicalError> {
        let endpoint = "POST /api/v1/auth/token/revoke";
        let reply = self
            .token_call("/api/v1/auth/token/revoke", endpoint, token, deadline)
            .await?;
        if reply.status == 200 || reply.status == 204 {
            tracing::debug!("revoked the access token");
            return Ok(());
        }
        let server = reply.server_error(&[token.secret().expose_secret()]);
        if server.is_token_error() {
            tracing::debug!(%server, "the access token was already invalid");
            return Ok(());
        }
        Err(error::status_error(
            Call::Authenticated,
            endpoint,
            server,
            None,
        ))
    }

    async fn token_call(
        &self,
        path: &str,
        endpoint: &str,
        token: &AccessToken,
        deadline: Instant,
    ) -> Result<super::Reply, InfisicalError> {
        let url = self.url(path);
        let body = json_body(&TokenBody {
            access_token: token.secret().expose_secret(),
        });
        let scrub = [token.secret().expose_secret()];
        self.with_retry(deadline, |bound| {
            let request = self
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            self.send(request, endpoint, bound, &scrub)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ExitClass, Failure};
    use base64::Engine as _;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn token_response_is_parsed_and_exp_decoded() {
        let token = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"HS256"}"#),
            b64(r#"{"exp":2000000000}"#)
        );
        let body = format!(
            r#"{{"accessToken":"{token}","expiresIn":7200,"accessTokenMaxTTL":86400.0,"tokenType":"Bearer"}}"#
        );
        let resp: TokenResponse = parse_json("POST /login", body.as_bytes()).unwrap();
        let t = AccessToken::from_response("POST /login", &resp, None).unwrap();
        assert_eq!(t.expires_in, Duration::from_secs(7200));
        assert_eq!(t.max_ttl, Duration::from_secs(86400));
        assert_eq!(t.exp, Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000)));
        assert_eq!(t.secret().expose_secret(), token);
    }

    #[test]
    fn opaque_tokens_and_missing_ttls_are_accepted() {
        let resp: TokenResponse = parse_json(
            "POST /login",
            br#"{"accessToken":"opaque","expiresIn":null}"#,
        )
        .unwrap();
        let t = AccessToken::from_response("POST /login", &resp, None).unwrap();
        assert_eq!(t.expires_in, Duration::ZERO);
        assert_eq!(t.max_ttl, Duration::ZERO);
        assert_eq!(t.exp, None);
    }

    #[test]
    fn a_null_missing_or_empty_access_token_is_refused_not_sent_empty() {
        for body in [
            r#"{"accessToken":null,"expiresIn":60}"#,
            r#"{"token":"x"}"#,
            r#"{"accessToken":""}"#,
            r#"{"accessToken":"  "}"#,
            r#"{"accessToken":7}"#,
        ] {
            let resp: TokenResponse = parse_json("POST /login", body.as_bytes()).unwrap();
            let err = AccessToken::from_response("POST /login", &resp, None).unwrap_err();
            assert!(
                matches!(err, InfisicalError::BadSecret { .. }),
                "{body}: {err}"
            );
            assert_eq!(err.exit_class(), ExitClass::Unavailable);
            assert!(err.to_string().contains("accessToken"), "{err}");
        }
    }

    #[test]
    fn access_token_debug_is_redacted() {
        let t = AccessToken::from_parts(
            SecretString::from("at-very-secret-token"),
            Duration::from_secs(60),
            Duration::ZERO,
            None,
        );
        let shown = format!("{t:?} {t:#?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn login_body_carries_both_organization_names_only_when_given() {
        let body = json_body(&LoginBody {
            identity_id: "id-1",
            jwt: "j.w.t",
            organization_slug: None,
            sub_organization_name: None,
        });
        assert_eq!(&body[..], br#"{"identityId":"id-1","jwt":"j.w.t"}"#);
        let body = json_body(&LoginBody {
            identity_id: "id-1",
            jwt: "j.w.t",
            organization_slug: Some("sub"),
            sub_organization_name: Some("sub"),
        });
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["organizationSlug"], "sub");
        assert_eq!(v["subOrganizationName"], "sub");
    }
}
