//! A throwaway certificate authority, made fresh at start, so the stand-ins can
//! serve HTTPS on loopback and tests can exercise `--ca-cert` and the
//! "unknown issuer" failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A host name the server certificate also covers, as a remote server's name
/// would be: nothing resolves it, `proxy::RecordingProxy` reaches it on loopback.
pub const REMOTE_NAME: &str = "infisical.test";

/// A CA and one server certificate for `127.0.0.1`, `::1`, `localhost` and [`REMOTE_NAME`].
pub struct TestCa {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// Generates a new CA and a loopback server certificate signed by it.
    ///
    /// # Panics
    /// If key generation fails (it does not with the ring backend).
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "svid-exec testkit CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");

        let leaf_key = KeyPair::generate().expect("generate server key");
        let mut leaf_params = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
            // A name no resolver knows: reached only through the testkit's
            // proxy (which connects to loopback), so proxy tests stay local.
            REMOTE_NAME.to_string(),
        ])
        .expect("server params");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "svid-exec testkit server");
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca_cert, &ca_key)
            .expect("sign server certificate");

        let chain = vec![leaf.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let served = chain.clone();
        let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
        Self {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            chain: served,
            server_config: Arc::new(server_config),
        }
    }

    /// The CA certificate, PEM-encoded (what a user passes to `--ca-cert`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER-encoded.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The chain the servers present: their certificate, then the CA's.
    pub fn server_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// Writes the CA PEM to `dir/ca.pem` and returns the path.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write_ca_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write ca.pem");
        path
    }

    /// The rustls server configuration for HTTPS stand-ins.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server_config)
    }

    /// A `reqwest` client that trusts only this CA (for the stand-ins' own
    /// outbound calls and for tests).
    ///
    /// # Panics
    /// If the client cannot be built.
    pub fn reqwest_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA PEM"),
            )
            .build()
            .expect("reqwest client")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
