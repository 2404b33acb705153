//! SPIKE's identity layer over real sockets: `serve_mtls` and `MtlsClient` with the SPIFFE
//! rustls verifiers, SVID rotation from PEM files and from a real Workload API, and
//! connections closed when the peer's certificate expires.
//!
//! Everything runs in-process on 127.0.0.1 with real rustls; certificates come from the dev
//! agent's `CertificateAuthority`. Refusals are checked against positive controls that use the
//! same machinery with a good certificate, so a test cannot pass because the harness is broken.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::routing::get;
use axum::{Extension, Router};
use http::{Method, StatusCode};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, HandshakeKind, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use spike_agent::{AgentConfig, CertificateAuthority, IssuedSvid, Registration};
use spike_core::id::{SpiffeId, TrustDomain};
use spike_runtime::net::{
    ClientError, ConnLimits, MtlsClient, handshake_failures, render_handshake_metrics, serve_mtls,
    serve_tls_optional_client_auth,
};
use spike_runtime::svid::{
    Identity, PemFileSource, PemPaths, StaticSource, SvidError, SvidSource, WorkloadApiSource,
};
use spike_runtime::tls::{
    OptionalClientAuth, PeerIdentity, PeerRule, Unauthenticated, server_config,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Upper bound of every wait in these tests.
const WAIT: Duration = Duration::from_secs(20);
const HOUR: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn td() -> TrustDomain {
    TrustDomain::new("spike.test").unwrap()
}

fn id(path: &str) -> SpiffeId {
    td().id(path).unwrap()
}

fn ca() -> CertificateAuthority {
    CertificateAuthority::new(&td()).unwrap()
}

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

fn identity(svid: &IssuedSvid) -> Identity {
    Identity::from_pem(
        &td(),
        svid.chain_pem.as_bytes(),
        svid.key_pem.as_bytes(),
        svid.bundle_pem.as_bytes(),
    )
    .unwrap()
}

fn source(svid: &IssuedSvid) -> Arc<dyn SvidSource> {
    Arc::new(StaticSource::new(td(), identity(svid)))
}

/// A source holding `svid` for `path`, valid for an hour.
fn source_for(ca: &CertificateAuthority, path: &str) -> Arc<dyn SvidSource> {
    source(&ca.issue(&id(path), HOUR).unwrap())
}

fn client(addr: SocketAddr, server: &str, src: Arc<dyn SvidSource>) -> MtlsClient {
    MtlsClient::new(addr.to_string(), id(server), src)
        .unwrap()
        .with_timeout(Duration::from_secs(10))
}

/// `GET /whoami` through `client`.
async fn whoami(client: &MtlsClient) -> Result<(StatusCode, String), ClientError> {
    let r = client.send(Method::GET, "/whoami", None).await?;
    Ok((r.status, String::from_utf8(r.body.to_vec()).unwrap()))
}

/// Asserts that a request failed because TLS refused it (not a timeout or a refused TCP
/// connection, which would mean the test proves nothing).
#[track_caller]
fn assert_refused(r: Result<(StatusCode, String), ClientError>) {
    match r {
        Err(ClientError::Tls { .. } | ClientError::Http { .. }) => {}
        other => panic!("expected a TLS refusal, got {other:?}"),
    }
}

/// An mTLS test server: `serve_mtls` with an app that echoes the caller's verified SPIFFE ID
/// at `/whoami` and counts the requests that reached it.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(src: Arc<dyn SvidSource>, rule: PeerRule) -> Self {
        Self::start_with(src, rule, ConnLimits::default()).await
    }

    async fn start_with(src: Arc<dyn SvidSource>, rule: PeerRule, limits: ConnLimits) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = Arc::new(server_config(src, rule).unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = Router::new().route(
            "/whoami",
            get(move |Extension(peer): Extension<PeerIdentity>| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    peer.id.to_string()
                }
            }),
        );
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_mtls(listener, tls, app, limits, async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            hits,
            stop: Some(stop),
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    async fn shutdown(mut self) {
        drop(self.stop.take());
        bounded("server shutdown", &mut self.task).await.unwrap();
    }
}

/// A server-certificate verifier that accepts any certificate (the signature over the
/// handshake is still checked). It stands for a client that trusts whatever it is shown, so a
/// refusal it meets can only come from the server's side.
#[derive(Debug)]
struct AcceptAnyServer(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used here".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A raw TLS client presenting an arbitrary certificate chain (which `Identity` would refuse
/// to load) and trusting any server.
fn raw_connector(chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> TlsConnector {
    let chain = chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8));
    let config = rustls::ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(
            ring().signature_verification_algorithms,
        )))
        .with_client_auth_cert(chain, key)
        .unwrap();
    TlsConnector::from(Arc::new(config))
}

fn svid_connector(svid: &IssuedSvid) -> TlsConnector {
    raw_connector(svid.chain_der.clone(), svid.key_der.to_vec())
}

async fn raw_handshake(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("spike.invalid").unwrap();
    connector.connect(name, tcp).await
}

/// Reads one HTTP/1.1 response with a `content-length` body; returns status and body.
async fn read_response(tls: &mut TlsStream<TcpStream>) -> std::io::Result<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                return Ok((status, body));
            }
        }
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Handshakes with `connector` and sends `GET /whoami` on a kept-alive connection.
async fn raw_whoami(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<(TlsStream<TcpStream>, u16, String)> {
    let mut tls = raw_handshake(connector, addr).await?;
    tls.write_all(b"GET /whoami HTTP/1.1\r\nhost: spike.invalid\r\n\r\n")
        .await?;
    let (status, body) = read_response(&mut tls).await?;
    Ok((tls, status, body))
}

/// The leaf certificate the server at `addr` presents to a new handshake.
async fn server_leaf(connector: &TlsConnector, addr: SocketAddr) -> Vec<u8> {
    let tls = bounded("handshake", raw_handshake(connector, addr))
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The certificate a [`test_tls_server`] presents; swappable while it runs.
#[derive(Debug)]
struct SwapCert(std::sync::Mutex<Arc<CertifiedKey>>);

impl SwapCert {
    fn new(chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> Arc<Self> {
        Arc::new(Self(std::sync::Mutex::new(certified(chain, key_pkcs8))))
    }

    fn set(&self, chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) {
        *self.0.lock().unwrap() = certified(chain, key_pkcs8);
    }
}

impl ResolvesServerCert for SwapCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.lock().unwrap().clone())
    }
}

fn certified(chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> Arc<CertifiedKey> {
    let chain = chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8));
    Arc::new(CertifiedKey::from_der(chain, key, &ring()).unwrap())
}

/// A plain rustls server with rustls' defaults (session resumption on, no client auth) that
/// answers every HTTP request with `200 ok`; counts the handshakes it completed. With
/// `close` it closes the connection after each response, so clients reconnect.
async fn test_tls_server(cert: Arc<SwapCert>, close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let config = rustls::ServerConfig::builder_with_provider(ring())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(cert);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let count = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while let Ok(n) = tls.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let resp: &[u8] = if close {
                            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
                        } else {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                        };
                        if tls.write_all(resp).await.is_err() || close {
                            let _ = tls.shutdown().await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, handshakes)
}

/// A [`test_tls_server`] presenting a fixed certificate and keeping connections open.
async fn fixed_cert_server(
    chain: Vec<Vec<u8>>,
    key_pkcs8: Vec<u8>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    test_tls_server(SwapCert::new(chain, key_pkcs8), false).await
}

/// How a hand-made certificate departs from a valid X.509-SVID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Defect {
    /// None: a valid SVID (the positive control).
    None,
    /// BasicConstraints CA:true.
    IsCa,
    /// KeyUsage keyEncipherment only (no digitalSignature).
    NoDigitalSignature,
    /// KeyUsage digitalSignature plus keyCertSign.
    CertSignUsage,
    /// Two URI SANs.
    TwoUriSans,
    /// No SAN at all.
    NoSan,
    /// A URI SAN that is not a SPIFFE ID.
    HttpsUri,
    /// The trust domain's own ID (no path).
    NoPath,
}

const DEFECTS: [Defect; 7] = [
    Defect::IsCa,
    Defect::NoDigitalSignature,
    Defect::CertSignUsage,
    Defect::TwoUriSans,
    Defect::NoSan,
    Defect::HttpsUri,
    Defect::NoPath,
];

fn uri(s: &str) -> SanType {
    SanType::URI(Ia5String::try_from(s).unwrap())
}

/// A certificate for `spiffe_id` signed by `ca` with the given defect; returns (DER, PKCS#8 key).
fn custom_cert(ca: &CertificateAuthority, spiffe_id: &str, defect: Defect) -> (Vec<u8>, Vec<u8>) {
    let now = time::OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.not_before = now - time::Duration::seconds(10);
    params.not_after = now + time::Duration::hours(1);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "identity tests");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![uri(spiffe_id)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    match defect {
        Defect::None => {}
        Defect::IsCa => params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained),
        Defect::NoDigitalSignature => params.key_usages = vec![KeyUsagePurpose::KeyEncipherment],
        Defect::CertSignUsage => params.key_usages.push(KeyUsagePurpose::KeyCertSign),
        Defect::TwoUriSans => params
            .subject_alt_names
            .push(uri("spiffe://spike.test/other")),
        Defect::NoSan => params.subject_alt_names.clear(),
        Defect::HttpsUri => params.subject_alt_names = vec![uri("https://spike.test/app")],
        Defect::NoPath => params.subject_alt_names = vec![uri("spiffe://spike.test")],
    }
    let key = KeyPair::generate().unwrap();
    let der = ca.sign_custom(&params, &key).unwrap();
    (der, key.serialize_der())
}

// ---------------------------------------------------------------------------------------------
// mTLS authentication and authorization
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mtls_succeeds_between_the_right_identities() {
    let ca = ca();
    let server = Server::start(
        source_for(&ca, "/spike/nexus"),
        PeerRule::OneOf(vec![id("/app/a"), id("/app/b")]),
    )
    .await;
    for path in ["/app/a", "/app/b"] {
        let c = client(server.addr, "/spike/nexus", source_for(&ca, path));
        let (status, body) = whoami(&c).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("spiffe://spike.test{path}"));
        // The kept-alive connection serves a second request.
        assert_eq!(whoami(&c).await.unwrap().1, body);
    }
    assert_eq!(server.hits(), 4);
    server.shutdown().await;
}

#[tokio::test]
async fn server_refuses_a_client_id_outside_its_rule() {
    let ca = ca();
    let server = Server::start(
        source_for(&ca, "/spike/nexus"),
        PeerRule::OneOf(vec![id("/app/a"), id("/app/b")]),
    )
    .await;
    for path in ["/app/c", "/app/a/sub", "/app", "/spike/keeper/1"] {
        let c = client(server.addr, "/spike/nexus", source_for(&ca, path));
        assert_refused(whoami(&c).await);
    }
    assert_eq!(server.hits(), 0, "a refused client reached the application");
    // The server still serves a permitted client afterwards.
    let ok = client(server.addr, "/spike/nexus", source_for(&ca, "/app/a"));
    assert_eq!(whoami(&ok).await.unwrap().0, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn any_in_trust_domain_admits_every_svid_of_the_domain() {
    let ca = ca();
    let server = Server::start(source_for(&ca, "/spike/nexus"), PeerRule::AnyInTrustDomain).await;
    for path in ["/ns/web/sa/frontend", "/spike/pilot/role/superuser"] {
        let c = client(server.addr, "/spike/nexus", source_for(&ca, path));
        assert_eq!(
            whoami(&c).await.unwrap().1,
            format!("spiffe://spike.test{path}")
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn client_refuses_a_server_with_another_id() {
    let ca = ca();
    let server = Server::start(
        source_for(&ca, "/spike/keeper/1"),
        PeerRule::AnyInTrustDomain,
    )
    .await;
    let c = client(server.addr, "/spike/nexus", source_for(&ca, "/app/a"));
    match whoami(&c).await {
        // The message names the ID the server presented, so a user can see what went wrong.
        Err(e @ ClientError::Tls { .. }) => assert!(
            e.to_string().contains(
                "presented spiffe://spike.test/spike/keeper/1, expected spiffe://spike.test/spike/nexus"
            ),
            "{e}"
        ),
        other => panic!("the client should refuse the server at TLS, got {other:?}"),
    }
    assert_eq!(server.hits(), 0);
    // Positive control: expecting the right ID works.
    let c = client(server.addr, "/spike/keeper/1", source_for(&ca, "/app/a"));
    assert_eq!(whoami(&c).await.unwrap().0, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn client_from_another_trust_domain_is_refused() {
    let ca = ca();
    let server = Server::start(source_for(&ca, "/spike/nexus"), PeerRule::AnyInTrustDomain).await;
    // A foreign CA and SVID; the client trusts any server, so only the server can refuse.
    let evil_td = TrustDomain::new("evil.test").unwrap();
    let evil = CertificateAuthority::new(&evil_td)
        .unwrap()
        .issue(&evil_td.id("/app/a").unwrap(), HOUR)
        .unwrap();
    let r = bounded(
        "foreign client",
        raw_whoami(&svid_connector(&evil), server.addr),
    )
    .await;
    assert!(r.is_err(), "a foreign-domain client got an answer");
    assert_eq!(server.hits(), 0);

    // Positive control: the same raw client with one of our SVIDs gets through.
    let good = ca.issue(&id("/app/a"), HOUR).unwrap();
    let (_, status, body) = bounded(
        "good client",
        raw_whoami(&svid_connector(&good), server.addr),
    )
    .await
    .unwrap();
    assert_eq!((status, body.as_str()), (200, "spiffe://spike.test/app/a"));
    server.shutdown().await;
}

#[tokio::test]
async fn forged_leaf_from_another_ca_of_the_same_domain_is_refused() {
    let ca = ca();
    let forger = CertificateAuthority::new(&td()).unwrap();
    let real = ca.issue(&id("/app/a"), HOUR).unwrap();
    let forged = forger.issue(&id("/app/a"), HOUR).unwrap();

    // Forged client: the forged leaf with our real bundle, so it trusts the real server and
    // only the server's check can stop it.
    let server = Server::start(source_for(&ca, "/spike/nexus"), PeerRule::AnyInTrustDomain).await;
    let forged_identity = Identity::from_pem(
        &td(),
        forged.chain_pem.as_bytes(),
        forged.key_pem.as_bytes(),
        real.bundle_pem.as_bytes(),
    )
    .unwrap();
    let src: Arc<dyn SvidSource> = Arc::new(StaticSource::new(td(), forged_identity));
    assert_refused(whoami(&client(server.addr, "/spike/nexus", src)).await);
    assert_eq!(server.hits(), 0);
    assert_eq!(
        whoami(&client(server.addr, "/spike/nexus", source(&real)))
            .await
            .unwrap()
            .0,
        StatusCode::OK
    );
    server.shutdown().await;

    // Forged server: a server presenting a forged Nexus SVID is refused by a real client.
    let forged_nexus = forger.issue(&id("/spike/nexus"), HOUR).unwrap();
    let (addr, handshakes) = fixed_cert_server(
        forged_nexus.chain_der.clone(),
        forged_nexus.key_der.to_vec(),
    )
    .await;
    match whoami(&client(addr, "/spike/nexus", source(&real))).await {
        Err(ClientError::Tls { .. }) => {}
        other => panic!("the client should refuse a forged server, got {other:?}"),
    }
    assert_eq!(handshakes.load(Ordering::SeqCst), 0);
    // Positive control: the same kind of server with a real SVID is accepted.
    let real_nexus = ca.issue(&id("/spike/nexus"), HOUR).unwrap();
    let (addr, _) =
        fixed_cert_server(real_nexus.chain_der.clone(), real_nexus.key_der.to_vec()).await;
    let (status, body) = whoami(&client(addr, "/spike/nexus", source(&real)))
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn expired_and_not_yet_valid_client_certificates_are_refused() {
    let ca = ca();
    let server = Server::start(source_for(&ca, "/spike/nexus"), PeerRule::AnyInTrustDomain).await;
    let now = SystemTime::now();
    let expired = ca
        .issue_with_validity(&id("/app/a"), now - 2 * HOUR, now - HOUR)
        .unwrap();
    let future = ca
        .issue_with_validity(&id("/app/a"), now + HOUR, now + 2 * HOUR)
        .unwrap();
    for svid in [&expired, &future] {
        assert_refused(whoami(&client(server.addr, "/spike/nexus", source(svid))).await);
    }
    assert_eq!(server.hits(), 0);
    server.shutdown().await;

    // And a client refuses an expired server certificate.
    let expired_nexus = ca
        .issue_with_validity(&id("/spike/nexus"), now - 2 * HOUR, now - HOUR)
        .unwrap();
    let server = Server::start(source(&expired_nexus), PeerRule::AnyInTrustDomain).await;
    match whoami(&client(
        server.addr,
        "/spike/nexus",
        source_for(&ca, "/app/a"),
    ))
    .await
    {
        Err(ClientError::Tls { .. }) => {}
        other => panic!("the client should refuse an expired server, got {other:?}"),
    }
    assert_eq!(server.hits(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn server_refuses_client_certificates_that_are_not_svids() {
    let ca = ca();
    let server = Server::start(source_for(&ca, "/spike/nexus"), PeerRule::AnyInTrustDomain).await;

    // Positive control: a hand-made certificate without defect is accepted.
    let (der, key) = custom_cert(&ca, "spiffe://spike.test/app/a", Defect::None);
    let (_, status, body) = bounded(
        "control",
        raw_whoami(&raw_connector(vec![der], key), server.addr),
    )
    .await
    .unwrap();
    assert_eq!((status, body.as_str()), (200, "spiffe://spike.test/app/a"));
    assert_eq!(server.hits(), 1);

    for defect in DEFECTS {
        let (der, key) = custom_cert(&ca, "spiffe://spike.test/app/a", defect);
        let r = bounded(
            "client",
            raw_whoami(&raw_connector(vec![der], key), server.addr),
        )
        .await;
        assert!(
            r.is_err(),
            "{defect:?}: the server accepted the certificate"
        );
    }
    assert_eq!(
        server.hits(),
        1,
        "a refused certificate reached the application"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn client_refuses_server_certificates_that_are_not_svids() {
    let ca = ca();
    let me = source_for(&ca, "/app/a");

    let (der, key) = custom_cert(&ca, "spiffe://spike.test/spike/nexus", Defect::None);
    let (addr, _) = fixed_cert_server(vec![der], key).await;
    assert_eq!(
        whoami(&client(addr, "/spike/nexus", me.clone()))
            .await
            .unwrap()
            .0,
        StatusCode::OK
    );

    for defect in DEFECTS {
        let (der, key) = custom_cert(&ca, "spiffe://spike.test/spike/nexus", defect);
        let (addr, handshakes) = fixed_cert_server(vec![der], key).await;
        match whoami(&client(addr, "/spike/nexus", me.clone())).await {
            Err(ClientError::Tls { .. }) => {}
            other => panic!("{defect:?}: the client should refuse the server, got {other:?}"),
        }
        assert_eq!(handshakes.load(Ordering::SeqCst), 0, "{defect:?}");
    }
}

#[tokio::test]
async fn identity_refuses_unusable_svids() {
    let ca = ca();
    let svid = ca.issue(&id("/app/a"), HOUR).unwrap();
    let other = ca.issue(&id("/app/b"), HOUR).unwrap();
    let load = |chain: &str, key: &str, bundle: &str| {
        Identity::from_pem(&td(), chain.as_bytes(), key.as_bytes(), bundle.as_bytes())
    };
    // Control.
    let ok = load(&svid.chain_pem, &svid.key_pem, &svid.bundle_pem).unwrap();
    assert_eq!(ok.id(), &id("/app/a"));
    assert_eq!(ok.not_after(), svid.not_after);
    assert_eq!(ok.bundle()[0].as_ref(), svid.bundle_der.as_slice());

    // Another trust domain than configured.
    let err = Identity::from_pem(
        &TrustDomain::new("other.test").unwrap(),
        svid.chain_pem.as_bytes(),
        svid.key_pem.as_bytes(),
        svid.bundle_pem.as_bytes(),
    )
    .unwrap_err();
    assert!(matches!(err, SvidError::WrongTrustDomain { .. }), "{err}");
    // A key that is not the certificate's.
    let err = load(&svid.chain_pem, &other.key_pem, &svid.bundle_pem).unwrap_err();
    assert!(matches!(err, SvidError::Invalid { .. }), "{err}");
    // No bundle, no key, garbage certificate.
    assert!(load(&svid.chain_pem, &svid.key_pem, "").is_err());
    assert!(load(&svid.chain_pem, "", &svid.bundle_pem).is_err());
    assert!(load("not a pem", &svid.key_pem, &svid.bundle_pem).is_err());
    // The CA certificate used as a leaf.
    assert!(load(&svid.bundle_pem, &svid.key_pem, &svid.bundle_pem).is_err());
    // No error message carries key material.
    let key_line = svid.key_pem.lines().nth(1).unwrap();
    let err = load(&svid.chain_pem, &other.key_pem, &svid.bundle_pem).unwrap_err();
    assert!(!format!("{err} {err:?}").contains(key_line));
    assert!(!format!("{ok:?}").contains(key_line));
}

#[tokio::test]
async fn a_new_trust_bundle_applies_to_new_handshakes() {
    let old_ca = ca();
    let new_ca = ca();
    let server_src = Arc::new(StaticSource::new(
        td(),
        identity(&old_ca.issue(&id("/spike/nexus"), HOUR).unwrap()),
    ));
    let server = Server::start(server_src.clone(), PeerRule::AnyInTrustDomain).await;
    let old_client = ca_client(&old_ca, server.addr);
    assert_eq!(whoami(&old_client).await.unwrap().0, StatusCode::OK);

    // The server moves to the new CA (its SVID and its bundle).
    server_src.replace(identity(&new_ca.issue(&id("/spike/nexus"), HOUR).unwrap()));
    // A new connection from an old-CA client is refused...
    assert_refused(whoami(&ca_client(&old_ca, server.addr)).await);
    // ...and a new-CA client is accepted, by the same running server.
    assert_eq!(
        whoami(&ca_client(&new_ca, server.addr)).await.unwrap().0,
        StatusCode::OK
    );
    assert!(!server.task.is_finished());
    server.shutdown().await;
}

fn ca_client(ca: &CertificateAuthority, addr: SocketAddr) -> MtlsClient {
    client(addr, "/spike/nexus", source_for(ca, "/app/a"))
}

#[tokio::test]
async fn resumed_sessions_do_not_skip_the_servers_checks() {
    // TLS 1.3 resumption restores the client's certificate from the first handshake without
    // verifying it again, so it would keep admitting a client after its certificate expired
    // or its CA left the bundle. SPIKE's server configuration must not resume.
    let old_ca = ca();
    let new_ca = ca();
    let server_src = Arc::new(StaticSource::new(
        td(),
        identity(&old_ca.issue(&id("/spike/nexus"), HOUR).unwrap()),
    ));
    let server = Server::start(server_src.clone(), PeerRule::AnyInTrustDomain).await;
    let old_client = svid_connector(&old_ca.issue(&id("/app/a"), HOUR).unwrap());
    // Two full exchanges, reading the responses (and so the session tickets, if any).
    for _ in 0..2 {
        let (tls, status, _) = bounded("request", raw_whoami(&old_client, server.addr))
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(tls.get_ref().1.handshake_kind(), Some(HandshakeKind::Full));
    }

    server_src.replace(identity(&new_ca.issue(&id("/spike/nexus"), HOUR).unwrap()));
    let r = bounded("request", raw_whoami(&old_client, server.addr)).await;
    assert!(
        r.is_err(),
        "a client of the removed CA got in (resumed session?)"
    );
    assert_eq!(server.hits(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn mtls_client_does_not_resume_sessions() {
    // A server that offers resumption and closes the connection after each response, so the
    // client reconnects; between the two requests its certificate turns into a forged one. A
    // client that resumed would never see the new certificate and would accept the server.
    let ca = ca();
    let forger = CertificateAuthority::new(&td()).unwrap();
    let real = ca.issue(&id("/spike/nexus"), HOUR).unwrap();
    let cert = SwapCert::new(real.chain_der.clone(), real.key_der.to_vec());
    let (addr, handshakes) = test_tls_server(cert.clone(), true).await;
    let c = client(addr, "/spike/nexus", source_for(&ca, "/app/a"));
    for _ in 0..2 {
        assert_eq!(whoami(&c).await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(handshakes.load(Ordering::SeqCst), 2);

    let forged = forger.issue(&id("/spike/nexus"), HOUR).unwrap();
    cert.set(forged.chain_der.clone(), forged.key_der.to_vec());
    match whoami(&c).await {
        Err(ClientError::Tls { .. }) => {}
        other => panic!("the client accepted a forged server (resumed session?): {other:?}"),
    }
    assert_eq!(handshakes.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------------------
// Rotation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn pem_file_rotation_reaches_new_handshakes_without_a_restart() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.issue(&id("/spike/nexus"), HOUR).unwrap();
    let files = first.write_pem_files(dir.path()).unwrap();
    let paths = PemPaths {
        cert: files.cert.clone(),
        key: files.key.clone(),
        bundle: files.bundle.clone(),
    };
    let pem = Arc::new(PemFileSource::start(td(), paths, Duration::from_millis(200)).unwrap());
    assert_eq!(pem.current().id(), &id("/spike/nexus"));
    let server = Server::start(pem.clone(), PeerRule::AnyInTrustDomain).await;

    let me = ca.issue(&id("/app/a"), HOUR).unwrap();
    let raw = svid_connector(&me);
    assert_eq!(server_leaf(&raw, server.addr).await, first.leaf_der());
    let kept = client(server.addr, "/spike/nexus", source(&me));
    assert_eq!(whoami(&kept).await.unwrap().0, StatusCode::OK);

    // Rotate: new key, new certificate, same ID.
    let second = ca.issue(&id("/spike/nexus"), HOUR).unwrap();
    assert_ne!(second.leaf_der(), first.leaf_der());
    second.write_pem_files(dir.path()).unwrap();
    wait_for_leaf(&raw, server.addr, second.leaf_der()).await;
    assert_eq!(
        pem.current().certified_key().cert[0].as_ref(),
        second.leaf_der()
    );

    // A file that does not load keeps the last good identity.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(server_leaf(&raw, server.addr).await, second.leaf_der());

    // And a later good write is picked up again.
    let third = ca.issue(&id("/spike/nexus"), HOUR).unwrap();
    third.write_pem_files(dir.path()).unwrap();
    wait_for_leaf(&raw, server.addr, third.leaf_der()).await;

    // Nothing restarted: the server task is the same, the kept-alive client connection still
    // works, and new clients verify the rotated certificate.
    assert!(!server.task.is_finished());
    assert_eq!(whoami(&kept).await.unwrap().0, StatusCode::OK);
    let fresh = client(server.addr, "/spike/nexus", source(&me));
    assert_eq!(whoami(&fresh).await.unwrap().0, StatusCode::OK);
    server.shutdown().await;
}

/// Waits (bounded) until a new handshake with the server at `addr` shows `leaf`.
async fn wait_for_leaf(connector: &TlsConnector, addr: SocketAddr, leaf: &[u8]) {
    bounded("the rotated certificate", async {
        while server_leaf(connector, addr).await != leaf {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// A dev Workload API agent (in its own 0700 directory, kept alive by the returned guard)
/// that serves `me` to this test process, and a source connected to it.
async fn dev_agent_for(
    me: &SpiffeId,
) -> (
    tempfile::TempDir,
    spike_agent::AgentHandle,
    WorkloadApiSource,
) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .unwrap();
    let mut config = AgentConfig::new(td(), dir.path().join("agent.sock"));
    config.registrations.push(
        Registration::new(me.clone())
            .with_uid(rustix::process::getuid().as_raw())
            .with_exe(std::env::current_exe().unwrap()),
    );
    let agent = bounded("agent start", spike_agent::start(config))
        .await
        .unwrap();
    let wl = bounded(
        "Workload API source",
        WorkloadApiSource::connect(
            td(),
            Some(&agent.endpoint()),
            Duration::from_secs(10),
            spike_runtime::svid::Patience::Service,
        ),
    )
    .await
    .unwrap();
    (dir, agent, wl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_rotation_reaches_the_source_and_new_handshakes() {
    let me = id("/app/workload");
    let (_dir, agent, wl) = dev_agent_for(&me).await;
    let wl = Arc::new(wl);
    assert_eq!(wl.current().id(), &me);
    let before = wl.current().certified_key().cert[0].to_vec();
    assert_eq!(before, agent.current_svid(&me).unwrap().leaf_der());
    assert_eq!(wl.current().bundle()[0].as_ref(), agent.ca().bundle_der());

    // A server on the Workload API source, a client with an SVID of the agent's CA.
    let server = Server::start(wl.clone(), PeerRule::AnyInTrustDomain).await;
    let peer = agent.ca().issue(&id("/app/client"), HOUR).unwrap();
    let raw = svid_connector(&peer);
    assert_eq!(server_leaf(&raw, server.addr).await, before);

    agent.rotate_now().unwrap();
    let after = agent.current_svid(&me).unwrap().leaf_der().to_vec();
    assert_ne!(after, before);
    bounded("the rotated SVID", async {
        while wl.current().certified_key().cert[0].as_ref() != after.as_slice() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(wl.current().id(), &me);
    assert_eq!(server_leaf(&raw, server.addr).await, after);
    let c = client(server.addr, "/app/workload", source(&peer));
    assert_eq!(
        whoami(&c).await.unwrap(),
        (StatusCode::OK, "spiffe://spike.test/app/client".to_owned())
    );

    server.shutdown().await;
    bounded("source shutdown", wl.shutdown()).await;
    bounded("agent shutdown", agent.shutdown()).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_is_closed_when_the_peer_certificate_expires() {
    let ca = ca();
    // No header timeout that could close an idle connection first: if the connection ends,
    // the certificate's expiry ended it.
    let limits = ConnLimits {
        header_timeout: Duration::from_secs(300),
        ..ConnLimits::default()
    };
    let server = Server::start_with(
        source_for(&ca, "/spike/nexus"),
        PeerRule::AnyInTrustDomain,
        limits,
    )
    .await;

    // Valid for 3 to 4 more seconds (X.509 keeps whole seconds).
    let now = SystemTime::now();
    let short = ca
        .issue_with_validity(
            &id("/app/a"),
            now - Duration::from_secs(10),
            now + Duration::from_secs(4),
        )
        .unwrap();

    // Two kept-alive connections with the short-lived certificate: the MtlsClient's and a raw
    // one whose closing we can observe directly.
    let c = client(server.addr, "/spike/nexus", source(&short));
    assert_eq!(
        whoami(&c).await.unwrap(),
        (StatusCode::OK, "spiffe://spike.test/app/a".to_owned())
    );
    let (mut raw, status, _) = bounded(
        "raw request",
        raw_whoami(&svid_connector(&short), server.addr),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(server.hits(), 2);

    // The server closes the raw connection once the certificate has expired (bounded wait).
    let deadline = short
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        + Duration::from_secs(10);
    let mut byte = [0u8; 1];
    match tokio::time::timeout(deadline, raw.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(n)) => panic!("unexpected {n} bytes on an idle connection"),
        Err(_) => panic!("the server kept the connection open after the certificate expired"),
    }
    // Not before it expired (with slack for clock granularity): an early close is a bug too.
    assert!(SystemTime::now() + Duration::from_millis(500) >= short.not_after);

    // The MtlsClient's connection was closed too (same expiry), and reconnecting with the
    // expired certificate is refused. X.509 validity includes the whole `notAfter` second
    // (webpki agrees), so a new handshake is refused only once that second is over; wait past
    // it. Had the server kept the old connection open, this request would be served on it.
    let past = short.not_after + Duration::from_millis(1500);
    tokio::time::sleep(past.duration_since(SystemTime::now()).unwrap_or_default()).await;
    assert_refused(whoami(&c).await);
    assert_eq!(server.hits(), 2);

    // The server itself is fine.
    let fresh = client(server.addr, "/spike/nexus", source_for(&ca, "/app/a"));
    assert_eq!(whoami(&fresh).await.unwrap().0, StatusCode::OK);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// SVID checks on load and reload
// ---------------------------------------------------------------------------------------------

fn pem_paths(files: &spike_agent::PemFiles) -> PemPaths {
    PemPaths {
        cert: files.cert.clone(),
        key: files.key.clone(),
        bundle: files.bundle.clone(),
    }
}

#[tokio::test]
async fn unusable_svids_are_errors_at_start() {
    let ca = ca();
    let now = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let expired = ca
        .issue_with_validity(&id("/spike/nexus"), now - 2 * HOUR, now - HOUR)
        .unwrap()
        .write_pem_files(dir.path())
        .unwrap();
    match PemFileSource::start(td(), pem_paths(&expired), Duration::from_secs(1)) {
        Err(e @ SvidError::Expired { .. }) => {
            assert!(
                e.to_string()
                    .contains("spiffe://spike.test/spike/nexus expired at"),
                "{e}"
            );
        }
        other => panic!("an expired SVID must not load, got {:?}", other.map(|_| ())),
    }
    ca.issue_with_validity(&id("/spike/nexus"), now + HOUR, now + 2 * HOUR)
        .unwrap()
        .write_pem_files(dir.path())
        .unwrap();
    match PemFileSource::start(td(), pem_paths(&expired), Duration::from_secs(1)) {
        Err(e @ SvidError::NotYetValid { .. }) => {
            assert!(e.to_string().contains("is not valid before"), "{e}");
        }
        other => panic!("a future SVID must not load, got {:?}", other.map(|_| ())),
    }
    // A key that is not the certificate's.
    let good = ca.issue(&id("/spike/nexus"), HOUR).unwrap();
    let other = ca.issue(&id("/spike/nexus"), HOUR).unwrap();
    let files = good.write_pem_files(dir.path()).unwrap();
    std::fs::write(&files.key, other.key_pem.as_bytes()).unwrap();
    match PemFileSource::start(td(), pem_paths(&files), Duration::from_secs(1)) {
        Err(e @ SvidError::Invalid { .. }) => {
            assert!(e.to_string().contains("does not match"), "{e}");
        }
        other => panic!(
            "a mismatched key must not load, got {:?}",
            other.map(|_| ())
        ),
    }
    // Positive control, and the expected-ID pin: the right ID passes, another is an error.
    good.write_pem_files(dir.path()).unwrap();
    let pem = PemFileSource::start(td(), pem_paths(&files), Duration::from_secs(1)).unwrap();
    assert!(matches!(
        pem.expect_id(&id("/spike/keeper/1")),
        Err(SvidError::NotExpectedId { .. })
    ));
    pem.expect_id(&id("/spike/nexus")).unwrap();
}

#[tokio::test]
async fn a_pem_reload_to_an_unusable_or_foreign_svid_keeps_the_previous_one() {
    let ca = ca();
    let now = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.issue(&id("/spike/nexus"), HOUR).unwrap();
    let files = first.write_pem_files(dir.path()).unwrap();
    let pem = Arc::new(
        PemFileSource::start(td(), pem_paths(&files), Duration::from_millis(100)).unwrap(),
    );
    pem.expect_id(&id("/spike/nexus")).unwrap();
    let server = Server::start(pem.clone(), PeerRule::AnyInTrustDomain).await;
    let raw = svid_connector(&ca.issue(&id("/app/a"), HOUR).unwrap());
    assert_eq!(server_leaf(&raw, server.addr).await, first.leaf_der());

    let refused = [
        ca.issue_with_validity(&id("/spike/nexus"), now - 2 * HOUR, now - HOUR)
            .unwrap(),
        ca.issue_with_validity(&id("/spike/nexus"), now + HOUR, now + 2 * HOUR)
            .unwrap(),
        ca.issue(&id("/spike/keeper/1"), HOUR).unwrap(),
    ];
    for bad in &refused {
        bad.write_pem_files(dir.path()).unwrap();
        // Several poll periods: the reload has been tried and refused.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(pem.current().id(), &id("/spike/nexus"));
        assert_eq!(server_leaf(&raw, server.addr).await, first.leaf_der());
    }
    // Positive control: a good SVID of the same ID is taken.
    let second = ca.issue(&id("/spike/nexus"), HOUR).unwrap();
    second.write_pem_files(dir.path()).unwrap();
    wait_for_leaf(&raw, server.addr, second.leaf_der()).await;
    server.shutdown().await;
}

#[tokio::test]
async fn pem_files_that_appear_late_are_waited_for_up_to_the_timeout() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let svid = ca.issue(&id("/spike/nexus"), HOUR).unwrap();
    let paths = PemPaths {
        cert: dir.path().join("svid.pem"),
        key: dir.path().join("svid_key.pem"),
        bundle: dir.path().join("bundle.pem"),
    };
    // Nothing appears: the error names every missing file once the timeout is over.
    let e = PemFileSource::open(
        td(),
        paths.clone(),
        Duration::from_millis(50),
        Duration::from_millis(300),
    )
    .await
    .map(|_| ())
    .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, SvidError::Missing { .. }), "{text}");
    for f in [&paths.cert, &paths.key, &paths.bundle] {
        assert!(text.contains(&f.display().to_string()), "{text}");
    }
    // Files written after a delay are picked up while the source waits.
    let writer = {
        let dir = dir.path().to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            svid.write_pem_files(&dir).unwrap();
        })
    };
    let pem = PemFileSource::open(td(), paths, Duration::from_millis(50), WAIT)
        .await
        .unwrap();
    assert!(writer.is_finished());
    assert_eq!(pem.current().id(), &id("/spike/nexus"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_api_svid_is_checked_against_the_expected_id() {
    let me = id("/spike/nexus");
    let (_dir, agent, wl) = dev_agent_for(&me).await;
    match wl.expect_id(&id("/spike/keeper/1")) {
        Err(e @ SvidError::NotExpectedId { .. }) => assert!(
            e.to_string()
                .contains("spiffe://spike.test/spike/nexus is not this component's identity"),
            "{e}"
        ),
        other => panic!("another ID must be refused, got {other:?}"),
    }
    wl.expect_id(&me).unwrap();
    // A rotation to the same ID still goes through with the pin in place.
    agent.rotate_now().unwrap();
    let after = agent.current_svid(&me).unwrap().leaf_der().to_vec();
    bounded("the rotated SVID", async {
        while wl.current().certified_key().cert[0].as_ref() != after.as_slice() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    bounded("source shutdown", wl.shutdown()).await;
    bounded("agent shutdown", agent.shutdown()).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Refused handshakes: counted by reason
// ---------------------------------------------------------------------------------------------

/// Waits (bounded) until the server has counted one more refusal for `reason`.
async fn wait_counted(reason: &str, before: u64) {
    let what = format!("{reason} in {}", render_handshake_metrics());
    bounded(&what, async {
        while handshake_failures(reason) <= before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(handshake_failures(reason), before + 1, "{reason}");
}

#[tokio::test]
async fn every_refused_handshake_is_counted_by_its_precise_reason() {
    let ca = ca();
    let server = Server::start(
        source_for(&ca, "/spike/nexus"),
        PeerRule::exactly(id("/app/a")),
    )
    .await;
    let now = SystemTime::now();
    let evil_td = TrustDomain::new("evil.test").unwrap();
    let evil = CertificateAuthority::new(&evil_td)
        .unwrap()
        .issue(&evil_td.id("/app/a").unwrap(), HOUR)
        .unwrap();
    let forged = CertificateAuthority::new(&td())
        .unwrap()
        .issue(&id("/app/a"), HOUR)
        .unwrap();
    let (ca_der, ca_key) = custom_cert(&ca, "spiffe://spike.test/app/a", Defect::IsCa);
    // No client certificate, over TLS 1.3 and over TLS 1.2 (which the server does not speak).
    let anonymous = |version: &'static rustls::SupportedProtocolVersion| {
        TlsConnector::from(Arc::new(
            rustls::ClientConfig::builder_with_provider(ring())
                .with_protocol_versions(&[version])
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(
                    ring().signature_verification_algorithms,
                )))
                .with_no_client_auth(),
        ))
    };
    let cases = [
        (
            "expired",
            svid_connector(
                &ca.issue_with_validity(&id("/app/a"), now - 2 * HOUR, now - HOUR)
                    .unwrap(),
            ),
        ),
        (
            "not_yet_valid",
            svid_connector(
                &ca.issue_with_validity(&id("/app/a"), now + HOUR, now + 2 * HOUR)
                    .unwrap(),
            ),
        ),
        ("other_trust_domain", svid_connector(&evil)),
        ("unknown_issuer", svid_connector(&forged)),
        ("not_svid", raw_connector(vec![ca_der], ca_key)),
        (
            "id_not_allowed",
            svid_connector(&ca.issue(&id("/app/b"), HOUR).unwrap()),
        ),
        ("no_certificate", anonymous(&rustls::version::TLS13)),
        ("protocol_version", anonymous(&rustls::version::TLS12)),
    ];
    for (reason, connector) in &cases {
        let before = handshake_failures(reason);
        let r = bounded(reason, raw_whoami(connector, server.addr)).await;
        let Err(e) = r else {
            panic!("{reason}: the server answered")
        };
        // The client learns why from the alert that fits the reason.
        let alert = match *reason {
            "expired" | "not_yet_valid" => "CertificateExpired",
            "unknown_issuer" => "UnknownCA",
            "no_certificate" => "CertificateRequired",
            "protocol_version" => "ProtocolVersion",
            _ => "HandshakeFailure",
        };
        assert!(e.to_string().contains(alert), "{reason}: {e}");
        wait_counted(reason, before).await;
    }
    assert_eq!(server.hits(), 0);
    let metrics = render_handshake_metrics();
    assert!(
        metrics.contains("spike_tls_handshake_failures_total{reason=\"expired\"} 1"),
        "{metrics}"
    );
    // Positive control: the allowed client gets through and nothing more is counted.
    let total = |m: &str| -> u64 {
        m.lines()
            .filter(|l| l.starts_with("spike_tls_handshake_failures_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    let good = ca.issue(&id("/app/a"), HOUR).unwrap();
    let (_, status, _) = bounded("good", raw_whoami(&svid_connector(&good), server.addr))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(total(&render_handshake_metrics()), total(&metrics));
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Optional client authentication (the gateway's listener only)
// ---------------------------------------------------------------------------------------------

/// `serve_tls_optional_client_auth` with an app that says what each request carries:
/// `verified <id>`, `unauthenticated <reason>`, or `both`/`neither` (which must never happen).
async fn optional_server(src: Arc<dyn SvidSource>, rule: PeerRule) -> Server {
    optional_server_with(src, rule, ConnLimits::default()).await
}

async fn optional_server_with(
    src: Arc<dyn SvidSource>,
    rule: PeerRule,
    limits: ConnLimits,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let auth = Arc::new(OptionalClientAuth::new(src, rule).unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().route(
        "/whoami",
        get(
            move |peer: Option<Extension<PeerIdentity>>,
                  anon: Option<Extension<Unauthenticated>>| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    match (peer, anon) {
                        (Some(Extension(p)), None) => format!("verified {}", p.id),
                        (None, Some(Extension(u))) => format!("unauthenticated {}", u.reason),
                        (Some(_), Some(_)) => "both".to_owned(),
                        (None, None) => "neither".to_owned(),
                    }
                }
            },
        ),
    );
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_tls_optional_client_auth(
        listener,
        auth,
        app,
        limits,
        async move {
            let _ = rx.await;
        },
    ));
    Server {
        addr,
        hits,
        stop: Some(stop),
        task,
    }
}

/// A TLS 1.3 client that presents no certificate and trusts any server.
fn anonymous_connector() -> TlsConnector {
    TlsConnector::from(Arc::new(
        rustls::ClientConfig::builder_with_provider(ring())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(
                ring().signature_verification_algorithms,
            )))
            .with_no_client_auth(),
    ))
}

/// A self-signed certificate claiming `spiffe_id` (anyone can make one).
fn self_signed(spiffe_id: &str) -> (Vec<u8>, Vec<u8>) {
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![uri(spiffe_id)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

#[tokio::test]
async fn optional_client_auth_completes_the_handshake_but_never_trusts_an_unverified_certificate() {
    let ca = ca();
    let server = optional_server(
        source_for(&ca, "/spike/gateway/gw"),
        PeerRule::AnyInTrustDomain,
    )
    .await;
    let now = SystemTime::now();
    let evil_td = TrustDomain::new("evil.test").unwrap();
    let evil = CertificateAuthority::new(&evil_td)
        .unwrap()
        .issue(&evil_td.id("/agents/a").unwrap(), HOUR)
        .unwrap();
    // Certificates that claim one of our own agents' IDs without being issued for it.
    let forged = CertificateAuthority::new(&td())
        .unwrap()
        .issue(&id("/agents/a"), HOUR)
        .unwrap();
    let expired = ca
        .issue_with_validity(&id("/agents/a"), now - 2 * HOUR, now - HOUR)
        .unwrap();
    let (own_der, own_key) = self_signed("spiffe://spike.test/agents/a");
    let (ca_der, ca_key) = custom_cert(&ca, "spiffe://spike.test/agents/a", Defect::IsCa);
    let cases = [
        ("no_certificate", anonymous_connector()),
        ("other_trust_domain", svid_connector(&evil)),
        ("unknown_issuer", svid_connector(&forged)),
        ("unknown_issuer", raw_connector(vec![own_der], own_key)),
        ("expired", svid_connector(&expired)),
        ("not_svid", raw_connector(vec![ca_der], ca_key)),
    ];
    for (reason, connector) in &cases {
        let (_, status, body) = bounded(reason, raw_whoami(connector, server.addr))
            .await
            .unwrap_or_else(|e| panic!("{reason}: the handshake failed: {e}"));
        // Only the label: the ID the certificate claims is nowhere.
        assert_eq!(
            (status, body.as_str()),
            (200, format!("unauthenticated {reason}").as_str())
        );
    }
    // Positive control: a valid SVID is verified, with its ID.
    let good = ca.issue(&id("/agents/a"), HOUR).unwrap();
    let (_, status, body) = bounded("good", raw_whoami(&svid_connector(&good), server.addr))
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "verified spiffe://spike.test/agents/a")
    );
    assert_eq!(server.hits(), cases.len() + 1);
    server.shutdown().await;
}

#[tokio::test]
async fn optional_client_auth_still_applies_the_rule_and_leaves_serve_mtls_strict() {
    let ca = ca();
    let rule = PeerRule::exactly(id("/agents/a"));
    let optional = optional_server(source_for(&ca, "/spike/gateway/gw"), rule.clone()).await;
    let other = ca.issue(&id("/agents/b"), HOUR).unwrap();
    let (_, status, body) = bounded("other", raw_whoami(&svid_connector(&other), optional.addr))
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "unauthenticated id_not_allowed")
    );
    optional.shutdown().await;

    // The accept loop of Nexus and the keepers still refuses the same callers in the
    // handshake: no certificate, another trust domain, a self-signed one.
    let strict = Server::start(source_for(&ca, "/spike/nexus"), PeerRule::AnyInTrustDomain).await;
    let evil_td = TrustDomain::new("evil.test").unwrap();
    let evil = CertificateAuthority::new(&evil_td)
        .unwrap()
        .issue(&evil_td.id("/agents/a").unwrap(), HOUR)
        .unwrap();
    let (own_der, own_key) = self_signed("spiffe://spike.test/agents/a");
    for (what, connector) in [
        ("no certificate", anonymous_connector()),
        ("another trust domain", svid_connector(&evil)),
        ("self-signed", raw_connector(vec![own_der], own_key)),
    ] {
        let r = bounded(what, raw_whoami(&connector, strict.addr)).await;
        assert!(r.is_err(), "{what}: serve_mtls answered");
    }
    assert_eq!(strict.hits(), 0);
    // Positive control.
    let good = ca.issue(&id("/agents/a"), HOUR).unwrap();
    let (_, status, _) = bounded("good", raw_whoami(&svid_connector(&good), strict.addr))
        .await
        .unwrap();
    assert_eq!(status, 200);
    strict.shutdown().await;
}

#[tokio::test]
async fn unauthenticated_connections_cannot_take_the_agents_slots() {
    let ca = ca();
    let limits = ConnLimits {
        max_connections: 4,
        ..ConnLimits::default()
    };
    let server = optional_server_with(
        source_for(&ca, "/spike/gateway/gw"),
        PeerRule::AnyInTrustDomain,
        limits,
    )
    .await;
    let anonymous = anonymous_connector();
    let good = svid_connector(&ca.issue(&id("/agents/a"), HOUR).unwrap());
    // A quarter of 4: one unauthenticated connection at a time.
    let (held, status, _) = bounded("first", raw_whoami(&anonymous, server.addr))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let second = bounded("second", raw_whoami(&anonymous, server.addr)).await;
    assert!(
        second.is_err(),
        "a second unauthenticated connection was served"
    );
    // Agents still get in.
    let (_agent, status, body) = bounded("agent", raw_whoami(&good, server.addr))
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "verified spiffe://spike.test/agents/a")
    );
    // Closing the unauthenticated connection gives its slot back.
    drop(held);
    assert!(
        bounded("slot freed", async {
            for _ in 0..100 {
                if raw_whoami(&anonymous, server.addr).await.is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        })
        .await,
        "the slot was not given back"
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// A real Nexus process: refusals in its log and metrics, and its own SVID pinned
// ---------------------------------------------------------------------------------------------

/// The lines of `log` that report a refused handshake with `reason`.
fn refusal_lines<'a>(log: &'a str, reason: &str) -> Vec<&'a str> {
    let field = format!("reason=\"{reason}\"");
    log.lines()
        .filter(|l| l.contains("TLS handshake refused") && l.contains(&field))
        .collect()
}

#[test]
fn nexus_warns_once_per_refused_handshake_counts_it_and_keeps_its_own_svid() {
    let mut c = spike_e2e::Cluster::new(1);
    c.start_nexus();
    let addr: SocketAddr = format!("127.0.0.1:{}", c.nexus_port).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let now = SystemTime::now();
    let app = c.pki.id("/app/a");
    let expired = c
        .pki
        .ca
        .issue_with_validity(&app, now - 2 * HOUR, now - HOUR)
        .unwrap();
    let evil_td = TrustDomain::new("evil.test").unwrap();
    let evil = CertificateAuthority::new(&evil_td)
        .unwrap()
        .issue(&evil_td.id("/app/a").unwrap(), HOUR)
        .unwrap();
    let good = svid_connector(&c.pki.ca.issue(&app, HOUR).unwrap());
    rt.block_on(async {
        for connector in [svid_connector(&expired), svid_connector(&evil)] {
            let r = bounded("refused client", raw_whoami(&connector, addr)).await;
            assert!(r.is_err(), "Nexus answered a refused client");
        }
    });
    let log_path = c.dir.path().join("nexus.log");
    let log = || std::fs::read_to_string(&log_path).unwrap();
    assert!(
        spike_e2e::wait_until(WAIT, || ["expired", "other_trust_domain"]
            .iter()
            .all(|r| !refusal_lines(&log(), r).is_empty())),
        "{}",
        log()
    );
    let text = log();
    for (reason, detail) in [
        ("expired", "certificate expired"),
        (
            "other_trust_domain",
            "spiffe://evil.test/app/a, which is not in trust domain spike.test",
        ),
    ] {
        let lines = refusal_lines(&text, reason);
        assert_eq!(lines.len(), 1, "{reason}: {text}");
        let line = lines[0];
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("remote=127.0.0.1:"), "{line}");
        assert!(line.contains(detail), "{line}");
    }
    // Not a terminal: no colour codes.
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escape in a log file: {text:?}"
    );
    let (status, metrics) = spike_e2e::http_get(c.nexus_health, "/metrics").unwrap();
    assert_eq!(status, 200);
    for reason in ["expired", "other_trust_domain"] {
        assert!(
            metrics.contains(&format!(
                "spike_tls_handshake_failures_total{{reason=\"{reason}\"}} 1"
            )),
            "{metrics}"
        );
    }

    // Nexus's PEM files now hold a keeper's SVID: refused, Nexus keeps presenting its own.
    let nexus_dir = std::fs::read_dir(c.dir.path().join("pki"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("spike_nexus-")
        })
        .unwrap();
    let before = rt.block_on(server_leaf(&good, addr));
    c.pki
        .ca
        .issue(&c.pki.id("/spike/keeper/1"), HOUR)
        .unwrap()
        .write_pem_files(&nexus_dir)
        .unwrap();
    let refused = "is not this component's identity spiffe://spike.test/spike/nexus";
    assert!(
        spike_e2e::wait_until(WAIT, || log().contains(refused)),
        "{}",
        log()
    );
    assert_eq!(rt.block_on(server_leaf(&good, addr)), before);
    // Positive control: a new Nexus SVID is taken; the refusal was said once.
    let next = c.pki.ca.issue(&c.pki.id("/spike/nexus"), HOUR).unwrap();
    next.write_pem_files(&nexus_dir).unwrap();
    rt.block_on(wait_for_leaf(&good, addr, next.leaf_der()));
    assert_eq!(log().matches(refused).count(), 1, "{}", log());
}

#[test]
fn a_policy_for_another_trust_domain_is_refused_with_a_clear_400() {
    let mut c = spike_e2e::Cluster::new(1);
    c.start_all(1);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let create = |pattern: &str| {
        c.spike(
            &admin,
            &[
                "policy",
                "create",
                "td-check",
                "--spiffe-id-pattern",
                pattern,
                "--path-pattern",
                "apps/**",
                "--permissions",
                "read",
            ],
        )
    };
    let out = create("spiffe://other.test/ns/web/**");
    let said = spike_e2e::text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("invalid_policy"), "{said}");
    assert!(
        said.contains("trust domain other.test, but this Nexus serves spike.test"),
        "{said}"
    );
    // Positive control: the same policy in the served trust domain is stored.
    let out = create("spiffe://spike.test/ns/web/**");
    assert!(out.status.success(), "{}", spike_e2e::text(&out));
}
