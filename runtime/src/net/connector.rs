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
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{ClientError, ServerIdMismatch};
use crate::svid::{SvidSource, leaf_identity};
use crate::tls::{PeerRule, client_config};
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
            Err(source) => {
                let source = if rejected_server_certificate(&source) {
                    self.explain_refusal(source).await
                } else {
                    source
                };
                Err(ClientError::Tls { addr, source })
            }
        }
    }

    /// Says which SPIFFE ID the refused server presented, when that is the reason: a user
    /// pointed at the wrong service sees what answered instead of a bare verifier code.
    ///
    /// rustls's error carries no certificate, and the verifier lives in `tls.rs`, so this opens
    /// a second connection whose verifier only records the server's certificate and then
    /// refuses it. The handshake stops there, before this side sends its own certificate.
    async fn explain_refusal(&self, original: io::Error) -> io::Error {
        let Some(leaf) = probe_server_certificate(&self.addr).await else {
            return original;
        };
        match leaf_identity(&leaf) {
            Ok((presented, _)) if presented != self.server_id => io::Error::new(
                original.kind(),
                ServerIdMismatch {
                    presented,
                    expected: self.server_id.clone(),
                },
            ),
            Ok(_) => original,
            Err(detail) => io::Error::new(
                original.kind(),
                format!("the server's certificate is not an X.509-SVID: {detail} ({original})"),
            ),
        }
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

/// Whether this side refused the server's certificate (as opposed to the server refusing us or
/// the connection breaking).
fn rejected_server_certificate(e: &io::Error) -> bool {
    matches!(
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(_))
    )
}

/// Reads the leaf certificate a server presents, without trusting or completing anything.
async fn probe_server_certificate(addr: &str) -> Option<CertificateDer<'static>> {
    let recorder = Arc::new(Recorder::default());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .ok()?
    .dangerous()
    .with_custom_certificate_verifier(recorder.clone())
    .with_no_client_auth();
    let tcp = tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let connector = TlsConnector::from(Arc::new(config));
    // Always fails: the recorder refuses every certificate.
    let _ = tokio::time::timeout(PROBE_TIMEOUT, connector.connect(server_name(), tcp)).await;
    recorder.seen.lock().ok()?.take()
}

/// How long the diagnostic probe may take; it only improves an error message.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A verifier that keeps the server's leaf certificate and refuses it.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(end_entity.clone().into_owned());
        }
        Err(rustls::Error::General("diagnostic probe only".into()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("diagnostic probe only".into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("diagnostic probe only".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
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
