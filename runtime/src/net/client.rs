//! [`MtlsClient`]: presents the caller's SVID and accepts only the expected server identity.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;

use crate::svid::SvidSource;
use crate::tls::{PeerRule, client_config};
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
