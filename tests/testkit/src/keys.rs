//! Signing keys for the stand-ins: ES256 (P-256, SPIRE's default) and RS256
//! (RSA 2048), their public JWKs, and compact JWS signing. One [`KeyRing`] is
//! shared by the Workload API stand-in (which signs JWT-SVIDs) and the OIDC
//! discovery provider (which publishes the keys), as in a SPIRE deployment.

use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

/// The signature algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlg {
    /// ECDSA P-256 with SHA-256 (SPIRE's default `ec-p256`).
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (SPIRE with an RSA key).
    Rs256,
}

impl KeyAlg {
    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }
}

/// A private signing key with its key ID and public JWK.
pub struct SigningKey {
    alg: KeyAlg,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn random_kid() -> String {
    let bytes: [u8; 16] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// Generates a fresh key with a random key ID.
    ///
    /// # Panics
    /// If key generation or encoding fails.
    pub fn generate(alg: KeyAlg) -> Self {
        let kid = random_kid();
        let mut rng = rand::rngs::OsRng;
        let (encoding, jwk) = match alg {
            KeyAlg::Es256 => {
                let secret = p256::SecretKey::random(&mut rng);
                let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 PEM");
                let point = secret.public_key().to_encoded_point(false);
                let jwk = json!({
                    "kty": "EC",
                    "kid": kid,
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(point.x().expect("x")),
                    "y": URL_SAFE_NO_PAD.encode(point.y().expect("y")),
                    "alg": "ES256",
                });
                (
                    EncodingKey::from_ec_pem(pem.as_bytes()).expect("EC key"),
                    jwk,
                )
            }
            KeyAlg::Rs256 => {
                let private = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA key");
                let pem = private.to_pkcs1_pem(LineEnding::LF).expect("PKCS#1 PEM");
                let jwk = json!({
                    "kty": "RSA",
                    "kid": kid,
                    "n": URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
                    "e": URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
                    "alg": "RS256",
                });
                (
                    EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA key"),
                    jwk,
                )
            }
        };
        Self {
            alg,
            kid,
            encoding,
            jwk,
        }
    }

    /// The key's algorithm.
    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    /// The key ID (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK: `kty`, `kid`, `alg`, and `crv`/`x`/`y` or `n`/`e`.
    /// No `use`, as SPIRE's discovery provider serves it by default.
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// Signs `claims` as a compact JWS with header `{alg, kid, typ: "JWT"}`.
    ///
    /// # Panics
    /// If the claims cannot be serialised.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(match self.alg {
            KeyAlg::Es256 => Algorithm::ES256,
            KeyAlg::Rs256 => Algorithm::RS256,
        });
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign JWT")
    }
}

/// The keys of one trust domain, shared between signers and publishers. The
/// first key signs; all are published (so a rotation keeps old tokens valid).
#[derive(Clone, Debug)]
pub struct KeyRing {
    keys: Arc<RwLock<Vec<Arc<SigningKey>>>>,
}

impl KeyRing {
    /// A ring with one fresh key of `alg`.
    pub fn new(alg: KeyAlg) -> Self {
        Self {
            keys: Arc::new(RwLock::new(vec![Arc::new(SigningKey::generate(alg))])),
        }
    }

    /// The key that signs new tokens.
    ///
    /// # Panics
    /// If the lock is poisoned.
    pub fn current(&self) -> Arc<SigningKey> {
        Arc::clone(&self.keys.read().expect("key ring lock")[0])
    }

    /// Adds a fresh key of `alg` in front: it signs from now on.
    ///
    /// # Panics
    /// If the lock is poisoned.
    pub fn rotate(&self, alg: KeyAlg) -> Arc<SigningKey> {
        let key = Arc::new(SigningKey::generate(alg));
        self.keys
            .write()
            .expect("key ring lock")
            .insert(0, Arc::clone(&key));
        key
    }

    /// Signs `claims` with the current key.
    pub fn sign(&self, claims: &Value) -> String {
        self.current().sign(claims)
    }

    /// The JWKS document `{"keys": [...]}` of every key in the ring.
    ///
    /// # Panics
    /// If the lock is poisoned.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .read()
            .expect("key ring lock")
            .iter()
            .map(|k| k.jwk())
            .collect();
        json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    fn verify(ring: &KeyRing, token: &str, alg: Algorithm) -> Value {
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(ring.jwks()).expect("JWKS parses");
        let header = jsonwebtoken::decode_header(token).expect("header");
        let jwk = jwks
            .find(header.kid.as_deref().unwrap())
            .expect("kid in JWKS");
        let key = DecodingKey::from_jwk(jwk).expect("decoding key");
        let mut validation = Validation::new(alg);
        validation.set_audience(&["infisical"]);
        decode::<Value>(token, &key, &validation)
            .expect("verifies")
            .claims
    }

    #[test]
    fn es256_and_rs256_tokens_verify_against_the_published_jwks() {
        for (alg, jalg) in [
            (KeyAlg::Es256, Algorithm::ES256),
            (KeyAlg::Rs256, Algorithm::RS256),
        ] {
            let ring = KeyRing::new(alg);
            let exp = 4_000_000_000_u64;
            let token = ring
                .sign(&json!({"sub": "spiffe://example.org/w", "aud": "infisical", "exp": exp}));
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.typ.as_deref(), Some("JWT"));
            assert_eq!(header.kid.as_deref(), Some(ring.current().kid()));
            assert_eq!(verify(&ring, &token, jalg)["sub"], "spiffe://example.org/w");
        }
    }

    #[test]
    fn a_rotated_ring_still_publishes_the_old_key() {
        let ring = KeyRing::new(KeyAlg::Es256);
        let old = ring.sign(
            &json!({"sub": "spiffe://example.org/w", "aud": "infisical", "exp": 4_000_000_000_u64}),
        );
        ring.rotate(KeyAlg::Es256);
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);
        verify(&ring, &old, Algorithm::ES256);
    }
}
