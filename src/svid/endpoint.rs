//! The Workload API address (`unix:///path`, `unix:/path`, `/path`,
//! `tcp://IP:port`) and `--spiffe-id`, parsed into the `spiffe` crate's types.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use spiffe::transport::Endpoint;
use spiffe::SpiffeId;

use super::SvidError;

/// Parses a Workload API address: `unix:///path`, `unix:/path`, a bare absolute
/// `/path` (what spiffe-helper and SPIRE's CLI take), or `tcp://IP:port`.
///
/// Unix forms are handled here rather than by the crate, which rejects bare
/// paths and does not percent-decode (`unix:///a%20b` would name `/a%20b`).
pub fn parse_endpoint(value: &str) -> Result<Endpoint, SvidError> {
    let bad = |reason: &str| SvidError::InvalidEndpoint {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    if trimmed.starts_with('/') {
        return Ok(Endpoint::Unix(PathBuf::from(trimmed)));
    }
    if let Some(rest) = strip_prefix_ignore_case(trimmed, "unix:") {
        let path = if let Some(after) = rest.strip_prefix("//") {
            if !after.starts_with('/') {
                return Err(bad(
                    "a unix: address must not name a host (use unix:///absolute/path)",
                ));
            }
            after
        } else {
            rest
        };
        if !path.starts_with('/') {
            return Err(bad("a unix: address needs an absolute path"));
        }
        if path.contains(['?', '#']) {
            return Err(bad("a unix: address must not have a query or fragment"));
        }
        let decoded = percent_decode(path).ok_or_else(|| bad("invalid %-escape in the path"))?;
        if decoded.len() <= 1 {
            return Err(bad("a unix: address needs a socket path"));
        }
        return Ok(Endpoint::Unix(PathBuf::from(OsString::from_vec(decoded))));
    }
    if strip_prefix_ignore_case(trimmed, "tcp:").is_some() {
        return Endpoint::parse(trimmed).map_err(|e| bad(&e.to_string()));
    }
    Err(bad("unknown scheme"))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Where the Workload API address came from, so that messages can say which
/// setting to change, and say it when nothing was set and the default was tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointOrigin {
    /// `--workload-api-socket` on the command line.
    #[default]
    Flag,
    /// The `SPIFFE_ENDPOINT_SOCKET` environment variable.
    Env,
    /// Neither was set: the SPIRE agent's default socket.
    Default,
}

impl EndpointOrigin {
    /// The parenthesis that follows the address in messages.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Flag => "from --workload-api-socket",
            Self::Env => "from SPIFFE_ENDPOINT_SOCKET",
            Self::Default => {
                "the default: SPIFFE_ENDPOINT_SOCKET is unset and --workload-api-socket was not given"
            }
        }
    }
}

/// How an endpoint is named in messages.
pub fn describe_endpoint(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Unix(path) => format!("unix://{}", path.display()),
        Endpoint::Tcp { host, port } => {
            format!("tcp://{}", std::net::SocketAddr::new(*host, *port))
        }
        other => format!("{other:?}"),
    }
}

/// Parses `--spiffe-id`.
pub fn parse_spiffe_id(value: &str) -> Result<SpiffeId, SvidError> {
    SpiffeId::new(value).map_err(|e| SvidError::InvalidSpiffeId {
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ExitClass, Failure};

    #[test]
    fn endpoint_parsing_table() {
        let unix = |p: &str| Some(Endpoint::Unix(PathBuf::from(p)));
        let table: &[(&str, Option<Endpoint>)] = &[
            ("unix:///tmp/a.sock", unix("/tmp/a.sock")),
            ("unix:/tmp/a.sock", unix("/tmp/a.sock")),
            ("UNIX:///tmp/a.sock", unix("/tmp/a.sock")),
            ("/run/spire/agent.sock", unix("/run/spire/agent.sock")),
            (" /run/spire/agent.sock ", unix("/run/spire/agent.sock")),
            ("unix:///tmp/a%20b%25.sock", unix("/tmp/a b%.sock")),
            (
                "tcp://127.0.0.1:8081",
                Some(Endpoint::Tcp {
                    host: "127.0.0.1".parse().unwrap(),
                    port: 8081,
                }),
            ),
            (
                "tcp:127.0.0.1:8081",
                Some(Endpoint::Tcp {
                    host: "127.0.0.1".parse().unwrap(),
                    port: 8081,
                }),
            ),
            ("", None),
            ("relative.sock", None),
            ("unix:relative.sock", None),
            ("unix://host/tmp/a.sock", None),
            ("unix:///", None),
            ("unix:///tmp/a.sock?x=1", None),
            ("unix:///tmp/a%zz", None),
            ("tcp://localhost:8081", None),
            ("tcp://127.0.0.1", None),
            ("http://127.0.0.1:80", None),
        ];
        for (input, want) in table {
            let got = parse_endpoint(input);
            if let Some(e) = want {
                assert_eq!(got.as_ref().ok(), Some(e), "{input:?} -> {got:?}");
            } else {
                let err = got.expect_err(input);
                assert_eq!(err.exit_class(), ExitClass::Config, "{input:?}");
            }
        }
    }

    #[test]
    fn spiffe_id_must_be_a_spiffe_uri() {
        assert!(parse_spiffe_id("spiffe://example.org/ns/prod/sa/web").is_ok());
        let err = parse_spiffe_id("https://example.org/x").unwrap_err();
        assert_eq!(err.exit_class(), ExitClass::Config);
    }
}
