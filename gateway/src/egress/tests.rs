//! Egress against real upstreams on loopback addresses (127.0.0.1 and 127.0.0.2 stand for two
//! hosts), with answers from a [`StaticResolver`].

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::*;

/// An upstream that answers `version host path` and counts its connections.
struct Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

async fn upstream(ip: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let host = req
                        .headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned)
                        .or_else(|| req.uri().authority().map(|a| a.to_string()))
                        .unwrap_or_default();
                    let body = format!("{:?} {host} {}", req.version(), req.uri().path());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                    Some(cfg) => {
                        let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await else {
                            return;
                        };
                        let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                    }
                }
            });
        }
    });
    Upstream { addr, connections }
}

fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync()
}

fn get(path: &str) -> Request<Body> {
    Request::builder().uri(path).body(empty()).unwrap()
}

async fn text(sent: Sent) -> String {
    let b = sent
        .response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(b.to_vec()).unwrap()
}

fn allowing(nets: &[&str], tls: Arc<rustls::ClientConfig>) -> RoutePolicy {
    RoutePolicy {
        addresses: AddressPolicy {
            allowed: nets.iter().map(|n| n.parse().unwrap()).collect(),
        },
        tls,
    }
}

fn no_tls() -> Arc<rustls::ClientConfig> {
    // Plain-HTTP tests never use it; an empty store is enough.
    tls::client_config(rustls::RootCertStore::empty()).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn a_checked_address_is_dialed_with_the_gateways_host_and_pooled() {
    let up = upstream("127.0.0.2", None).await;
    let r = Arc::new(StaticResolver::new());
    r.answer("api.test", vec![vec![ip("127.0.0.2")]]);
    let egress = Egress::new(r.clone(), EgressLimits::default());
    let policy = allowing(&["127.0.0.2/32"], no_tls());
    let target = Target {
        host: "api.test",
        port: up.addr.port(),
        tls: false,
    };
    for _ in 0..3 {
        let mut req = get("/v1/chat?x=1");
        // Whatever Host the agent's request carried, the upstream sees the checked one.
        req.headers_mut()
            .insert(http::header::HOST, HeaderValue::from_static("evil.test"));
        let sent = egress.send(target, &policy, req).await.unwrap();
        assert_eq!(sent.addr, up.addr);
        assert_eq!(
            text(sent).await,
            format!("HTTP/1.1 api.test:{} /v1/chat", up.addr.port())
        );
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "one pooled connection"
    );
    assert_eq!(r.lookups("api.test"), 3, "resolved for each request");
}

#[tokio::test]
async fn forbidden_answers_are_refused_before_any_connection() {
    let up = upstream("127.0.0.1", None).await;
    let r = Arc::new(StaticResolver::new());
    r.answer("api.test", vec![vec![ip("127.0.0.1")]]);
    // A public and a loopback answer together: refused as a whole.
    r.answer("mixed.test", vec![vec![ip("8.8.8.8"), ip("127.0.0.1")]]);
    r.answer("meta.test", vec![vec![ip("169.254.169.254")]]);
    r.answer("mapped.test", vec![vec![ip("::ffff:127.0.0.1")]]);
    let egress = Egress::new(r, EgressLimits::default());
    let policy = allowing(&[], no_tls());
    for host in [
        "api.test",
        "mixed.test",
        "meta.test",
        "mapped.test",
        "127.0.0.1",
        "[::1]",
    ] {
        let target = Target {
            host,
            port: up.addr.port(),
            tls: false,
        };
        let e = egress.send(target, &policy, get("/")).await.unwrap_err();
        assert_eq!(e.code(), "address_not_allowed", "{host}: {e}");
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 0);
    // Allowing 127.0.0.1 does not allow its v4-mapped form.
    let policy = allowing(&["127.0.0.1/32"], no_tls());
    let target = Target {
        host: "mapped.test",
        port: up.addr.port(),
        tls: false,
    };
    let e = egress.send(target, &policy, get("/")).await.unwrap_err();
    assert!(
        matches!(
            e,
            EgressError::AddressNotAllowed {
                class: AddressClass::Embedded,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn rebinding_between_requests_never_reaches_the_new_address() {
    let allowed = upstream("127.0.0.2", None).await;
    // The rebinding target listens on the same port number on 127.0.0.1 where possible; it
    // must see no connection whatever the answers.
    let victim = TcpListener::bind(("127.0.0.1", allowed.addr.port())).await;
    let victim_hits = Arc::new(AtomicUsize::new(0));
    if let Ok(l) = victim {
        let hits = victim_hits.clone();
        tokio::spawn(async move {
            while l.accept().await.is_ok() {
                hits.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let r = Arc::new(StaticResolver::new());
    r.answer(
        "api.test",
        vec![vec![ip("127.0.0.2")], vec![ip("127.0.0.1")]],
    );
    let egress = Egress::new(r, EgressLimits::default());
    let policy = allowing(&["127.0.0.2/32"], no_tls());
    let target = Target {
        host: "api.test",
        port: allowed.addr.port(),
        tls: false,
    };
    let first = egress.send(target, &policy, get("/")).await.unwrap();
    assert_eq!(first.addr, allowed.addr);
    drop(text(first).await);
    // The pooled connection is to 127.0.0.2, but the name now answers 127.0.0.1: refused,
    // not served over the old connection and not dialed.
    let e = egress.send(target, &policy, get("/")).await.unwrap_err();
    assert_eq!(e.code(), "address_not_allowed", "{e}");
    assert_eq!(victim_hits.load(Ordering::SeqCst), 0);
}

struct Pki {
    roots: rustls::RootCertStore,
    server: Arc<rustls::ServerConfig>,
}

/// A CA and a server certificate for `name`, served with ALPN `alpn`.
fn pki(name: &str, alpn: &[&[u8]]) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    let cert = params
        .signed_by(&key, &rcgen::Issuer::new(ca_params, ca_key))
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Pki {
        roots,
        server: Arc::new(server),
    }
}

#[tokio::test]
async fn tls_upstreams_are_verified_for_the_name_and_speak_h2_or_h1() {
    for (alpn, want) in [
        (&[&b"h2"[..]][..], "HTTP/2.0"),
        (&[&b"http/1.1"[..]][..], "HTTP/1.1"),
    ] {
        let p = pki("api.test", alpn);
        let up = upstream("127.0.0.2", Some(p.server.clone())).await;
        let r = Arc::new(StaticResolver::new());
        r.answer("api.test", vec![vec![ip("127.0.0.2")]]);
        r.answer("other.test", vec![vec![ip("127.0.0.2")]]);
        let egress = Egress::new(r, EgressLimits::default());
        let good = allowing(
            &["127.0.0.2/32"],
            tls::client_config(p.roots.clone()).unwrap(),
        );
        let target = |host| Target {
            host,
            port: up.addr.port(),
            tls: true,
        };
        let sent = egress
            .send(target("api.test"), &good, get("/p"))
            .await
            .unwrap();
        assert_eq!(
            text(sent).await,
            format!("{want} api.test:{} /p", up.addr.port())
        );
        // The certificate is for api.test: another name on the same address is refused.
        let e = egress
            .send(target("other.test"), &good, get("/p"))
            .await
            .unwrap_err();
        assert!(matches!(e, EgressError::Tls { .. }), "{e}");
        // A CA the route does not trust.
        let other = pki("api.test", alpn);
        let untrusting = allowing(&["127.0.0.2/32"], tls::client_config(other.roots).unwrap());
        let egress2 = Egress::new(
            Arc::new({
                let r = StaticResolver::new();
                r.answer("api.test", vec![vec![ip("127.0.0.2")]]);
                r
            }),
            EgressLimits::default(),
        );
        let e = egress2
            .send(target("api.test"), &untrusting, get("/p"))
            .await
            .unwrap_err();
        assert!(matches!(e, EgressError::Tls { .. }), "{e}");
    }
}

#[test]
fn authorities_drop_default_ports() {
    let t = |host, port, tls| Target { host, port, tls }.authority();
    assert_eq!(t("api.test", 443, true), "api.test");
    assert_eq!(t("api.test", 80, false), "api.test");
    assert_eq!(t("api.test", 8443, true), "api.test:8443");
    assert_eq!(t("[::1]", 443, false), "[::1]:443");
}
