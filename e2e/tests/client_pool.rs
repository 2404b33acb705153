//! `MtlsClient` as a pool over real mTLS on loopback: many requests in flight on one client
//! over HTTP/2, the response size cap, and retries only where a request is idempotent.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::{Method, StatusCode, Version};
use spike_agent::CertificateAuthority;
use spike_core::id::{SpiffeId, TrustDomain};
use spike_runtime::net::{
    ClientError, ConnLimits, MtlsClient, WebClient, WebClientError, serve_mtls,
};
use spike_runtime::svid::{Identity, StaticSource, SvidSource};
use spike_runtime::tls::{PeerRule, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Barrier;

/// Bound on every wait, so a broken client fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(20);

fn td() -> TrustDomain {
    TrustDomain::new("spike.test").unwrap()
}

fn id(path: &str) -> SpiffeId {
    td().id(path).unwrap()
}

fn source(ca: &CertificateAuthority, path: &str) -> Arc<dyn SvidSource> {
    let svid = ca.issue(&id(path), Duration::from_secs(3600)).unwrap();
    let identity = Identity::from_pem(
        &td(),
        svid.chain_pem.as_bytes(),
        svid.key_pem.as_bytes(),
        svid.bundle_pem.as_bytes(),
    )
    .unwrap();
    Arc::new(StaticSource::new(td(), identity))
}

/// Serves `app` with SPIKE's own server loop as `/spike/nexus`.
async fn serve(ca: &CertificateAuthority, app: Router) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls =
        Arc::new(server_config(source(ca, "/spike/nexus"), PeerRule::AnyInTrustDomain).unwrap());
    tokio::spawn(serve_mtls(
        listener,
        tls,
        app,
        ConnLimits::default(),
        std::future::pending(),
    ));
    addr
}

fn client(ca: &CertificateAuthority, addr: std::net::SocketAddr) -> MtlsClient {
    MtlsClient::new(addr.to_string(), id("/spike/nexus"), source(ca, "/app/a"))
        .unwrap()
        .with_timeout(WAIT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_are_in_flight_at_once_on_one_client_over_http2() {
    const N: usize = 8;
    let ca = CertificateAuthority::new(&td()).unwrap();
    // No request is answered until all N are at the server: a client sending one request at
    // a time would never get past the first.
    let barrier = Arc::new(Barrier::new(N));
    let app = Router::new().route(
        "/together",
        get(move |version: Version| {
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
                format!("{version:?}")
            }
        }),
    );
    let addr = serve(&ca, app).await;
    let c = client(&ca, addr);
    let calls: Vec<_> = (0..N)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.send(Method::GET, "/together", None).await })
        })
        .collect();
    for call in calls {
        let r = tokio::time::timeout(WAIT, call)
            .await
            .expect("the requests were not in flight together")
            .unwrap()
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        // ALPN chose HTTP/2 with SPIKE's server.
        assert_eq!(&r.body[..], b"HTTP/2.0");
    }
}

#[tokio::test]
async fn a_response_over_the_cap_is_refused() {
    let ca = CertificateAuthority::new(&td()).unwrap();
    let app = Router::new().route("/big", get(|| async { "x".repeat(4096) }));
    let addr = serve(&ca, app).await;
    let c = client(&ca, addr).with_max_response(1024);
    match c.send(Method::GET, "/big", None).await {
        Err(ClientError::TooLarge { limit: 1024, .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Positive control: within the cap.
    let c = client(&ca, addr).with_max_response(8192);
    let r = c.send(Method::GET, "/big", None).await.unwrap();
    assert_eq!(r.body.len(), 4096);
}

/// A `/spike/nexus` server speaking HTTP/1.1 by hand: its first connection reads a request and
/// closes without answering (a connection that breaks before a response); later ones answer
/// 200. Returns the address and the number of requests that arrived.
async fn first_connection_breaks(
    ca: &CertificateAuthority,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let mut config = server_config(source(ca, "/spike/nexus"), PeerRule::AnyInTrustDomain).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        let mut connections = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            connections += 1;
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let seen = seen.clone();
            let first = connections == 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = tls.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                if !first {
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, requests)
}

#[tokio::test]
async fn idempotent_requests_are_retried_once_and_posts_never() {
    let ca = CertificateAuthority::new(&td()).unwrap();

    // GET and PUT: the broken first attempt is sent again on a new connection.
    for method in [Method::GET, Method::PUT] {
        let (addr, requests) = first_connection_breaks(&ca).await;
        let r = client(&ca, addr)
            .send(method.clone(), "/x", Some(b"{}".to_vec()))
            .await
            .unwrap_or_else(|e| panic!("{method} was not retried: {e}"));
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(requests.load(Ordering::SeqCst), 2, "{method}");
    }

    // POST: it may have taken effect, so the failure is reported and nothing is re-sent.
    let (addr, requests) = first_connection_breaks(&ca).await;
    match client(&ca, addr)
        .send(Method::POST, "/x", Some(b"{}".to_vec()))
        .await
    {
        Err(ClientError::Http { .. }) => {}
        other => panic!("a POST on a broken connection must fail, got {other:?}"),
    }
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

/// An HTTPS server for `localhost` with a self-signed certificate, answering every request with
/// 200 over HTTP/1.1 (an ordinary server such as OpenBao). Returns its port and certificate.
async fn https_server() -> (u16, rustls_pki_types::CertificateDer<'static>) {
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = issued.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
        issued.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = tls.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if tls
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, cert)
}

#[tokio::test]
async fn web_client_checks_https_servers_against_the_given_roots() {
    let (port, cert) = https_server().await;
    let base = format!("https://localhost:{port}");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let c = WebClient::new(&base, Some(roots))
        .unwrap()
        .with_timeout(WAIT);
    for _ in 0..2 {
        let r = c
            .send(
                Method::GET,
                "/v1/sys/health",
                &[("X-Vault-Token", "t")],
                None,
            )
            .await
            .unwrap();
        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"ok"[..]));
    }

    // Another CA's roots: refused at TLS.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(other.cert.der().clone()).unwrap();
    let c = WebClient::new(&base, Some(roots))
        .unwrap()
        .with_timeout(WAIT);
    match c.send(Method::GET, "/", &[], None).await {
        Err(ClientError::Tls { .. }) => {}
        other => panic!("an untrusted server must be refused, got {other:?}"),
    }

    // The right roots but a name the certificate does not hold: refused too.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let c = WebClient::new(&format!("https://127.0.0.1:{port}"), Some(roots))
        .unwrap()
        .with_timeout(WAIT);
    match c.send(Method::GET, "/", &[], None).await {
        Err(ClientError::Tls { .. }) => {}
        other => panic!("a server under another name must be refused, got {other:?}"),
    }

    // https:// without roots, and URLs that are not a base address, are refused up front.
    assert!(matches!(
        WebClient::new(&base, None),
        Err(WebClientError::NoRoots)
    ));
    for bad in ["ftp://x", "http://x:1/v1", "localhost:8200"] {
        assert!(WebClient::new(bad, None).is_err(), "{bad}");
    }
}
