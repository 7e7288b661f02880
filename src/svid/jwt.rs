//! [`Jwt`]: a token in zeroizing memory with its readable claims, and the one
//! decoder of a compact JWS payload (never verified here: Infisical verifies).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

/// The readable claims of a JWT. None of them is a credential.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtClaims {
    /// Subject (the SPIFFE ID for a JWT-SVID; anything for a file JWT).
    pub sub: Option<String>,
    /// Audiences (a string or an array in the token; always a list here).
    pub aud: Vec<String>,
    /// Expiry, unix seconds.
    pub exp: Option<i64>,
    /// Issuer; SPIRE sets it only when the server has `jwt_issuer`.
    pub iss: Option<String>,
}

impl JwtClaims {
    /// Time left until `exp` at `now` (zero when past), `None` without `exp`.
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        let exp = u64::try_from(self.exp?).unwrap_or(0);
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        Some(Duration::from_secs(exp.saturating_sub(now)))
    }
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    exp: Option<serde_json::Number>,
    iss: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Why a token's payload could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadError {
    NotThreeParts,
    NotBase64,
    NotJson,
}

impl PayloadError {
    pub(crate) const fn describe(self) -> &'static str {
        match self {
            Self::NotThreeParts => "not three dot-separated parts",
            Self::NotBase64 => "payload is not base64url",
            Self::NotJson => "payload is not a JSON object of claims",
        }
    }
}

/// Decodes (without verifying) the payload of a compact JWS, into a zeroizing buffer.
pub(crate) fn decode_payload<T: serde::de::DeserializeOwned>(
    token: &str,
) -> Result<T, PayloadError> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PayloadError::NotThreeParts);
    };
    let payload = payload.trim_end_matches('=');
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| PayloadError::NotBase64)?,
    );
    serde_json::from_slice(&bytes).map_err(|_| PayloadError::NotJson)
}

/// Reads `sub`, `aud`, `exp`, `iss` from a JWT without verifying it. Tolerant:
/// a non-SPIFFE `sub`, a string or array `aud`, a float `exp`.
pub fn decode_claims(token: &str) -> Result<JwtClaims, &'static str> {
    let raw: RawClaims = decode_payload(token).map_err(PayloadError::describe)?;
    #[allow(
        clippy::cast_possible_truncation,
        reason = "exp is whole seconds; fractions are dropped"
    )]
    let exp = raw
        .exp
        .and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)));
    Ok(JwtClaims {
        sub: raw.sub,
        aud: match raw.aud {
            None => Vec::new(),
            Some(Audience::One(a)) => vec![a],
            Some(Audience::Many(v)) => v,
        },
        exp,
        iss: raw.iss,
    })
}

/// A JWT (SVID or from a file): the token in zeroizing memory, plus its claims.
pub struct Jwt {
    token: SecretString,
    claims: JwtClaims,
}

impl Jwt {
    /// Wraps a token, reading its claims. Used by both sources.
    pub fn new(token: SecretString) -> Result<Self, &'static str> {
        let claims = decode_claims(token.expose_secret())?;
        Ok(Self { token, claims })
    }

    /// The token; expose it only at the HTTP call.
    pub fn token(&self) -> &SecretString {
        &self.token
    }

    /// The readable claims.
    pub fn claims(&self) -> &JwtClaims {
        &self.claims
    }
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt")
            .field("token", &"[redacted]")
            .field("claims", &self.claims)
            .finish()
    }
}

/// A compact JWS with `payload` as its claims (tests of this module and its siblings).
#[cfg(test)]
pub(crate) fn test_token(payload: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"ES256","kid":"k"}"#),
        b64(payload)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn jwt(payload: &str) -> String {
        test_token(payload)
    }

    #[test]
    fn claims_are_read_from_string_or_array_audience_and_non_spiffe_subject() {
        let c = decode_claims(&jwt(
            r#"{"sub":"system:serviceaccount:ns:web","aud":"infisical","exp":1700000000,"iss":"https://oidc.example"}"#,
        ))
        .unwrap();
        assert_eq!(c.sub.as_deref(), Some("system:serviceaccount:ns:web"));
        assert_eq!(c.aud, vec!["infisical"]);
        assert_eq!(c.exp, Some(1_700_000_000));
        assert_eq!(c.iss.as_deref(), Some("https://oidc.example"));

        let c = decode_claims(&jwt(
            r#"{"sub":"spiffe://td/w","aud":["a","b"],"exp":1.5e9}"#,
        ))
        .unwrap();
        assert_eq!(c.aud, vec!["a", "b"]);
        assert_eq!(c.exp, Some(1_500_000_000));
        assert_eq!(c.iss, None);

        assert!(decode_claims("not-a-jwt").is_err());
        assert!(decode_claims("a.!!!.c").is_err());
        assert!(decode_claims(&format!("a.{}.c", b64("[1,2]"))).is_err());
    }

    #[test]
    fn remaining_is_zero_after_expiry_and_none_without_exp() {
        let c = JwtClaims {
            exp: Some(100),
            ..JwtClaims::default()
        };
        assert_eq!(
            c.remaining(UNIX_EPOCH + Duration::from_secs(40)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            c.remaining(UNIX_EPOCH + Duration::from_secs(400)),
            Some(Duration::ZERO)
        );
        assert_eq!(JwtClaims::default().remaining(SystemTime::now()), None);
    }

    #[test]
    fn jwt_debug_shows_claims_never_the_token() {
        let token = jwt(r#"{"sub":"spiffe://td/web","aud":"infisical","exp":1}"#);
        let j = Jwt::new(SecretString::from(token.as_str())).unwrap();
        let shown = format!("{j:?} {j:#?}");
        assert!(shown.contains("spiffe://td/web"));
        assert!(shown.contains("[redacted]"));
        for part in token.split('.') {
            assert!(!shown.contains(part), "Debug leaks a token part");
        }
    }
}
