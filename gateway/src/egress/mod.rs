//! Egress: from a destination the token allows to bytes on the wire, without letting DNS
//! choose where the value goes.
//!
//! For each request the name is resolved once; every answer is checked against the route's
//! [`AddressPolicy`] (one refused answer refuses the request: a name that resolves to a public
//! and a private address is a rebinding attempt or a misconfiguration, and either way the value
//! must not go there); then the gateway connects to exactly an address it checked, never
//! resolving again between check and dial. Upstream TLS is verified for the name (system roots,
//! or a route's CA file). Connections are pooled per (authority, address, TLS), so a pooled
//! connection is only ever reused for an address that passed the check, and a name whose
//! answers change gets new connections checked anew.
//!
//! The gateway sets the upstream request's `Host` (HTTP/1.1) or `:authority` (HTTP/2) itself,
//! from the destination it checked; nothing the agent sent decides where the bytes go.

pub mod address;
pub mod resolve;
pub mod tls;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

pub use address::{AddressClass, AddressPolicy, classify};
pub use resolve::{Resolve, StaticResolver, SystemResolver};

/// A boxed error for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type the gateway sends upstream.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Where one request goes: a normalized host (IPv6 literals in brackets), a port, and whether
/// the connection is TLS.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The host, as a destination normalizes it.
    pub host: &'a str,
    /// The port.
    pub port: u16,
    /// `https` (true) or plain `http`.
    pub tls: bool,
}

impl Target<'_> {
    /// `host[:port]`, without the port when it is the scheme's default.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.to_owned()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn literal(&self) -> Option<IpAddr> {
        let h = self
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(self.host);
        h.parse().ok()
    }
}

/// How one route may connect.
#[derive(Debug, Clone)]
pub struct RoutePolicy {
    /// Addresses it may reach beyond the public ones.
    pub addresses: AddressPolicy,
    /// Upstream TLS trust (system roots or the route's CA file).
    pub tls: Arc<rustls::ClientConfig>,
}

/// Why a request could not be sent upstream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// The name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The name.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The name resolved to no address.
    #[error("{host} resolves to no address")]
    NoAddress {
        /// The name.
        host: String,
    },
    /// An answer is an address the route may not reach.
    #[error("{host} resolves to {addr}, a {class} address this route may not reach")]
    AddressNotAllowed {
        /// The name.
        host: String,
        /// The refused address.
        addr: IpAddr,
        /// Why it is refused.
        class: AddressClass,
    },
    /// No checked address accepted a connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The last address tried.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// The host is not a name TLS can verify.
    #[error("{host} is not a valid TLS server name")]
    BadName {
        /// The host.
        host: String,
    },
    /// The TLS handshake failed (an unverifiable certificate, for example).
    #[error("TLS to {host} failed: {source}")]
    Tls {
        /// The host.
        host: String,
        /// The error (rustls's, inside).
        source: io::Error,
    },
    /// The HTTP exchange with the upstream failed.
    #[error("upstream HTTP exchange failed: {0}")]
    Http(#[source] hyper::Error),
    /// The request cannot be sent as given (a bad path, for example).
    #[error("cannot build the upstream request: {0}")]
    Request(String),
}

impl EgressError {
    /// The refusal code the gateway answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AddressNotAllowed { .. } => "address_not_allowed",
            Self::Request(_) => "bad_request",
            _ => "upstream_unavailable",
        }
    }
}

/// Limits of the connection pool and of dialing.
#[derive(Debug, Clone, Copy)]
pub struct EgressLimits {
    /// Per address tried.
    pub connect_timeout: Duration,
    /// Including the TLS handshake.
    pub handshake_timeout: Duration,
    /// Idle connections kept per (authority, address).
    pub max_idle_per_key: usize,
    /// An idle connection older than this is closed rather than reused.
    pub idle_timeout: Duration,
}

impl Default for EgressLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            max_idle_per_key: 32,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    authority: String,
    addr: SocketAddr,
    tls: bool,
}

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Self::H1(s) => s.is_closed(),
            Self::H2(s) => s.is_closed(),
        }
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Connects to upstreams and sends requests, pooling connections.
pub struct Egress {
    resolver: Arc<dyn Resolve>,
    limits: EgressLimits,
    pool: Mutex<HashMap<Key, Vec<Idle>>>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// What a request got: the upstream's response and the address it came from.
#[derive(Debug)]
pub struct Sent {
    /// The response (its body streams from the upstream).
    pub response: Response<Incoming>,
    /// The address the gateway connected to.
    pub addr: SocketAddr,
}

impl Egress {
    /// An egress resolving with `resolver`.
    pub fn new(resolver: Arc<dyn Resolve>, limits: EgressLimits) -> Self {
        Self {
            resolver,
            limits,
            pool: Mutex::new(HashMap::new()),
        }
    }

    /// The addresses of `target` the route may reach, in the resolver's order: all of them,
    /// or an error naming the first refused one.
    pub async fn checked_addresses(
        &self,
        target: Target<'_>,
        policy: &AddressPolicy,
    ) -> Result<Vec<IpAddr>, EgressError> {
        let ips =
            match target.literal() {
                Some(ip) => vec![ip],
                None => self.resolver.resolve(target.host).await.map_err(|source| {
                    EgressError::Resolve {
                        host: target.host.to_owned(),
                        source,
                    }
                })?,
            };
        if ips.is_empty() {
            return Err(EgressError::NoAddress {
                host: target.host.to_owned(),
            });
        }
        if let Some((addr, class)) = ips
            .iter()
            .find_map(|ip| policy.refuses(*ip).map(|c| (*ip, c)))
        {
            return Err(EgressError::AddressNotAllowed {
                host: target.host.to_owned(),
                addr,
                class,
            });
        }
        Ok(ips)
    }

    /// Sends `req` (whose URI holds the path and query only; its `Host` is replaced) to
    /// `target` under `policy`.
    pub async fn send(
        &self,
        target: Target<'_>,
        policy: &RoutePolicy,
        mut req: Request<Body>,
    ) -> Result<Sent, EgressError> {
        let ips = self.checked_addresses(target, &policy.addresses).await?;
        let authority = target.authority();
        let (key, sender) = self.connection(target, &authority, &ips, policy).await?;
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let response = match sender {
            Sender::H1(mut s) => {
                *req.uri_mut() = Uri::from(path);
                *req.version_mut() = Version::HTTP_11;
                let host = HeaderValue::from_str(&authority)
                    .map_err(|e| EgressError::Request(e.to_string()))?;
                req.headers_mut().insert(http::header::HOST, host);
                s.ready().await.map_err(EgressError::Http)?;
                let fut = s.send_request(req);
                // Back in the pool at once: it is ready again (and taken again) only once
                // this response's body has been read to its end.
                self.check_in(key.clone(), Sender::H1(s));
                fut.await.map_err(EgressError::Http)?
            }
            Sender::H2(mut s) => {
                let scheme = if target.tls {
                    Scheme::HTTPS
                } else {
                    Scheme::HTTP
                };
                let authority = Authority::try_from(authority.as_str())
                    .map_err(|e| EgressError::Request(e.to_string()))?;
                *req.uri_mut() = Uri::builder()
                    .scheme(scheme)
                    .authority(authority)
                    .path_and_query(path)
                    .build()
                    .map_err(|e| EgressError::Request(e.to_string()))?;
                *req.version_mut() = Version::HTTP_2;
                req.headers_mut().remove(http::header::HOST);
                s.ready().await.map_err(EgressError::Http)?;
                let fut = s.send_request(req);
                self.check_in(key.clone(), Sender::H2(s));
                fut.await.map_err(EgressError::Http)?
            }
        };
        Ok(Sent {
            response,
            addr: key.addr,
        })
    }

    /// A pooled connection to one of `ips`, or a new one to the first that accepts.
    async fn connection(
        &self,
        target: Target<'_>,
        authority: &str,
        ips: &[IpAddr],
        policy: &RoutePolicy,
    ) -> Result<(Key, Sender), EgressError> {
        let keys: Vec<Key> = ips
            .iter()
            .map(|ip| Key {
                authority: authority.to_owned(),
                addr: SocketAddr::new(*ip, target.port),
                tls: target.tls,
            })
            .collect();
        for key in &keys {
            if let Some(s) = self.check_out(key) {
                return Ok((key.clone(), s));
            }
        }
        let mut last = None;
        for key in keys {
            // Boxed: the dial (TCP, TLS, HTTP/2 handshakes) is a large future, and inline it
            // would make every request's future that large, pooled connection or not; every
            // request's future is moved several times on its way to the runtime.
            match Box::pin(self.dial(target, key.addr, policy)).await {
                Ok(s) => return Ok((key, s)),
                Err(e @ EgressError::Connect { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| EgressError::NoAddress {
            host: target.host.to_owned(),
        }))
    }

    async fn dial(
        &self,
        target: Target<'_>,
        addr: SocketAddr,
        policy: &RoutePolicy,
    ) -> Result<Sender, EgressError> {
        let connect_err = |source| EgressError::Connect { addr, source };
        let tcp = tokio::time::timeout(self.limits.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_err(io::ErrorKind::TimedOut.into()))?
            .map_err(connect_err)?;
        let _ = tcp.set_nodelay(true);
        let handshake = async {
            if !target.tls {
                return http1_handshake(tcp).await;
            }
            let name = match target.literal() {
                Some(ip) => ServerName::IpAddress(ip.into()),
                None => ServerName::try_from(target.host.to_owned()).map_err(|_| {
                    EgressError::BadName {
                        host: target.host.to_owned(),
                    }
                })?,
            };
            let tls = tokio_rustls::TlsConnector::from(policy.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|source| EgressError::Tls {
                    host: target.host.to_owned(),
                    source,
                })?;
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .map_err(EgressError::Http)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(Sender::H2(sender))
            } else {
                http1_handshake(tls).await
            }
        };
        tokio::time::timeout(self.limits.handshake_timeout, handshake)
            .await
            .map_err(|_| connect_err(io::ErrorKind::TimedOut.into()))?
    }

    fn check_out(&self, key: &Key) -> Option<Sender> {
        let mut pool = self.pool.lock().ok()?;
        let idle = pool.get_mut(key)?;
        let now = Instant::now();
        idle.retain(|i| !i.sender.is_closed() && now - i.since < self.limits.idle_timeout);
        let found = idle.iter().position(|i| match &i.sender {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        })?;
        match &idle[found].sender {
            // Multiplexed: it stays in the pool for others.
            Sender::H2(s) => Some(Sender::H2(s.clone())),
            Sender::H1(_) => Some(idle.swap_remove(found).sender),
        }
    }

    fn check_in(&self, key: Key, sender: Sender) {
        let Ok(mut pool) = self.pool.lock() else {
            return;
        };
        let idle = pool.entry(key).or_default();
        if let Sender::H2(_) = sender
            && idle
                .iter()
                .any(|i| matches!(i.sender, Sender::H2(_)) && !i.sender.is_closed())
        {
            return;
        }
        if idle.len() < self.limits.max_idle_per_key {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Connections the pool holds (idle or in use), for metrics and tests.
    pub fn pooled(&self) -> usize {
        self.pool
            .lock()
            .map(|p| p.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

async fn http1_handshake<T>(io: T) -> Result<Sender, EgressError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(EgressError::Http)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Sender::H1(sender))
}

#[cfg(test)]
mod tests;
