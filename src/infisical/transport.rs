//! Which way a request goes: the plain-HTTP rule enforced on the addresses a
//! name resolves to (not on the name), the proxy choice (`HTTPS_PROXY`,
//! `ALL_PROXY`, `NO_PROXY`; never for plain `http://`, never for loopback), and
//! the probe that tells a TLS port from a plain-HTTP one when the scheme of
//! `--api-url` does not match what the port speaks.
//!
//! The rules (cli-contract.md, "Trust"): what a loopback host is, and what
//! the URL alone decides, is `url.rs`'s; here, any other name must resolve to
//! loopback addresses only, checked on every connection (so a name cannot be
//! trusted once and then point elsewhere). Proxies carry only `https://`
//! traffic: a proxy would otherwise receive the JWT and the access token in clear.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::url::{is_localhost, is_loopback_ip, ApiUrl};

/// A name's addresses are not all loopback, or it has none: plain HTTP to it
/// would cross the network in clear.
#[derive(Debug)]
pub(crate) struct NotLoopback {
    pub(crate) host: String,
    /// What it resolved to (empty: it did not resolve).
    pub(crate) addrs: Vec<IpAddr>,
    /// Why it did not resolve.
    pub(crate) error: Option<String>,
}

impl std::fmt::Display for NotLoopback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(e) = &self.error {
            return write!(
                f,
                "{}, which does not resolve here ({e}), so it cannot be shown to be loopback",
                self.host
            );
        }
        let addrs: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        write!(
            f,
            "{}, which resolves to {}, not only to loopback",
            self.host,
            addrs.join(", ")
        )
    }
}

impl std::error::Error for NotLoopback {}

/// The addresses of `host` when every one is loopback; `localhost` without a lookup.
pub(crate) async fn resolve_loopback(host: &str) -> Result<Vec<IpAddr>, NotLoopback> {
    if is_localhost(host) {
        return Ok(vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]);
    }
    let not = |addrs, error| NotLoopback {
        host: host.to_owned(),
        addrs,
        error,
    };
    let addrs: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| not(Vec::new(), Some(e.to_string())))?
        .map(|a| a.ip())
        .collect();
    check_all_loopback(addrs).map_err(|addrs| not(addrs, None))
}

/// `addrs` if not empty and all loopback, else `Err(addrs)`.
fn check_all_loopback(addrs: Vec<IpAddr>) -> Result<Vec<IpAddr>, Vec<IpAddr>> {
    if !addrs.is_empty() && addrs.iter().all(|ip| is_loopback_ip(*ip)) {
        Ok(addrs)
    } else {
        Err(addrs)
    }
}

/// The resolver of a plain-HTTP client: only names whose addresses are all
/// loopback resolve; the connection uses exactly the addresses checked.
#[derive(Debug)]
pub(crate) struct LoopbackOnly;

impl Resolve for LoopbackOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs = resolve_loopback(name.as_str()).await?;
            let addrs: Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The proxy a client uses, decided once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyChoice {
    /// Direct connections; `note` says why a proxy variable that is set is not used.
    Direct { note: Option<String> },
    /// Through `url` (from the variable `from`).
    Via { url: Url, from: &'static str },
}

/// Proxy variables for `https://`, in the order they are looked up (curl's
/// and reqwest's: the scheme's own, then the catch-all). The contract names
/// `HTTPS_PROXY`; `ALL_PROXY` is honoured too because curl honours it, and
/// docs/options.md ("Proxies") says so.
const HTTPS_PROXY_VARS: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];

/// Variables that would route plain HTTP through a proxy (never honoured).
const HTTP_PROXY_VARS: [&str; 4] = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];

/// Decides the proxy for `api` from the environment (`env` reads a variable).
pub(crate) fn choose_proxy(
    api: &ApiUrl,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ProxyChoice, String> {
    let set = |vars: &[&'static str]| {
        vars.iter()
            .find_map(|v| env(v).filter(|s| !s.trim().is_empty()).map(|s| (*v, s)))
    };
    if api.url().scheme() != "https" {
        return Ok(ProxyChoice::Direct {
            note: set(&HTTP_PROXY_VARS).map(|(var, _)| {
                format!("{var} is set but not used: plain http:// never goes through a proxy")
            }),
        });
    }
    let Some((from, value)) = set(&HTTPS_PROXY_VARS) else {
        return Ok(ProxyChoice::Direct { note: None });
    };
    let host = api.host().trim_start_matches('[').trim_end_matches(']');
    // A proxy cannot reach this machine's loopback, and TLS protects the
    // exchange either way: `*.localhost` counts here by name (RFC 6761), as
    // curl does, without the resolution plain http needs.
    let loopback = api.loopback_host() == Some(true)
        || host
            .trim_end_matches('.')
            .to_ascii_lowercase()
            .ends_with(".localhost");
    if loopback {
        return Ok(ProxyChoice::Direct {
            note: Some(format!(
                "{from} is set but not used: {host} is this machine (loopback)"
            )),
        });
    }
    if let Some((var, list)) = set(&["NO_PROXY", "no_proxy"]) {
        if no_proxy_matches(&list, host) {
            return Ok(ProxyChoice::Direct {
                note: Some(format!("{from} is set but not used: {var} lists {host}")),
            });
        }
    }
    let value = value.trim();
    // curl's convention: a proxy without a scheme is an HTTP proxy.
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| format!("{from} {:?} is not a proxy URL: {e}", shown(value)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{from} {} is not an http:// or https:// proxy, the only kinds supported",
            without_credentials(&url)
        ));
    }
    Ok(ProxyChoice::Via { url, from })
}

/// A proxy URL as it may be logged: user and password removed.
pub(crate) fn without_credentials(url: &Url) -> String {
    let mut shown = url.clone();
    let had = !url.username().is_empty() || url.password().is_some();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let mut text = shown.as_str().trim_end_matches('/').to_owned();
    if had {
        text.push_str(" (with credentials)");
    }
    text
}

/// A raw variable value as it may be shown: anything before `@` dropped.
fn shown(value: &str) -> &str {
    value.rsplit_once('@').map_or(value, |(_, host)| host)
}

/// curl's `NO_PROXY`: comma-separated; `*` matches every host; a name matches
/// itself and its sub-domains (a leading `.` is optional); an address or a CIDR
/// block matches the addresses in it; a `:port` suffix is ignored.
pub(crate) fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host_ip: Option<IpAddr> = host.parse().ok();
    list.split(|c: char| c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry.trim_start_matches('[');
            let entry = match entry.split_once(']') {
                Some((ip, _port)) => ip,
                None if entry.matches(':').count() == 1 => {
                    entry.split_once(':').map_or(entry, |(h, _)| h)
                }
                None => entry,
            };
            if let Some(ip) = host_ip {
                return ip_in(ip, entry);
            }
            let name = entry
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            !name.is_empty()
                && (host == name
                    || host
                        .strip_suffix(&name)
                        .is_some_and(|rest| rest.ends_with('.')))
        })
}

/// Whether `ip` is `entry` (an address) or inside it (a CIDR block).
fn ip_in(ip: IpAddr, entry: &str) -> bool {
    let (addr, bits) = match entry.split_once('/') {
        Some((a, b)) => (a, b.parse::<u32>().ok()),
        None => (entry, None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    let (ip, net) = (ip.to_canonical(), net.to_canonical());
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// What a port answered to a plain HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Speaks {
    /// A TLS record (an alert or a handshake): the port wants `https://`.
    Tls,
    /// `HTTP/…`: the port serves plain HTTP.
    PlainHttp,
}

/// How long the probe waits for the port's first bytes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends a plain `GET /` (no credential) to `addrs` and looks at the first
/// bytes of the answer. `None`: nothing conclusive (no answer, refused, other).
pub(crate) async fn probe(addrs: &[SocketAddr]) -> Option<Speaks> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addrs).await.ok()?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 5];
        let mut got = 0;
        while got < head.len() {
            match stream.read(&mut head[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        classify(&head[..got])
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .ok()
        .flatten()
}

/// A TLS record starts with its type (21 alert, 22 handshake) and version 3.x.
fn classify(head: &[u8]) -> Option<Speaks> {
    match head {
        [21 | 22, 3, ..] => Some(Speaks::Tls),
        _ if head.starts_with(b"HTTP/") => Some(Speaks::PlainHttp),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn api_url(s: &str) -> ApiUrl {
        ApiUrl::parse_allowing_plain_http(s).unwrap()
    }

    #[test]
    fn a_name_must_resolve_to_loopback_addresses_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(check_all_loopback(vec![ip("127.0.0.1"), ip("::1")]).is_ok());
        assert!(check_all_loopback(vec![ip("127.0.0.1"), ip("10.1.2.3")]).is_err());
        assert!(check_all_loopback(vec![ip("0.0.0.0")]).is_err());
        assert!(check_all_loopback(vec![]).is_err());
        let e = NotLoopback {
            host: "evil.localhost".into(),
            addrs: vec![ip("192.0.2.7")],
            error: None,
        };
        assert_eq!(
            e.to_string(),
            "evil.localhost, which resolves to 192.0.2.7, not only to loopback"
        );
    }

    #[test]
    fn localhost_resolves_to_loopback_without_a_lookup() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let addrs = rt.block_on(resolve_loopback("localhost")).unwrap();
        assert!(addrs.iter().all(IpAddr::is_loopback));
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn proxies_carry_only_https_to_hosts_that_are_not_loopback() {
        let all = [
            ("HTTP_PROXY", "http://p:1"),
            ("HTTPS_PROXY", "http://u:pw@p:2"),
            ("ALL_PROXY", "http://p:3"),
        ];
        let via =
            |api: &str, vars: &[(&str, &str)]| choose_proxy(&api_url(api), &env(vars)).unwrap();
        for direct in [
            "http://127.0.0.1:8080",
            "http://infisical.example.com",
            "https://127.0.0.1:8443",
            "https://[::1]:8443",
            "https://localhost:8443",
            "https://svc.localhost",
        ] {
            assert!(
                matches!(via(direct, &all), ProxyChoice::Direct { note: Some(_) }),
                "{direct}"
            );
        }
        assert_eq!(
            via("https://app.infisical.com", &all),
            ProxyChoice::Via {
                url: url("http://u:pw@p:2"),
                from: "HTTPS_PROXY"
            }
        );
        assert_eq!(
            via("https://app.infisical.com", &[("all_proxy", "p:3")]),
            ProxyChoice::Via {
                url: url("http://p:3"),
                from: "all_proxy"
            }
        );
        assert_eq!(
            via("https://app.infisical.com", &[("HTTP_PROXY", "http://p:1")]),
            ProxyChoice::Direct { note: None }
        );
        let no = [
            ("HTTPS_PROXY", "http://p:2"),
            ("NO_PROXY", "x.org, .infisical.com"),
        ];
        assert!(matches!(
            via("https://app.infisical.com", &no),
            ProxyChoice::Direct { note: Some(n) } if n.contains("NO_PROXY")
        ));
        assert!(matches!(
            via("https://infisical.com.evil.net", &no),
            ProxyChoice::Via { .. }
        ));
        let bad = choose_proxy(
            &api_url("https://app.infisical.com"),
            &env(&[("HTTPS_PROXY", "socks5://u:secret@p:1080")]),
        )
        .unwrap_err();
        assert!(bad.contains("http://") && !bad.contains("secret"), "{bad}");
    }

    #[test]
    fn no_proxy_follows_curl() {
        for (list, host, want) in [
            ("*", "anything.example", true),
            ("example.com", "example.com", true),
            ("example.com", "api.example.com", true),
            (".example.com", "api.example.com", true),
            ("*.example.com", "api.example.com", true),
            ("example.com", "badexample.com", false),
            ("example.com:443", "example.com", true),
            ("EXAMPLE.com.", "example.COM", true),
            ("10.0.0.0/8", "10.2.3.4", true),
            ("10.0.0.0/8", "11.2.3.4", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("[2001:db8::1]", "2001:db8::1", true),
            ("2001:db8::/32", "2001:db8::5", true),
            ("a.org b.org,,c.org", "b.org", true),
            ("", "example.com", false),
        ] {
            assert_eq!(no_proxy_matches(list, host), want, "{list} / {host}");
        }
    }

    #[test]
    fn proxy_urls_are_logged_without_credentials() {
        assert_eq!(
            without_credentials(&url("http://user:hunter2@proxy:3128/")),
            "http://proxy:3128 (with credentials)"
        );
        assert_eq!(
            without_credentials(&url("http://proxy:3128")),
            "http://proxy:3128"
        );
    }

    #[test]
    fn the_first_bytes_tell_tls_from_http() {
        assert_eq!(classify(&[21, 3, 3, 0, 2]), Some(Speaks::Tls));
        assert_eq!(classify(&[22, 3, 1]), Some(Speaks::Tls));
        assert_eq!(classify(b"HTTP/1.1 400"), Some(Speaks::PlainHttp));
        assert_eq!(classify(b"SSH-2"), None);
        assert_eq!(classify(b""), None);
    }
}
