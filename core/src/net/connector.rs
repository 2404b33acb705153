//! The connector under [`MtlsClient`](super::MtlsClient)'s pool: TCP connect plus the SPIFFE
//! rustls handshake, one server identity per connector.
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
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::ClientError;
use crate::id::SpiffeId;
use crate::svid::{SvidSource, leaf_identity};
use crate::tls::{PeerRule, client_config};

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
    async fn connect(self) -> Result<TlsConn, ClientError> {
        tokio::time::timeout(self.connect_timeout, self.connect_inner())
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.addr.to_string(),
                secs: self.connect_timeout.as_secs(),
            })?
    }

    async fn connect_inner(&self) -> Result<TlsConn, ClientError> {
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
            Ok(tls) => Ok(TlsConn(TokioIo::new(tls))),
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
            Ok((id, _)) if id != self.server_id => io::Error::new(
                original.kind(),
                format!(
                    "the server presented SPIFFE ID {id}, not the expected {} ({original})",
                    self.server_id
                ),
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

impl tower::Service<Uri> for SpiffeConnector {
    type Response = TlsConn;
    type Error = ClientError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsConn, ClientError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// The URI only keys the pool: a connector serves exactly one address and identity.
    fn call(&mut self, _uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect())
    }
}

/// One verified mTLS connection, telling the pool whether ALPN chose HTTP/2.
pub(crate) struct TlsConn(TokioIo<TlsStream<TcpStream>>);

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        let (_, session) = self.0.inner().get_ref();
        if session.alpn_protocol() == Some(b"h2") {
            Connected::new().negotiated_h2()
        } else {
            Connected::new()
        }
    }
}

impl hyper::rt::Read for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
}
