//! Shared helpers of the stand-in tests: a blocking HTTP client over real
//! sockets, the stand-in stack (`svid_exec_testkit::stack`) as they use it,
//! and a bounded runtime for the async ones.

use std::future::Future;
use std::time::Duration;

use serde_json::{json, Value};
pub use svid_exec_testkit::stack::{
    now, svid_claims, AUDIENCE, ENVIRONMENT, JWT_IDENTITY, OIDC_IDENTITY, PROJECT_ID, PROJECT_SLUG,
    SPIFFE_IDENTITY, WORKLOAD,
};
use svid_exec_testkit::stack::{Stack, StackOptions};

/// A response, read fully.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    /// Asserts the error body shape and returns it.
    pub fn error(&self, status: u16, error: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        let body = self.json();
        assert_eq!(body["statusCode"], status, "{body}");
        assert_eq!(body["error"], error, "{body}");
        assert!(
            body["reqId"].as_str().unwrap().starts_with("req-"),
            "{body}"
        );
        assert!(body.get("message").is_some(), "{body}");
        body
    }
}

/// A blocking client on its own runtime.
pub struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    pub base: String,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self::with(base, reqwest::Client::new())
    }
    pub fn with(base: &str, http: reqwest::Client) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Self {
            rt,
            http,
            base: base.to_string(),
        }
    }

    pub fn send(&self, request: reqwest::RequestBuilder) -> Result<Resp, reqwest::Error> {
        self.rt.block_on(async {
            let r = request.send().await?;
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let text = r.text().await?;
            Ok(Resp {
                status,
                headers,
                text,
            })
        })
    }

    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .unwrap()
    }

    pub fn post_raw(&self, path: &str, body: &str, bearer: Option<&str>) -> Resp {
        let mut rb = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = bearer {
            rb = rb.bearer_auth(token);
        }
        self.send(rb).unwrap()
    }

    pub fn get(&self, path_and_query: &str, bearer: Option<&str>) -> Resp {
        self.get_etag(path_and_query, bearer, None)
    }

    pub fn get_etag(&self, path_and_query: &str, bearer: Option<&str>, etag: Option<&str>) -> Resp {
        self.send(self.get_request(path_and_query, bearer, etag))
            .unwrap()
    }

    pub fn get_request(
        &self,
        path_and_query: &str,
        bearer: Option<&str>,
        etag: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut rb = self.http.get(format!("{}{path_and_query}", self.base));
        if let Some(token) = bearer {
            rb = rb.bearer_auth(token);
        }
        if let Some(etag) = etag {
            rb = rb.header("if-none-match", etag);
        }
        rb
    }

    pub fn login(&self, kind: &str, identity: &str, jwt: &str) -> Resp {
        self.post(
            &format!("/api/v1/auth/{kind}-auth/login"),
            &json!({"identityId": identity, "jwt": jwt}),
        )
    }

    /// Logs in and returns the access token (panics on refusal).
    pub fn token(&self, kind: &str, identity: &str, jwt: &str) -> String {
        let r = self.login(kind, identity, jwt);
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["accessToken"].as_str().unwrap().to_string()
    }

    pub fn renew(&self, token: &str) -> Resp {
        self.post("/api/v1/auth/token/renew", &json!({"accessToken": token}))
    }

    pub fn revoke(&self, token: &str) -> Resp {
        self.post("/api/v1/auth/token/revoke", &json!({"accessToken": token}))
    }

    pub fn v4(&self, token: &str, query: &str) -> Resp {
        self.get(
            &format!("/api/v4/secrets?projectId={PROJECT_ID}&environment={ENVIRONMENT}&{query}"),
            Some(token),
        )
    }
}

/// Decodes a JWT's claims without verifying it.
pub fn claims_of(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// The stand-in stack as these tests use it: Infisical (and the discovery
/// provider) over plain HTTP, no demo secrets, the identities' tokens on the
/// server's defaults.
pub fn stand_ins() -> Stack {
    stand_ins_with(options())
}

/// What [`stand_ins`] uses; adjust it for [`stand_ins_with`].
pub fn options() -> StackOptions {
    StackOptions {
        https: false,
        demo_secrets: false,
        token_ttl: None,
        ..StackOptions::default()
    }
}

pub fn stand_ins_with(options: StackOptions) -> Stack {
    Stack::start_with(options)
}

/// A blocking client for the stack's Infisical, and a token from it.
pub trait Blocking {
    fn client(&self) -> Client;
    /// An access token of the OIDC identity.
    fn token(&self) -> String;
}

impl Blocking for Stack {
    fn client(&self) -> Client {
        Client::new(&self.infisical.url())
    }

    fn token(&self) -> String {
        self.client().token("oidc", OIDC_IDENTITY, &self.svid())
    }
}

/// Runs `f` on a fresh runtime, failing the test if it takes over 30 s.
pub fn run<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .expect("test timed out")
    })
}
