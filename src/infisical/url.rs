//! [`ApiUrl`]: an Infisical instance URL, validated once (where the
//! configuration is read) and trusted by the client from then on.

use std::fmt;
use std::str::FromStr;

use reqwest::Url;

use super::{InfisicalError, DEFAULT_API_URL};

/// An Infisical instance URL that passed every rule: `http`/`https`, a host,
/// no credentials, query or fragment, normalised (`https://host`,
/// `https://host/`, `https://host/api` are one origin; a path prefix before
/// `/api` is kept), and plain `http://` only to a loopback host unless that
/// was explicitly allowed ([`ApiUrl::parse_allowing_plain_http`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUrl(Url);

impl ApiUrl {
    /// Parses and normalises `raw`; refuses plain `http://` to a host that is
    /// not loopback (the access token and secrets would cross the network in clear).
    pub fn parse(raw: &str) -> Result<Self, InfisicalError> {
        let url = Self::parse_allowing_plain_http(raw)?;
        if url.is_plain_http_to_remote() {
            return Err(InfisicalError::InsecureHttp {
                host: url.host().to_owned(),
            });
        }
        Ok(url)
    }

    /// Dangerous (`--allow-insecure-http`): as [`ApiUrl::parse`], but plain
    /// `http://` to any host is accepted. The caller warns.
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
        if path.ends_with("/api") {
            path.truncate(path.len() - "/api".len());
        }
        let path = path.trim_end_matches('/').to_owned();
        url.set_path(&path);
        Ok(Self(url))
    }

    /// The URL, normalised (`https://app.infisical.com/` for an origin).
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The URL without a trailing `/`: what request paths are appended to.
    pub fn base(&self) -> &str {
        self.as_str().trim_end_matches('/')
    }

    /// The host, as written in the URL.
    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }

    /// Whether requests would go in clear to a host that is not loopback.
    pub fn is_plain_http_to_remote(&self) -> bool {
        self.0.scheme() == "http" && !self.is_loopback()
    }

    /// Whether the host is loopback (`localhost`, 127.0.0.0/8, `::1`).
    fn is_loopback(&self) -> bool {
        let host = self.host();
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return v6
                .parse::<std::net::Ipv6Addr>()
                .is_ok_and(|ip| ip.is_loopback());
        }
        if let Ok(v4) = host.parse::<std::net::Ipv4Addr>() {
            return v4.is_loopback();
        }
        let d = host.trim_end_matches('.').to_ascii_lowercase();
        d == "localhost" || d.ends_with(".localhost")
    }
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
    fn plain_http_only_to_loopback_unless_allowed() {
        for ok in [
            "http://127.0.0.1:1",
            "http://localhost:8080",
            "http://[::1]:80",
            "http://127.9.9.9",
            "http://a.localhost",
        ] {
            assert!(ApiUrl::parse(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://10.0.0.1",
            "http://infisical.internal",
            "http://localhost.example.com",
        ] {
            let err = ApiUrl::parse(refused).unwrap_err();
            assert!(
                matches!(err, InfisicalError::InsecureHttp { .. }),
                "{refused}: {err}"
            );
            assert_eq!(err.exit_class(), ExitClass::Config);
            assert!(err.hint().unwrap().contains("--allow-insecure-http"));
            let allowed = ApiUrl::parse_allowing_plain_http(refused).unwrap();
            assert!(allowed.is_plain_http_to_remote(), "{refused}");
        }
    }
}
