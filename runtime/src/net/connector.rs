//! The connectors under the client pools: [`SpiffeConnector`] (TCP connect plus the SPIFFE
//! rustls handshake, one server identity per connector) for [`MtlsClient`](super::MtlsClient),
//! and [`WebConnector`] (plain HTTP or WebPKI HTTPS) for [`WebClient`](super::WebClient).
//!
//! The rustls configuration reads the caller's SVID and the trust bundle from the
//! [`SvidSource`] at every handshake (see [`client_config`]), so one configuration serves every
//! new connection across SVID rotations, and the server's SPIFFE ID is checked on each of them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{ClientError, ServerIdMismatch};
use crate::svid::SvidSource;
use crate::tls::{PeerRefusal, PeerRule, client_config};
use spike_core::id::SpiffeId;

/// ALPN offer: HTTP/2 first (many requests on one connection), HTTP/1.1 for servers without it.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Connects to one server address and accepts only one server SPIFFE ID.
#[derive(Clone)]
pub(crate) struct SpiffeConnector {
    addr: Arc<str>,
    server_id: SpiffeId,
    tls: TlsConnector,
    connect_timeout: Duration,
}

impl SpiffeConnector {
    pub(crate) fn new(
        addr: Arc<str>,
        server_id: SpiffeId,
        source: Arc<dyn SvidSource>,
        connect_timeout: Duration,
    ) -> Result<Self, rustls::Error> {
        let mut config = client_config(source, PeerRule::exactly(server_id.clone()))?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            addr,
            server_id,
            tls: TlsConnector::from(Arc::new(config)),
            connect_timeout,
        })
    }

    pub(crate) fn set_connect_timeout(&mut self, timeout: Duration) {
        self.connect_timeout = timeout;
    }

    /// Connects within the connect timeout.
    async fn connect(self) -> Result<Conn, ClientError> {
        tokio::time::timeout(self.connect_timeout, self.connect_inner())
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.addr.to_string(),
                secs: self.connect_timeout.as_secs(),
            })?
    }

    async fn connect_inner(&self) -> Result<Conn, ClientError> {
        let addr = self.addr.to_string();
        let tcp = TcpStream::connect(&*self.addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.clone(),
                source,
            })?;
        // Small JSON requests: do not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        match self.tls.connect(server_name(), tcp).await {
            Ok(tls) => Ok(Conn::tls(tls)),
            Err(source) => Err(ClientError::Tls {
                addr,
                source: self.typed_refusal(source),
            }),
        }
    }

    /// A refusal because the server presented another SPIFFE ID becomes a typed
    /// [`ServerIdMismatch`], so callers (the CLI's hint, Nexus's keeper checks) can tell it
    /// from a broken connection: a user pointed at the wrong service sees what answered.
    fn typed_refusal(&self, e: io::Error) -> io::Error {
        let presented = match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::Other(other)) => match other.0.downcast_ref::<PeerRefusal>() {
                Some(PeerRefusal::NotAllowed { id, .. }) => id.clone(),
                _ => return e,
            },
            _ => return e,
        };
        io::Error::new(
            e.kind(),
            ServerIdMismatch {
                presented,
                expected: self.server_id.clone(),
            },
        )
    }
}

/// rustls needs a server name; SPIFFE authenticates by URI SAN, so the name is never checked.
fn server_name() -> ServerName<'static> {
    ServerName::DnsName(
        rustls::pki_types::DnsName::try_from("spike.invalid")
            .unwrap_or_else(|_| unreachable!("a valid DNS name"))
            .to_owned(),
    )
}

/// What a connection's IO must be for the pool.
trait Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send {}
impl<T: hyper::rt::Read + hyper::rt::Write + Unpin + Send> Io for T {}

/// One connection of either connector, telling the pool whether ALPN chose HTTP/2. Boxed so
/// one type (and one set of IO forwards) serves plain TCP and both TLS flavours.
pub(crate) struct Conn {
    io: Box<dyn Io>,
    h2: bool,
}

impl Conn {
    fn tls(tls: TlsStream<TcpStream>) -> Self {
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Self {
            io: Box::new(TokioIo::new(tls)),
            h2,
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        if self.h2 {
            Connected::new().negotiated_h2()
        } else {
            Connected::new()
        }
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

/// Connects to ordinary (non-SPIFFE) HTTP or HTTPS servers, such as an OpenBao being imported
/// from: the address comes from each request's URI, and HTTPS certificates are checked against
/// the given roots and the URI's host name (WebPKI).
#[derive(Clone)]
pub(crate) struct WebConnector {
    tcp: HttpConnector,
    tls: Option<TlsConnector>,
}

impl WebConnector {
    /// `tls`: the client configuration for `https://` URIs; `None` refuses them.
    pub(crate) fn new(tls: Option<rustls::ClientConfig>, connect_timeout: Duration) -> Self {
        let mut tcp = HttpConnector::new();
        // This connector does TLS itself, so `https://` URIs must reach it.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        Self {
            tcp,
            tls: tls.map(|c| TlsConnector::from(Arc::new(c))),
        }
    }

    async fn connect(mut self, uri: Uri) -> Result<Conn, ClientError> {
        let addr = uri
            .authority()
            .map_or_else(|| uri.to_string(), ToString::to_string);
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let tls = match (https, &self.tls) {
            (false, _) => None,
            (true, Some(tls)) => Some(tls.clone()),
            (true, None) => {
                return Err(ClientError::Http {
                    addr,
                    detail: "https:// needs a TLS configuration".into(),
                });
            }
        };
        let tcp = tower::Service::call(&mut self.tcp, uri.clone())
            .await
            .map_err(|e| ClientError::Connect {
                addr: addr.clone(),
                source: io::Error::other(e.to_string()),
            })?;
        let Some(tls) = tls else {
            return Ok(Conn {
                io: Box::new(tcp),
                h2: false,
            });
        };
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let name = ServerName::try_from(host.to_owned()).map_err(|_| ClientError::Http {
            addr: addr.clone(),
            detail: format!("`{host}` is not a valid TLS server name"),
        })?;
        let tls = tls
            .connect(name, tcp.into_inner())
            .await
            .map_err(|source| ClientError::Tls { addr, source })?;
        Ok(Conn::tls(tls))
    }
}

/// Either connector, so one pool type serves both clients.
#[derive(Clone)]
pub(crate) enum Connector {
    Spiffe(SpiffeConnector),
    Web(WebConnector),
}

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = ClientError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ClientError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match self {
            // The URI only keys the pool: a SPIFFE connector serves one address and identity.
            Self::Spiffe(c) => Box::pin(c.clone().connect()),
            Self::Web(c) => Box::pin(c.clone().connect(uri)),
        }
    }
}
