//! [`ApiUrl`]: an Infisical instance URL, validated once (where the
//! configuration is read) and trusted by the client from then on; and the one
//! definition of a loopback host (cli-contract.md, "Trust"): an address in
//! 127.0.0.0/8 or `::1`, or `localhost`. Any other name is loopback only if
//! every address it resolves to is, which the client checks at every
//! connection (`transport.rs`): a name cannot be decided here, once.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use reqwest::Url;

use super::{InfisicalError, DEFAULT_API_URL};

/// An Infisical instance URL that passed every rule: `http`/`https`, a host,
/// no credentials, query or fragment, normalised (`https://host`,
/// `https://host/`, `https://host/api` and the route prefixes
/// `https://host/api/v1`, `/api/v3`, … are one origin; a path prefix before
/// `/api` is kept), and plain `http://` only to a loopback host unless that
/// was explicitly allowed ([`ApiUrl::parse_allowing_plain_http`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUrl {
    url: Url,
    /// `--allow-insecure-http`: plain `http://` to any host, unchecked.
    plain_http_anywhere: bool,
}

impl ApiUrl {
    /// Parses and normalises `raw`; refuses plain `http://` to an address that
    /// is not loopback (the access token and secrets would cross the network
    /// in clear). Plain `http://` to a name other than `localhost` is accepted
    /// here: the client lets it connect only to loopback addresses
    /// ([`ApiUrl::checks_resolved_loopback`]).
    pub fn parse(raw: &str) -> Result<Self, InfisicalError> {
        let mut url = Self::parse_allowing_plain_http(raw)?;
        url.plain_http_anywhere = false;
        if url.url.scheme() == "http" && url.loopback_host() == Some(false) {
            return Err(InfisicalError::InsecureHttp {
                host: url.host().to_owned(),
            });
        }
        Ok(url)
    }

    /// Dangerous (`--allow-insecure-http`): as [`ApiUrl::parse`], but plain
    /// `http://` to any host is accepted, and a name's addresses are not
    /// checked. The caller warns.
    pub fn parse_allowing_plain_http(raw: &str) -> Result<Self, InfisicalError> {
        let bad = |reason: &str| InfisicalError::InvalidApiUrl {
            value: raw.to_owned(),
            reason: reason.to_owned(),
        };
        let mut url = Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(
                "the scheme must be https:// (or http:// to a loopback host)",
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("it has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("it must not carry credentials"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("it must not have a query or fragment"));
        }
        let mut path = url.path().trim_end_matches('/').to_owned();
        // `/api/v1`, `/api/v3`: the start of a route, pasted from the API reference.
        if let Some((before, version)) = path.rsplit_once("/api/v") {
            if !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()) {
                path.truncate(before.len() + "/api".len());
            }
        }
        if path.ends_with("/api") {
            path.truncate(path.len() - "/api".len());
        }
        let path = path.trim_end_matches('/').to_owned();
        url.set_path(&path);
        // Meaningful for plain http only: an https URL is the same either way.
        let plain_http_anywhere = url.scheme() == "http";
        Ok(Self {
            url,
            plain_http_anywhere,
        })
    }

    /// The URL, normalised (`https://app.infisical.com/` for an origin).
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The URL, normalised (scheme, host and port for the client's own checks).
    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// The URL without a trailing `/`: what request paths are appended to.
    pub fn base(&self) -> &str {
        self.as_str().trim_end_matches('/')
    }

    /// The host, as written in the URL.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// Whether requests may go in clear to a host not known to be loopback:
    /// only when allowed ([`ApiUrl::parse_allowing_plain_http`]; the caller warns).
    pub fn is_plain_http_to_remote(&self) -> bool {
        self.plain_http_anywhere
            && self.url.scheme() == "http"
            && self.loopback_host() != Some(true)
    }

    /// Whether this is plain `http://` that may only reach loopback addresses:
    /// the client resolves the host itself and refuses, at every connection,
    /// a name whose addresses are not all loopback.
    pub(crate) fn checks_resolved_loopback(&self) -> bool {
        self.url.scheme() == "http" && !self.plain_http_anywhere
    }

    /// The loopback rule as far as the URL alone can tell: `Some(true)` for a
    /// loopback address or `localhost`, `Some(false)` for any other address,
    /// `None` for any other name (decided on its resolved addresses).
    pub(crate) fn loopback_host(&self) -> Option<bool> {
        let host = self.host();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => Some(is_loopback_ip(ip)),
            Err(_) => is_localhost(host).then_some(true),
        }
    }
}

/// `localhost` (or `localhost.`), loopback by definition (RFC 6761); a name
/// under it (`a.localhost`) is resolved and checked like any other.
pub(crate) fn is_localhost(name: &str) -> bool {
    name.trim_end_matches('.').eq_ignore_ascii_case("localhost")
}

/// 127.0.0.0/8, `::1`, and those written as IPv4-mapped IPv6.
pub(crate) fn is_loopback_ip(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

impl FromStr for ApiUrl {
    type Err = InfisicalError;

    fn from_str(raw: &str) -> Result<Self, InfisicalError> {
        Self::parse(raw)
    }
}

impl Default for ApiUrl {
    /// The contract's default, `https://app.infisical.com`.
    fn default() -> Self {
        Self::parse(DEFAULT_API_URL).expect("UNWRAP: the default URL is valid")
    }
}

impl fmt::Display for ApiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ExitClass, Failure};

    #[test]
    fn api_url_is_normalised() {
        let table = [
            ("https://app.infisical.com", "https://app.infisical.com/"),
            ("https://app.infisical.com/", "https://app.infisical.com/"),
            (
                "https://app.infisical.com/api",
                "https://app.infisical.com/",
            ),
            (
                "https://app.infisical.com/api/",
                "https://app.infisical.com/",
            ),
            (
                "https://eu.infisical.com:8443/infisical/api",
                "https://eu.infisical.com:8443/infisical",
            ),
            ("http://127.0.0.1:8080/api", "http://127.0.0.1:8080/"),
            ("https://h.example/api/v1", "https://h.example/"),
            ("https://h.example/api/v3/", "https://h.example/"),
            ("https://h.example/api/v4", "https://h.example/"),
            (
                "https://h.example/infisical/api/v1",
                "https://h.example/infisical",
            ),
            (
                "https://h.example/api/versions",
                "https://h.example/api/versions",
            ),
            ("https://h.example/api/v", "https://h.example/api/v"),
            ("  https://x.example  ", "https://x.example/"),
        ];
        for (input, want) in table {
            assert_eq!(ApiUrl::parse(input).unwrap().as_str(), want, "{input}");
        }
        for bad in [
            "app.infisical.com",
            "ftp://x",
            "https://u:p@x",
            "https://x/?a=1",
            "https://",
        ] {
            let err = ApiUrl::parse(bad).unwrap_err();
            assert!(matches!(err, InfisicalError::InvalidApiUrl { .. }), "{bad}");
            assert_eq!(err.exit_class(), ExitClass::Config, "{bad}");
        }
    }

    #[test]
    fn base_has_no_trailing_slash() {
        let url = ApiUrl::parse("https://app.infisical.com/api/").unwrap();
        assert_eq!(url.base(), "https://app.infisical.com");
        assert_eq!(ApiUrl::default().base(), DEFAULT_API_URL);
    }

    #[test]
    fn loopback_is_decided_by_address_and_localhost_only() {
        for (u, want) in [
            ("http://127.0.0.1:1", Some(true)),
            ("http://127.9.9.9", Some(true)),
            ("http://[::1]:80", Some(true)),
            ("http://[::ffff:127.0.0.1]", Some(true)),
            ("http://localhost:8080", Some(true)),
            ("http://LOCALHOST.", Some(true)),
            ("http://10.0.0.1", Some(false)),
            ("http://0.0.0.0", Some(false)),
            ("http://[::]", Some(false)),
            ("http://a.localhost", None),
            ("http://localhost.example.com", None),
            ("http://infisical.internal", None),
        ] {
            let url = ApiUrl::parse_allowing_plain_http(u).unwrap();
            assert_eq!(url.loopback_host(), want, "{u}");
        }
    }

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        // Names are accepted here and checked on their resolved addresses at
        // every connection (tests/integration/client/trust.rs).
        for ok in [
            "http://127.0.0.1:1",
            "http://localhost:8080",
            "http://[::1]:80",
            "http://127.9.9.9",
            "http://a.localhost",
            "http://infisical.internal",
        ] {
            let url = ApiUrl::parse(ok).unwrap();
            assert!(!url.is_plain_http_to_remote(), "{ok}");
            assert!(url.checks_resolved_loopback(), "{ok}");
        }
        for refused in ["http://10.0.0.1", "http://0.0.0.0:80", "http://[::]:80"] {
            let err = ApiUrl::parse(refused).unwrap_err();
            assert!(
                matches!(err, InfisicalError::InsecureHttp { .. }),
                "{refused}: {err}"
            );
            assert_eq!(err.exit_class(), ExitClass::Config);
            assert!(err.hint().unwrap().contains("--allow-insecure-http"));
            let allowed = ApiUrl::parse_allowing_plain_http(refused).unwrap();
            assert!(allowed.is_plain_http_to_remote(), "{refused}");
            assert!(!allowed.checks_resolved_loopback(), "{refused}");
        }
        let allowed = ApiUrl::parse_allowing_plain_http("http://infisical.internal").unwrap();
        assert!(allowed.is_plain_http_to_remote());
        assert!(!allowed.checks_resolved_loopback());
        assert!(!ApiUrl::parse("https://x.example")
            .unwrap()
            .checks_resolved_loopback());
    }
}
