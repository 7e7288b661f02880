//! Which roots the server's certificate may chain to, and loading them cheaply.
//!
//! Trusted by default: the built-in roots (Mozilla's, compiled in), the
//! system's roots, and `--ca-cert`. With `--ca-cert-only`: `--ca-cert` alone.
//!
//! The system's roots are the distribution's bundle file (`SSL_CERT_FILE`,
//! else the first of the usual bundle paths; plus every file of `SSL_CERT_DIR`
//! when that is set), read only when a certificate does not chain to the
//! built-in roots or `--ca-cert`: a public server or a private CA given with
//! `--ca-cert` costs no read of the system store at all. A chain is accepted
//! exactly when it is valid under the union of the three sets, because the
//! second attempt uses that union. A system bundle that cannot be read is
//! logged once and left out: it never stops us reaching a public server.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::error::InfisicalError;
use crate::error::chain;

/// Where distributions keep their bundle of trusted roots, most common first
/// (Debian/Ubuntu/Arch/Gentoo; Fedora/RHEL; openSUSE; RHEL 7 extracted;
/// Alpine/BSD). The same list as `openssl-probe`'s files, without its directories.
const BUNDLE_PATHS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
];

/// The rustls configuration of the client: HTTP/1.1, TLS 1.2 and 1.3, the
/// verifier of [`Roots`].
pub(crate) fn client_config(
    ca_cert: Option<&Path>,
    ca_cert_only: bool,
) -> Result<rustls::ClientConfig, InfisicalError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra = match ca_cert {
        Some(path) => load_ca(path)?,
        None if ca_cert_only => {
            return Err(InfisicalError::CaCert {
                option: "--ca-cert-only".to_owned(),
                reason: "it needs --ca-cert: without it nothing would be trusted".to_owned(),
            })
        }
        None => Vec::new(),
    };
    let roots = Roots::new(extra, !ca_cert_only, Arc::clone(&provider))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| InfisicalError::HttpClient(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(roots))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The PEM certificates of `--ca-cert`.
fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, InfisicalError> {
    let bad = |reason: String| InfisicalError::CaCert {
        option: "--ca-cert".to_owned(),
        reason: format!("cannot use {}: {reason}", path.display()),
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM bundle ({e})")))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".to_owned()));
    }
    Ok(certs)
}

/// Certificate verification against the built-in roots and `--ca-cert` first,
/// then (when allowed, on failure) against those plus the system's roots.
#[derive(Debug)]
pub(crate) struct Roots {
    first: Arc<WebPkiServerVerifier>,
    /// `--ca-cert` (kept to build the union).
    extra: Vec<CertificateDer<'static>>,
    /// Whether the built-in and system roots are trusted at all.
    public: bool,
    /// The union verifier, built on the first failure; `None` when the system
    /// store could not be loaded (the first verifier's answer then stands).
    union: OnceLock<Option<Arc<WebPkiServerVerifier>>>,
    provider: Arc<CryptoProvider>,
}

impl Roots {
    fn new(
        extra: Vec<CertificateDer<'static>>,
        public: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, InfisicalError> {
        let mut store = RootCertStore::empty();
        if public {
            // Already parsed trust anchors: no decoding at start.
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        let (_, ignored) = store.add_parsable_certificates(extra.iter().cloned());
        if ignored > 0 {
            return Err(InfisicalError::CaCert {
                option: "--ca-cert".to_owned(),
                reason: format!("{ignored} certificate(s) in it are not valid trust anchors"),
            });
        }
        Ok(Self {
            first: verifier(store, &provider)?,
            extra,
            public,
            union: OnceLock::new(),
            provider,
        })
    }

    /// The verifier over built-in + `--ca-cert` + system roots, built once.
    fn union(&self) -> Option<&Arc<WebPkiServerVerifier>> {
        self.union
            .get_or_init(|| {
                let system = match system_roots(&|name| std::env::var_os(name)) {
                    Ok(certs) => certs,
                    Err(reason) => {
                        tracing::warn!(%reason, "ignoring the system CA bundle, which could not be loaded");
                        return None;
                    }
                };
                let mut store = RootCertStore::empty();
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                store.add_parsable_certificates(self.extra.iter().cloned());
                let (added, _) = store.add_parsable_certificates(system);
                if added == 0 {
                    tracing::warn!("ignoring the system CA bundle: no usable certificate in it");
                    return None;
                }
                verifier(store, &self.provider).ok()
            })
            .as_ref()
    }

    /// Whether the system store has been read (tests).
    #[cfg(test)]
    fn system_loaded(&self) -> bool {
        self.union.get().is_some()
    }
}

fn verifier(
    store: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, InfisicalError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), Arc::clone(provider))
        .build()
        .map_err(|e| InfisicalError::HttpClient(chain(&e)))
}

impl ServerCertVerifier for Roots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let first = self.first.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match (first, self.public) {
            (Err(e), true) => match self.union() {
                Some(union) => union.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                ),
                None => Err(e),
            },
            (result, _) => result,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.first.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.first.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.first.supported_verify_schemes()
    }
}

/// The system's roots: `SSL_CERT_FILE` and/or every file of `SSL_CERT_DIR`
/// when set (as OpenSSL and `rustls-native-certs` read them), else the first
/// bundle file of [`BUNDLE_PATHS`] that exists. A certificate the bundle holds
/// that is not valid PEM fails the whole load (the caller warns and goes on).
fn system_roots(
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = env("SSL_CERT_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let dir = env("SSL_CERT_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let mut files: Vec<PathBuf> = Vec::new();
    if file.is_none() && dir.is_none() {
        let found = BUNDLE_PATHS
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .ok_or_else(|| format!("none of {} exists", BUNDLE_PATHS.join(", ")))?;
        files.push(found.to_owned());
    }
    files.extend(file);
    if let Some(dir) = dir {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("SSL_CERT_DIR {}: {e}", dir.display()))?;
        let mut in_dir: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        in_dir.sort();
        files.extend(in_dir);
    }
    let mut certs = Vec::new();
    for path in files {
        let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            certs.push(cert.map_err(|e| format!("{}: {e}", path.display()))?);
        }
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ExitClass, Failure};
    use svid_exec_testkit::tls::TestCa;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// The stand-ins' server certificate chain for `127.0.0.1` under `ca`.
    fn verify(roots: &Roots, ca: &TestCa) -> Result<ServerCertVerified, rustls::Error> {
        let chain = ca.server_chain();
        roots.verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from("127.0.0.1").unwrap(),
            &[],
            UnixTime::now(),
        )
    }

    #[test]
    fn a_ca_cert_chain_is_verified_without_reading_the_system_store() {
        let ca = TestCa::new();
        let roots = Roots::new(vec![ca.ca_der().clone()], true, provider()).unwrap();
        assert!(verify(&roots, &ca).is_ok());
        assert!(!roots.system_loaded(), "the system store was read");
    }

    #[test]
    fn an_unknown_issuer_consults_the_system_store_once_and_fails_as_before() {
        let ca = TestCa::new();
        let roots = Roots::new(Vec::new(), true, provider()).unwrap();
        let err = verify(&roots, &ca).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{err:?}"
        );
        assert!(roots.system_loaded());
    }

    #[test]
    fn ca_cert_only_trusts_nothing_else_and_never_reads_the_system_store() {
        let ca = TestCa::new();
        let other = TestCa::new();
        let roots = Roots::new(vec![other.ca_der().clone()], false, provider()).unwrap();
        assert!(verify(&roots, &ca).is_err());
        assert!(!roots.system_loaded());
        let roots = Roots::new(vec![ca.ca_der().clone()], false, provider()).unwrap();
        assert!(verify(&roots, &ca).is_ok());
    }

    #[test]
    fn ca_cert_only_without_ca_cert_is_a_configuration_error() {
        let err = client_config(None, true).unwrap_err();
        assert_eq!(err.exit_class(), ExitClass::Config);
        assert!(
            err.to_string()
                .contains("--ca-cert-only: it needs --ca-cert"),
            "{err}"
        );
    }

    #[test]
    fn system_roots_come_from_the_variables_else_one_bundle_file() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let file = ca.write_ca_pem(dir.path());
        let env = |name: &str| (name == "SSL_CERT_FILE").then(|| file.clone().into_os_string());
        assert_eq!(system_roots(&env).unwrap(), vec![ca.ca_der().clone()]);
        let certs_dir = dir.path().join("certs");
        std::fs::create_dir(&certs_dir).unwrap();
        std::fs::copy(&file, certs_dir.join("a.pem")).unwrap();
        std::fs::copy(&file, certs_dir.join("b.pem")).unwrap();
        let env = |name: &str| (name == "SSL_CERT_DIR").then(|| certs_dir.clone().into_os_string());
        assert_eq!(system_roots(&env).unwrap().len(), 2);
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let env = |name: &str| (name == "SSL_CERT_FILE").then(|| garbage.clone().into_os_string());
        assert!(system_roots(&env).is_err());
    }
}
