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

use super::connector::SpiffeConnector;
use crate::id::SpiffeId;
use crate::svid::SvidSource;

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

/// An mTLS client of one server identity: a connection pool shared by all clones.
///
/// Cloning is cheap and clones share the pool, so one client serves many requests in flight.
#[derive(Clone)]
pub struct MtlsClient {
    addr: Arc<str>,
    /// `https://ADDR`: the pool key and the `Host`/`:authority` of every request.
    base: Arc<str>,
    connector: SpiffeConnector,
    pool: Client<SpiffeConnector, Full<Bytes>>,
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
            base: format!("https://{addr}").into(),
            addr,
            pool: build_pool(connector.clone()),
            connector,
            timeout: DEFAULT_TIMEOUT,
            max_response: DEFAULT_MAX_RESPONSE,
        })
    }

    /// Sets the per-request timeout (default 30 s). It bounds the whole call: connecting,
    /// sending, retrying and reading the response.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the bound on TCP connect plus TLS handshake of a new connection (default 10 s).
    /// Starts a new pool (call it before sharing the client).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connector.set_connect_timeout(timeout);
        self.pool = build_pool(self.connector.clone());
        self
    }

    /// Sets the largest response body accepted (default 64 MiB).
    pub fn with_max_response(mut self, limit: usize) -> Self {
        self.max_response = limit;
        self
    }

    /// The server address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one request; `body` is sent as JSON when present.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        let secs = self.timeout.as_secs();
        tokio::time::timeout(
            self.timeout,
            self.send_retrying(method, path_and_query, body),
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
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        // Only these may be sent twice: a POST that reached the server before its connection
        // broke may have taken effect.
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE
        );
        let json = body.is_some();
        let body = Bytes::from(body.unwrap_or_default());
        let mut attempt = 0;
        loop {
            match self
                .send_once(method.clone(), path_and_query, json, body.clone())
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
        json: bool,
        body: Bytes,
    ) -> Result<Response, Failure> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.base));
        if json {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| Failure::Other(self.http_error(&e)))?;
        let resp = self.pool.request(req).await.map_err(|e| {
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

fn build_pool(connector: SpiffeConnector) -> Client<SpiffeConnector, Full<Bytes>> {
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
            let copy = |io: &std::io::Error| std::io::Error::new(io.kind(), io.to_string());
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
