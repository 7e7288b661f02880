//! A forward HTTP proxy on `127.0.0.1:<ephemeral>` that records every byte
//! its clients send it: `CONNECT host:port` tunnels (what an `https://` client
//! uses) and absolute-form requests (`GET http://host:port/…`, what a plain
//! `http://` client would send through it). It reaches every target on
//! loopback, at the target's port, so a test can name a host that only the
//! proxy "knows" (`infisical.test`) and no lookup ever leaves the machine.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy received.
#[derive(Debug, Clone, Default)]
pub struct ProxyLog {
    /// Every byte clients sent, in arrival order (tunnelled TLS included).
    pub received: Vec<u8>,
    /// The request lines (`CONNECT infisical.test:443 HTTP/1.1`, …).
    pub requests: Vec<String>,
    /// The `Proxy-Authorization` headers sent.
    pub proxy_authorizations: Vec<String>,
}

/// A running proxy. Stops when dropped.
pub struct RecordingProxy {
    addr: SocketAddr,
    log: Arc<Mutex<ProxyLog>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for RecordingProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RecordingProxy {
    /// Starts the proxy.
    ///
    /// # Panics
    /// If the runtime cannot be built or the port cannot be bound.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("testkit-proxy")
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let log = Arc::new(Mutex::new(ProxyLog::default()));
        runtime.spawn(accept_loop(listener, Arc::clone(&log)));
        Self {
            addr,
            log,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://USER:PASSWORD@127.0.0.1:PORT`.
    pub fn url_with_credentials(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    /// What was received so far.
    ///
    /// # Panics
    /// If a connection task panicked while holding the log.
    pub fn log(&self) -> ProxyLog {
        self.log.lock().expect("proxy log").clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept_loop(listener: TcpListener, log: Arc<Mutex<ProxyLog>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve(stream, Arc::clone(&log)));
    }
}

fn record(log: &Mutex<ProxyLog>, bytes: &[u8]) {
    if let Ok(mut log) = log.lock() {
        log.received.extend_from_slice(bytes);
    }
}

/// The port of `host:port` (default `default`).
fn port_of(authority: &str, default: u16) -> u16 {
    authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(default)
}

async fn serve(mut client: TcpStream, log: Arc<Mutex<ProxyLog>>) {
    // The request head, byte by byte up to the blank line (small, test-only).
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        match client.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    record(&log, &head);
    let text = String::from_utf8_lossy(&head).into_owned();
    let request_line = text.lines().next().unwrap_or_default().to_string();
    if let Ok(mut log) = log.lock() {
        log.requests.push(request_line.clone());
        log.proxy_authorizations.extend(
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .filter(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
                .map(|(_, v)| v.trim().to_string()),
        );
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (port, preface) = if method == "CONNECT" {
        (port_of(target, 443), None)
    } else {
        let authority = target
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("");
        (port_of(authority, 80), Some(head))
    };
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)).await else {
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    match preface {
        None => {
            if client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
        }
        Some(head) => {
            if upstream.write_all(&head).await.is_err() {
                return;
            }
        }
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    record(&log, &buf[..n]);
                    if upstream_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = upstream_write.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}
