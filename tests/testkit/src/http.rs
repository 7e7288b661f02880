//! Serves an axum `Router` over HTTP or HTTPS on `127.0.0.1:<ephemeral>`, on
//! a runtime of its own, so that dropping (or [`HttpServer::stop`]ping) the
//! server closes every open connection as a crashed process would.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A running HTTP(S) server. Stops when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    tls: bool,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Binds `127.0.0.1:0` and serves `router`; with `tls`, over HTTPS.
    ///
    /// # Panics
    /// If the runtime cannot be built or the port cannot be bound.
    pub fn start(router: axum::Router, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), router, tls)
    }

    /// Like [`HttpServer::start`] on a given address (a restart on the same port).
    ///
    /// # Panics
    /// If the runtime cannot be built or the address cannot be bound.
    pub fn start_on(
        addr: SocketAddr,
        router: axum::Router,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("testkit-http")
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind(addr))
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let is_tls = tls.is_some();
        runtime.spawn(accept_loop(listener, router, tls));
        Self {
            addr,
            tls: is_tls,
            runtime: Some(runtime),
        }
    }

    /// The socket address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`, without a trailing `/`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops serving and drops every open connection.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        // As Node's HTTP server does (noDelay by default): without it a reply
        // written in two pieces waits for the client's delayed ACK (~40 ms).
        let _ = stream.set_nodelay(true);
        // Reap finished connection tasks so the set does not grow forever.
        while connections.try_join_next().is_some() {}
        let service = TowerToHyperService::new(router.clone());
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match acceptor {
                Some(acceptor) => {
                    // A client that rejects our certificate aborts the handshake: not an error here.
                    if let Ok(tls_stream) = acceptor.accept(stream).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(tls_stream), service)
                            .await;
                    }
                }
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}
