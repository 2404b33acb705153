//! [`MtlsClient`]: presents the caller's SVID and accepts only the expected server identity.
//!
//! A pool ([`hyper_util::client::legacy::Client`]) over [`SpiffeConnector`]: connections are
//! reused and shared by concurrent requests (HTTP/2 when the server offers it through ALPN,
//! else several HTTP/1.1 connections), each new connection verifies the server's SPIFFE ID,
//! and a request that is idempotent is retried once when its connection breaks before a
//! response.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::connector::{Connector, SpiffeConnector, WebConnector};
use crate::svid::SvidSource;
use spike_core::id::SpiffeId;

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

/// The cause of a [`ClientError::Tls`] when the server presented an SVID of another SPIFFE ID
/// than the one expected (for example a keeper's address given as Nexus's).
///
/// The presented ID is what the server's certificate claims; the handshake stopped before the
/// server proved it holds the key, so it says where the client went, not who is there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server presented {presented}, expected {expected}")]
pub struct ServerIdMismatch {
    /// The SPIFFE ID in the server's certificate.
    pub presented: SpiffeId,
    /// The SPIFFE ID this client accepts.
    pub expected: SpiffeId,
}

impl ClientError {
    /// The server's wrong SPIFFE ID, when that is why the handshake was refused.
    pub fn server_id_mismatch(&self) -> Option<&ServerIdMismatch> {
        match self {
            Self::Tls { source, .. } => source.get_ref()?.downcast_ref(),
            _ => None,
        }
    }
}

/// An HTTP response: status and body bytes.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

/// An mTLS client of one server identity: a connection pool shared by all clones.
///
/// Cloning is cheap and clones share the pool, so one client serves many requests in flight.
#[derive(Clone)]
pub struct MtlsClient {
    pool: Pooled,
    connector: SpiffeConnector,
}

impl std::fmt::Debug for MtlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsClient")
            .field("addr", &self.pool.addr)
            .finish()
    }
}

/// Default per-request timeout (connect, send and the whole response body).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on TCP connect plus TLS handshake.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on a response body.
const DEFAULT_MAX_RESPONSE: usize = 64 << 20;
/// How often an idempotent request is re-sent after its connection broke before a response.
const RETRIES: usize = 1;
/// Idle pooled connections are closed after this long (servers close theirs sooner anyway).
const POOL_IDLE: Duration = Duration::from_secs(60);

impl MtlsClient {
    /// A client for the server at `addr` (`host:port`) that must present exactly `server_id`.
    pub fn new(
        addr: impl Into<String>,
        server_id: SpiffeId,
        source: Arc<dyn SvidSource>,
    ) -> Result<Self, rustls::Error> {
        let addr: Arc<str> = addr.into().into();
        let connector =
            SpiffeConnector::new(addr.clone(), server_id, source, DEFAULT_CONNECT_TIMEOUT)?;
        Ok(Self {
            pool: Pooled::new(
                addr.clone(),
                format!("https://{addr}"),
                Connector::Spiffe(connector.clone()),
            ),
            connector,
        })
    }

    /// Sets the per-request timeout (default 30 s). It bounds the whole call: connecting,
    /// sending, retrying and reading the response.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.pool.timeout = timeout;
        self
    }

    /// Sets the bound on TCP connect plus TLS handshake of a new connection (default 10 s).
    /// Starts a new pool (call it before sharing the client).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connector.set_connect_timeout(timeout);
        self.pool.client = build_pool(Connector::Spiffe(self.connector.clone()));
        self
    }

    /// Sets the largest response body accepted (default 64 MiB).
    pub fn with_max_response(mut self, limit: usize) -> Self {
        self.pool.max_response = limit;
        self
    }

    /// The server address.
    pub fn addr(&self) -> &str {
        &self.pool.addr
    }

    /// Sends one request; `body` is sent as JSON when present.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        self.pool
            .send(method, path_and_query, &[], body.map(Bytes::from))
            .await
    }

    /// Sends one request with a JSON `body` that holds secret material (a share): the buffer
    /// is wiped once the connection no longer needs it (a retry resends the same buffer).
    pub async fn send_secret(
        &self,
        method: Method,
        path_and_query: &str,
        body: zeroize::Zeroizing<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        self.pool
            .send(method, path_and_query, &[], Some(Bytes::from_owner(body)))
            .await
    }
}

/// A pooled client of an ordinary (non-SPIFFE) HTTP or HTTPS server at one base URL, such as
/// an OpenBao server: the same pool, timeouts, size cap and retries as [`MtlsClient`], with
/// HTTPS certificates checked by WebPKI against the roots given.
#[derive(Clone)]
pub struct WebClient {
    pool: Pooled,
}

impl std::fmt::Debug for WebClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebClient")
            .field("base", &self.pool.base)
            .finish()
    }
}

/// Why a [`WebClient`] cannot be built for a base URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebClientError {
    /// Not an absolute `http://` or `https://` URL without a path.
    #[error("{0}")]
    BadUrl(&'static str),
    /// An `https://` URL and no roots to check its certificate.
    #[error("an https:// server needs the CA certificates that signed its certificate")]
    NoRoots,
}

impl WebClient {
    /// A client for `base` (`http://host:port` or `https://host:port`, no path). `roots` are
    /// the CA certificates an `https://` server's certificate must chain to; it is required
    /// for `https://`.
    pub fn new(base: &str, roots: Option<rustls::RootCertStore>) -> Result<Self, WebClientError> {
        let uri: http::Uri = base
            .parse()
            .map_err(|_| WebClientError::BadUrl("not a URL like http://127.0.0.1:8200"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(WebClientError::BadUrl("use http:// or https://")),
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(WebClientError::BadUrl(
                "give the server's base address, without a path",
            ));
        }
        let authority = uri
            .authority()
            .ok_or(WebClientError::BadUrl("no host"))?
            .to_string();
        let tls = match (https, roots) {
            (false, _) => None,
            (true, None) => return Err(WebClientError::NoRoots),
            (true, Some(roots)) => Some(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|_| WebClientError::BadUrl("no TLS protocol version available"))?
                .with_root_certificates(roots)
                .with_no_client_auth(),
            ),
        };
        let scheme = if https { "https" } else { "http" };
        let connector = WebConnector::new(tls, DEFAULT_CONNECT_TIMEOUT);
        Ok(Self {
            pool: Pooled::new(
                authority.clone().into(),
                format!("{scheme}://{authority}"),
                Connector::Web(connector),
            ),
        })
    }

    /// Sets the per-request timeout (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.pool.timeout = timeout;
        self
    }

    /// Sets the largest response body accepted (default 64 MiB).
    pub fn with_max_response(mut self, limit: usize) -> Self {
        self.pool.max_response = limit;
        self
    }

    /// The server's `host:port`.
    pub fn authority(&self) -> &str {
        &self.pool.addr
    }

    /// Sends one request with extra `headers` (for example a token); `body` is sent as JSON
    /// when present.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        self.pool
            .send(method, path_and_query, headers, body.map(Bytes::from))
            .await
    }
}

/// The pool and request logic both clients share.
#[derive(Clone)]
struct Pooled {
    /// Names the server in errors.
    addr: Arc<str>,
    /// `SCHEME://AUTHORITY`: the pool key and the `Host`/`:authority` of every request.
    base: Arc<str>,
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
    max_response: usize,
}

impl Pooled {
    fn new(addr: Arc<str>, base: String, connector: Connector) -> Self {
        Self {
            addr,
            base: base.into(),
            client: build_pool(connector),
            timeout: DEFAULT_TIMEOUT,
            max_response: DEFAULT_MAX_RESPONSE,
        }
    }

    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<Response, ClientError> {
        let secs = self.timeout.as_secs();
        tokio::time::timeout(
            self.timeout,
            self.send_retrying(method, path_and_query, headers, body),
        )
        .await
        .map_err(|_| ClientError::Timeout {
            addr: self.addr.to_string(),
            secs,
        })?
    }

    async fn send_retrying(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<Response, ClientError> {
        // Only these may be sent twice: a POST that reached the server before its connection
        // broke may have taken effect.
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE
        );
        let json = body.is_some();
        let body = body.unwrap_or_default();
        let mut attempt = 0;
        loop {
            match self
                .send_once(method.clone(), path_and_query, headers, json, body.clone())
                .await
            {
                Err(Failure::BeforeResponse {
                    retryable: true, ..
                }) if idempotent && attempt < RETRIES => {
                    attempt += 1;
                    tracing::debug!(addr = %self.addr, "connection broke before a response; retrying");
                }
                Err(Failure::BeforeResponse { error, .. } | Failure::Other(error)) => {
                    return Err(error);
                }
                Ok(r) => return Ok(r),
            }
        }
    }

    async fn send_once(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        json: bool,
        body: Bytes,
    ) -> Result<Response, Failure> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.base));
        if json {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Full::new(body))
            // The builder's error names no header value, so no token can leak through it.
            .map_err(|e| Failure::Other(self.http_error(&e)))?;
        let resp = self.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                // The connector's own error, as it was: connect, TLS refusal or timeout.
                Failure::BeforeResponse {
                    retryable: false,
                    error: connect_error(&e).unwrap_or_else(|| self.http_error(&e)),
                }
            } else {
                Failure::BeforeResponse {
                    retryable: true,
                    error: self.http_error(&e),
                }
            }
        })?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), self.max_response)
            .collect()
            .await
            .map_err(|e| {
                Failure::Other(if e.is::<LengthLimitError>() {
                    ClientError::TooLarge {
                        addr: self.addr.to_string(),
                        limit: self.max_response,
                    }
                } else {
                    self.http_error(&*e)
                })
            })?
            .to_bytes();
        Ok(Response { status, body })
    }

    /// An HTTP failure with its whole cause chain (hyper's top-level message alone is vague).
    fn http_error(&self, e: &(dyn std::error::Error + 'static)) -> ClientError {
        let mut detail = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        ClientError::Http {
            addr: self.addr.to_string(),
            detail,
        }
    }
}

/// How one attempt failed.
enum Failure {
    /// No response arrived; `retryable` when the connection broke (not when it was refused).
    BeforeResponse { retryable: bool, error: ClientError },
    /// Anything else: never retried.
    Other(ClientError),
}

fn build_pool(connector: Connector) -> Client<Connector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .build(connector)
}

/// The connector's [`ClientError`] inside a pool error, rebuilt (the pool owns the original).
fn connect_error(e: &hyper_util::client::legacy::Error) -> Option<ClientError> {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(ce) = s.downcast_ref::<ClientError>() {
            // Keep a typed cause callers look for; the rest survives as its message.
            let copy = |io: &std::io::Error| match io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<ServerIdMismatch>())
            {
                Some(m) => std::io::Error::new(io.kind(), m.clone()),
                None => std::io::Error::new(io.kind(), io.to_string()),
            };
            return Some(match ce {
                ClientError::Connect { addr, source } => ClientError::Connect {
                    addr: addr.clone(),
                    source: copy(source),
                },
                ClientError::Tls { addr, source } => ClientError::Tls {
                    addr: addr.clone(),
                    source: copy(source),
                },
                ClientError::Http { addr, detail } => ClientError::Http {
                    addr: addr.clone(),
                    detail: detail.clone(),
                },
                ClientError::Timeout { addr, secs } => ClientError::Timeout {
                    addr: addr.clone(),
                    secs: *secs,
                },
                ClientError::TooLarge { addr, limit } => ClientError::TooLarge {
                    addr: addr.clone(),
                    limit: *limit,
                },
            });
        }
        source = s.source();
    }
    None
}
