//! Serving and calling SPIKE's mTLS HTTP APIs.
//!
//! [`serve_mtls`] is the accept loop every SPIKE service uses: TLS handshake with a deadline,
//! the verified [`PeerIdentity`] put into each request's extensions, a connection cap, the
//! connection closed when the peer's certificate expires, and graceful shutdown.
//! [`MtlsClient`] is the matching client: it presents the caller's SVID and accepts only the
//! expected server identity.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tower::ServiceExt;

use crate::id::SpiffeId;
use crate::svid::SvidSource;
use crate::tls::{PeerIdentity, PeerRule, client_config};

/// Connection-level limits of a server.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Longest a client may take to send request headers.
    pub header_timeout: Duration,
    /// Most concurrent connections; further ones wait in the kernel backlog.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// Serves `app` over mutual TLS on `listener` until `shutdown` completes, then stops accepting
/// and waits (bounded) for open connections to finish their requests.
pub async fn serve_mtls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let tls =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
            let Some(peer) = PeerIdentity::from_certs(tls.get_ref().1.peer_certificates()) else {
                return;
            };
            let expires_in = peer
                .not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let service =
                hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer.clone());
                    req.extensions_mut().insert(RemoteAddr(remote));
                    app.clone().oneshot(req.map(axum::body::Body::new))
                });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(conn);
            let expiry = tokio::time::sleep(expires_in);
            tokio::pin!(expiry);
            let mut draining = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r { tracing::debug!(%remote, error = %e, "connection ended"); }
                        break;
                    }
                    // A connection must not outlive the certificate that authenticated it.
                    () = &mut expiry, if !draining => {
                        tracing::debug!(%remote, "peer certificate expired; closing connection");
                        conn.as_mut().graceful_shutdown();
                        draining = true;
                    }
                    r = stop_rx.changed(), if !draining => {
                        let _ = r;
                        conn.as_mut().graceful_shutdown();
                        draining = true;
                    }
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    // Wait for in-flight connections to drain, but never forever.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(10), permits.acquire_many(all)).await;
}

/// The TCP address of the client, put into request extensions by [`serve_mtls`].
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// Why a client call failed before an HTTP status was received.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The server address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (wrong server identity, untrusted certificate, ...).
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// The server address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP exchange with {addr} failed: {detail}")]
    Http {
        /// The server address.
        addr: String,
        /// What failed.
        detail: String,
    },
    /// The call did not finish in time.
    #[error("request to {addr} timed out after {secs}s")]
    Timeout {
        /// The server address.
        addr: String,
        /// The timeout.
        secs: u64,
    },
    /// The response was larger than allowed.
    #[error("response from {addr} is larger than {limit} bytes")]
    TooLarge {
        /// The server address.
        addr: String,
        /// The limit.
        limit: usize,
    },
}

/// An HTTP response: status and body bytes.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

/// An HTTP/1.1 client over mTLS to one server identity, reusing one connection.
pub struct MtlsClient {
    addr: String,
    connector: TlsConnector,
    conn: Mutex<Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>,
    timeout: Duration,
    max_response: usize,
}

impl std::fmt::Debug for MtlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsClient")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MtlsClient {
    /// A client for the server at `addr` (`host:port`) that must present exactly `server_id`.
    pub fn new(
        addr: impl Into<String>,
        server_id: SpiffeId,
        source: Arc<dyn SvidSource>,
    ) -> Result<Self, rustls::Error> {
        let config = client_config(source, PeerRule::exactly(server_id))?;
        Ok(Self {
            addr: addr.into(),
            connector: TlsConnector::from(Arc::new(config)),
            conn: Mutex::new(None),
            timeout: Duration::from_secs(30),
            max_response: 64 << 20,
        })
    }

    /// Sets the per-request timeout (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        // The name is not checked (SPIFFE verifies the ID), but rustls needs one.
        let name = rustls::pki_types::ServerName::try_from("spike.invalid").map_err(|e| {
            ClientError::Http {
                addr: self.addr.clone(),
                detail: e.to_string(),
            }
        })?;
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|source| ClientError::Tls {
                addr: self.addr.clone(),
                source,
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ClientError::Http {
                addr: self.addr.clone(),
                detail: e.to_string(),
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends one request; `body` is sent as JSON when present.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        let secs = self.timeout.as_secs();
        tokio::time::timeout(self.timeout, self.send_inner(method, path_and_query, body))
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.addr.clone(),
                secs,
            })?
    }

    async fn send_inner(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        let http_err = |detail: String| ClientError::Http {
            addr: self.addr.clone(),
            detail,
        };
        let mut guard = self.conn.lock().await;
        let cached = match guard.take() {
            Some(mut s) => s.ready().await.is_ok().then_some(s),
            None => None,
        };
        let mut sender = match cached {
            Some(s) => s,
            None => self.connect().await?,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(http::header::HOST, &self.addr);
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| http_err(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| http_err(e.to_string()))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), self.max_response)
            .collect()
            .await
            .map_err(|_| ClientError::TooLarge {
                addr: self.addr.clone(),
                limit: self.max_response,
            })?
            .to_bytes();
        *guard = Some(sender);
        Ok(Response { status, body })
    }
}

/// Serves `app` over plain HTTP (health and metrics only) until `shutdown` completes.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
