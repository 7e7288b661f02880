//! The discovery provider stand-in serves SPIRE's document shape and the key ring's JWKS.

use svid_exec_testkit::discovery::Discovery;
use svid_exec_testkit::keys::{KeyAlg, KeyRing};
use svid_exec_testkit::tls::TestCa;

fn get(client: &reqwest::Client, url: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = client.get(url).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, r.text().await.unwrap(), headers)
    })
}

#[test]
fn https_document_has_spires_shape_and_issuer_without_trailing_slash() {
    let ca = TestCa::new();
    let ring = KeyRing::new(KeyAlg::Es256);
    let disco = Discovery::start(ring.clone(), Some(&ca));
    let (status, body, headers) = get(
        &ca.reqwest_client(),
        &format!("{}/.well-known/openid-configuration", disco.url()),
    );
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["issuer"], disco.url());
    assert!(!disco.url().ends_with('/'));
    assert_eq!(doc["jwks_uri"], format!("{}/keys", disco.url()));
    assert_eq!(doc["authorization_endpoint"], "");
    // SPIRE's field order, pretty-printed.
    let order: Vec<usize> = [
        "\"issuer\"",
        "\"jwks_uri\"",
        "\"authorization_endpoint\"",
        "\"response_types_supported\"",
    ]
    .iter()
    .map(|k| body.find(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{body}");
    assert!(body.contains('\n'));

    let (status, body, headers) = get(&ca.reqwest_client(), &format!("{}/keys", disco.url()));
    assert_eq!(status, 200);
    assert_eq!(
        headers["cache-control"],
        "no-cache, no-store, must-revalidate"
    );
    let jwks: serde_json::Value = serde_json::from_str(&body).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kid"], ring.current().kid());
    assert_eq!(key["alg"], "ES256");
    assert!(key.get("use").is_none(), "SPIRE omits `use` by default");
}

#[test]
fn plain_http_and_a_configured_issuer() {
    let ring = KeyRing::new(KeyAlg::Rs256);
    let disco = Discovery::start_with_issuer(ring, None, Some("https://oidc.example.org".into()));
    assert!(disco.url().starts_with("http://127.0.0.1:"));
    let (status, body, _) = get(
        &reqwest::Client::new(),
        &format!("{}/.well-known/openid-configuration", disco.url()),
    );
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["issuer"], "https://oidc.example.org");
    assert_eq!(doc["jwks_uri"], format!("{}/keys", disco.url()));
}
