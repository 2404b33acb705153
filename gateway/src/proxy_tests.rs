//! The proxy chain in process: a table stands in for Nexus, real upstreams listen on
//! loopback, and every byte the agent gets back is checked for the real value.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use spike_core::api::{ResolveRequest, ResolveResponse};
use spike_core::error::ErrorCode;
use spike_core::id::SpiffeId;
use spike_core::secret::SecretString;
use spike_core::token::{TokenLocation, TokenRef};
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use super::*;
use crate::dev_upstream::DevUpstream;
use crate::egress::{AddressPolicy, EgressLimits, StaticResolver, tls};
use crate::resolve::{ResolveError, ResolveTokens};

const REAL: &str = "sk-live-0123456789abcdefREAL";
const AGENT: &str = "spiffe://poc.local/agents/a";

fn token(n: u8) -> String {
    format!("$SPIKE{{ref:{}}}", hex::encode([n; 16]))
}

/// Nexus in a table: token 1 is bound to AGENT, header:authorization, for `value`.
struct Table {
    value: String,
    location: TokenLocation,
    resolutions: AtomicUsize,
    /// The agent ID of every resolution asked.
    asked_for: std::sync::Mutex<Vec<String>>,
}

impl ResolveTokens for Table {
    fn resolve(&self, req: ResolveRequest) -> BoxFuture<'_, Result<ResolveResponse, ResolveError>> {
        self.resolutions.fetch_add(1, Ordering::SeqCst);
        self.asked_for
            .lock()
            .unwrap()
            .push(req.agent_spiffe_id.clone());
        let known =
            TokenRef::parse(req.token.expose_secret()).ok() == TokenRef::parse(&token(1)).ok();
        let out = if !known || req.agent_spiffe_id != AGENT {
            Err(ResolveError::Refused {
                code: ErrorCode::TokenUnknown,
                message: "unknown token".into(),
            })
        } else if req.location != self.location {
            Err(ResolveError::Refused {
                code: ErrorCode::LocationNotAllowed,
                message: "put the token in the Authorization header".into(),
            })
        } else {
            Ok(ResolveResponse {
                value: SecretString::new(self.value.clone()),
                token_id: "0123456789abcdef".into(),
                expires_at: "2099-01-01T00:00:00Z".into(),
                cacheable: true,
            })
        };
        Box::pin(async move { out })
    }
}

/// An upstream that reflects the Authorization header it got: raw, base64, hex, in a header
/// and a redirect, split into one-byte frames.
async fn reflector() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .map(|v| v.as_bytes().to_vec())
                        .unwrap_or_default();
                    let key = auth.strip_prefix(b"Bearer ").unwrap_or(&auth).to_vec();
                    let b64 = base64::engine::general_purpose::STANDARD.encode(&key);
                    let text = format!(
                        "raw={} b64={b64} hex={} HEX={}",
                        String::from_utf8_lossy(&key),
                        hex::encode(&key),
                        hex::encode_upper(&key)
                    );
                    let frames: Vec<Result<hyper::body::Frame<Bytes>, Infallible>> = text
                        .into_bytes()
                        .into_iter()
                        .map(|b| Ok(hyper::body::Frame::data(Bytes::from(vec![b]))))
                        .collect();
                    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
                    let resp = Response::builder()
                        .status(302)
                        .header(
                            "location",
                            format!(
                                "https://elsewhere.test/?k={}",
                                String::from_utf8_lossy(&key)
                            ),
                        )
                        .header("x-echo", key)
                        .body(body)
                        .unwrap();
                    Ok::<_, Infallible>(resp)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn route(name: &str, port: u16) -> Route {
    Route {
        name: name.into(),
        tls: false,
        host: "upstream.test".into(),
        port,
        base_path: String::new(),
        rules: Vec::new(),
        policy: RoutePolicy {
            addresses: AddressPolicy {
                allowed: vec!["127.0.0.1/32".parse().unwrap()],
            },
            tls: tls::client_config(rustls::RootCertStore::empty()).unwrap(),
        },
        // The test upstreams are plain HTTP on loopback.
        allow_plain_http: true,
        substitute_in_body: false,
    }
}

const GATEWAY: &str = "spiffe://poc.local/spike/gateway/test";

/// A proxy with its audit log open in a directory of its own.
struct Gw {
    proxy: Proxy,
    trail: Arc<AuditTrail>,
    key: spike_core::audit::AuditKey,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Gw {
    type Target = Proxy;
    fn deref(&self) -> &Proxy {
        &self.proxy
    }
}

impl std::ops::DerefMut for Gw {
    fn deref_mut(&mut self) -> &mut Proxy {
        &mut self.proxy
    }
}

/// A proxy whose audit log is not open (yet).
fn unaudited(routes: Vec<Route>, table: Arc<Table>, trail: Arc<AuditTrail>) -> Proxy {
    unaudited_with(routes, table, trail, ProxyLimits::default())
}

fn unaudited_with(
    routes: Vec<Route>,
    table: Arc<Table>,
    trail: Arc<AuditTrail>,
    limits: ProxyLimits,
) -> Proxy {
    let r = StaticResolver::new();
    r.answer("upstream.test", vec![vec!["127.0.0.1".parse().unwrap()]]);
    Proxy::new(
        routes,
        None,
        Egress::new(Arc::new(r), EgressLimits::default()),
        table,
        limits,
        trail,
    )
}

async fn proxy(routes: Vec<Route>, table: Arc<Table>) -> Gw {
    proxy_with(routes, table, ProxyLimits::default()).await
}

async fn proxy_with(routes: Vec<Route>, table: Arc<Table>, limits: ProxyLimits) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gateway-audit.log");
    let key = spike_core::audit::AuditKey::new(&[3; 32]);
    let trail = Arc::new(AuditTrail::new(SpiffeId::new(GATEWAY).unwrap()));
    trail.attach(
        spike_runtime::audit_log::AuditWriter::open(&log, key.clone())
            .await
            .unwrap(),
    );
    Gw {
        proxy: unaudited_with(routes, table, trail.clone(), limits),
        trail,
        key,
        log,
        _dir: dir,
    }
}

fn table() -> Arc<Table> {
    Arc::new(Table {
        value: REAL.into(),
        location: TokenLocation::Header("authorization".into()),
        resolutions: AtomicUsize::new(0),
        asked_for: std::sync::Mutex::new(Vec::new()),
    })
}

fn agent() -> Caller {
    Caller::from(SpiffeId::new(AGENT).unwrap())
}

fn req(uri: &str, auth: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(uri)
        .header("authorization", auth)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// Everything the agent receives: status, headers and body, as one string.
async fn seen(resp: Response<Body>) -> (StatusCode, String) {
    let status = resp.status();
    let (head, body) = resp.into_parts();
    let mut all = String::new();
    for (k, v) in &head.headers {
        all.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    let b = body.collect().await.unwrap().to_bytes();
    all.push_str(&String::from_utf8_lossy(&b));
    (status, all)
}

fn assert_no_value(all: &str) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(REAL);
    for form in [
        REAL.to_owned(),
        b64,
        hex::encode(REAL),
        hex::encode_upper(REAL),
    ] {
        assert!(!all.contains(&form), "the agent saw {form}: {all}");
    }
}

#[tokio::test]
async fn the_value_goes_upstream_and_the_stream_comes_back_incremental() {
    let up = DevUpstream::new(Zeroizing::new(REAL.into()))
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let p = proxy(vec![route("llm", up.port())], table()).await;
    let resp = p
        .handle(
            &agent(),
            req(
                "/r/llm/v1/chat/completions",
                &format!("Bearer {}", token(1)),
                r#"{"stream":true}"#,
            ),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut frames = 0;
    let mut all = String::new();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            frames += 1;
            all.push_str(std::str::from_utf8(&d).unwrap());
        }
    }
    assert!(frames >= 6, "streamed, not buffered: {frames} frames");
    assert!(all.ends_with("data: [DONE]\n\n"), "{all}");
    assert_no_value(&all);
}

#[tokio::test]
async fn a_reflected_value_comes_back_as_the_agents_token_in_every_form() {
    let up = reflector().await;
    let p = proxy(vec![route("echo", up.port())], table()).await;
    let resp = p
        .handle(
            &agent(),
            req("/r/echo/x", &format!("Bearer {}", token(1)), ""),
        )
        .await;
    let (status, all) = seen(resp).await;
    assert_eq!(
        status,
        StatusCode::FOUND,
        "redirects are passed back, not followed"
    );
    assert_no_value(&all);
    assert!(all.contains(&format!("raw={}", token(1))), "{all}");
    assert!(all.contains(&format!("x-echo: {}", token(1))), "{all}");
}

#[tokio::test]
async fn refusals_carry_the_code_and_nothing_is_sent() {
    let up = reflector().await;
    let t = table();
    let p = proxy(vec![route("echo", up.port())], t.clone()).await;
    let code = |resp: Response<Body>| async move {
        let (status, all) = seen(resp).await;
        let json = all.lines().last().unwrap_or_default().to_owned();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        (status, v["error"]["code"].as_str().unwrap().to_owned())
    };
    // A token of another agent, a made-up one.
    let other = Caller::from(SpiffeId::new("spiffe://poc.local/agents/b").unwrap());
    let r = p
        .handle(
            &other,
            req("/r/echo/x", &format!("Bearer {}", token(1)), ""),
        )
        .await;
    assert_eq!(
        code(r).await,
        (StatusCode::FORBIDDEN, "token_unknown".into())
    );
    let r = p
        .handle(
            &agent(),
            req("/r/echo/x", &format!("Bearer {}", token(2)), ""),
        )
        .await;
    assert_eq!(
        code(r).await,
        (StatusCode::FORBIDDEN, "token_unknown".into())
    );
    // In the query where the binding says header.
    let r = p
        .handle(
            &agent(),
            req(
                &format!("/r/echo/x?key={}", locate::encode_query_value(&token(1))),
                "none",
                "",
            ),
        )
        .await;
    assert_eq!(
        code(r).await,
        (StatusCode::FORBIDDEN, "location_not_allowed".into())
    );
    // Unknown route.
    let r = p.handle(&agent(), req("/r/nope/x", "none", "")).await;
    assert_eq!(code(r).await.1, "route_unknown");
    // After one good use, the real value in the agent's own request is refused.
    let ok = p
        .handle(
            &agent(),
            req("/r/echo/x", &format!("Bearer {}", token(1)), ""),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::FOUND);
    for (auth, body) in [
        (format!("Bearer {REAL}"), String::new()),
        (
            "none".to_owned(),
            format!("{{\"k\":\"{}\"}}", hex::encode(REAL)),
        ),
        (
            "none".to_owned(),
            base64::engine::general_purpose::STANDARD.encode(format!("x{REAL}")),
        ),
    ] {
        let r = p.handle(&agent(), req("/r/echo/x", &auth, &body)).await;
        assert_eq!(
            code(r).await,
            (StatusCode::FORBIDDEN, "value_in_request".into())
        );
    }
    // Another agent sending this agent's real value is refused too.
    let r = p
        .handle(&other, req("/r/echo/x", &format!("Bearer {REAL}"), ""))
        .await;
    assert_eq!(
        code(r).await,
        (StatusCode::FORBIDDEN, "value_in_request".into())
    );
    // Plain http without the route's allowance: refused before resolving.
    let mut strict = route("strict", up.port());
    strict.allow_plain_http = false;
    let before = t.resolutions.load(Ordering::SeqCst);
    let p = proxy(vec![strict], t.clone()).await;
    let r = p
        .handle(
            &agent(),
            req("/r/strict/x", &format!("Bearer {}", token(1)), ""),
        )
        .await;
    assert_eq!(code(r).await.1, "plain_http_not_allowed");
    assert_eq!(t.resolutions.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn a_value_that_would_inject_headers_is_not_sent() {
    let up = reflector().await;
    let t = Arc::new(Table {
        value: "sk-abcdefgh\r\nX-Evil: 1".into(),
        location: TokenLocation::Header("authorization".into()),
        resolutions: AtomicUsize::new(0),
        asked_for: std::sync::Mutex::new(Vec::new()),
    });
    let p = proxy(vec![route("echo", up.port())], t).await;
    let r = p
        .handle(
            &agent(),
            req("/r/echo/x", &format!("Bearer {}", token(1)), ""),
        )
        .await;
    let (status, all) = seen(r).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{all}");
    assert!(all.contains("secret_unavailable"), "{all}");
    assert!(!all.contains("X-Evil"), "{all}");
}

/// An upstream that remembers the Authorization it got on `/store` and returns it, gzipped,
/// on `/read` (and with an encoding the gateway cannot decode on `/odd`).
async fn hoarder() -> std::net::SocketAddr {
    use std::io::Write as _;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stored = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let stored = stored.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let stored = stored.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        if path == "/store"
                            && let Some(a) = req.headers().get("authorization")
                        {
                            *stored.lock().unwrap() = a.as_bytes().to_vec();
                        }
                        let kept = stored.lock().unwrap().clone();
                        let mut gz =
                            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                        gz.write_all(b"you sent: ").unwrap();
                        gz.write_all(&kept).unwrap();
                        let body = gz.finish().unwrap();
                        let encoding = if path == "/odd" { "x-custom" } else { "gzip" };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-encoding", encoding)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_value_stored_and_returned_later_compressed_comes_back_as_the_token() {
    let up = hoarder().await;
    let p = proxy(vec![route("h", up.port())], table()).await;
    let r = p
        .handle(
            &agent(),
            req("/r/h/store", &format!("Bearer {}", token(1)), ""),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // A later request without any token: the upstream returns what it stored, gzipped.
    let r = p.handle(&agent(), req("/r/h/read", "none", "")).await;
    assert!(
        r.headers().get("content-encoding").is_none(),
        "served decoded"
    );
    let (status, all) = seen(r).await;
    assert_eq!(status, StatusCode::OK);
    assert_no_value(&all);
    assert!(
        all.contains(&format!("you sent: Bearer {}", token(1))),
        "{all}"
    );
    // An encoding the gateway cannot decode is refused, not passed through.
    let r = p.handle(&agent(), req("/r/h/odd", "none", "")).await;
    let (status, all) = seen(r).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{all}");
    assert!(all.contains("response_not_scrubbable"), "{all}");
    assert_no_value(&all);
}

#[tokio::test]
async fn oversized_and_compressed_request_bodies_are_refused() {
    let up = reflector().await;
    let t = table();
    let mut p = proxy(vec![route("echo", up.port())], t.clone()).await;
    p.limits.max_request_body = 1024;
    let big = "x".repeat(2048);
    let r = p
        .handle(
            &agent(),
            req("/r/echo/x", &format!("Bearer {}", token(1)), &big),
        )
        .await;
    let (status, all) = seen(r).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{all}");
    let mut gz = req("/r/echo/x", &format!("Bearer {}", token(1)), "x");
    gz.headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    let (status, all) = seen(p.handle(&agent(), gz).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{all}");
    assert_eq!(
        t.resolutions.load(Ordering::SeqCst),
        0,
        "refused before resolving"
    );
}

#[test]
fn hop_by_hop_headers_and_those_connection_names_are_stripped() {
    let mut h = http::HeaderMap::new();
    for (k, v) in [
        ("connection", "x-hop, keep-alive"),
        ("connection", "x-other"),
        ("x-hop", "1"),
        ("x-other", "2"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("trailer", "x"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("proxy-authenticate", "Basic"),
        ("proxy-authorization", "Basic eA=="),
        ("proxy-connection", "keep-alive"),
        ("content-type", "application/json"),
        ("x-kept", "3"),
    ] {
        h.append(
            http::HeaderName::from_static(k),
            http::HeaderValue::from_static(v),
        );
    }
    super::strip_hop_by_hop(&mut h);
    let mut left: Vec<&str> = h.keys().map(http::HeaderName::as_str).collect();
    left.sort_unstable();
    assert_eq!(left, ["content-type", "x-kept"]);

    // One hop-by-hop header without `Connection` goes too; a message without any is unchanged.
    let mut h = http::HeaderMap::new();
    h.insert("te", http::HeaderValue::from_static("trailers"));
    h.insert("x-kept", http::HeaderValue::from_static("1"));
    super::strip_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1);
    assert!(h.contains_key("x-kept"));
    let before = h.clone();
    super::strip_hop_by_hop(&mut h);
    assert_eq!(h, before);
}

/// Status and body of a response, as the agent reads them.
async fn answer(resp: Response<Body>) -> (StatusCode, Bytes) {
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn unauthenticated(reason: &'static str) -> Caller {
    Caller::Unauthenticated(spike_runtime::tls::Unauthenticated { reason })
}

#[tokio::test]
async fn an_unauthenticated_caller_gets_what_a_stolen_token_gets_and_is_never_served() {
    let up = reflector().await;
    let t = table();
    let p = proxy(vec![route("echo", up.port())], t.clone()).await;
    let bearer = format!("Bearer {}", token(1));
    let thief = Caller::from(SpiffeId::new("spiffe://poc.local/agents/b").unwrap());
    let stolen = answer(p.handle(&thief, req("/r/echo/x", &bearer, "")).await).await;
    assert_eq!(stolen.0, StatusCode::FORBIDDEN);
    for reason in ["no_certificate", "other_trust_domain", "unknown_issuer"] {
        let r = p
            .handle(&unauthenticated(reason), req("/r/echo/x", &bearer, ""))
            .await;
        // Byte for byte the stolen token's answer, headers too.
        assert_eq!(
            r.headers(),
            &http::HeaderMap::from_iter([(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json")
            )])
        );
        assert_eq!(answer(r).await, stolen, "{reason}");
    }
    // Nexus was asked each time, as for the thief, but for the ID no token is bound to.
    let asked = t.asked_for.lock().unwrap().clone();
    assert_eq!(asked.len(), 4);
    assert_eq!(asked[0], "spiffe://poc.local/agents/b");
    assert!(
        asked[1..]
            .iter()
            .all(|a| a == crate::caller::NO_AGENT.as_str()),
        "{asked:?}"
    );
    // Without a token: refused with what it lacks, and Nexus is not asked.
    let (status, body) = answer(
        p.handle(
            &unauthenticated("no_certificate"),
            req("/r/echo/x", "none", ""),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "agent_identity_required");
    assert_eq!(t.resolutions.load(Ordering::SeqCst), 4);
    // A real value it carries is still caught, like anyone's.
    let ok = p.handle(&agent(), req("/r/echo/x", &bearer, "")).await;
    assert_eq!(ok.status(), StatusCode::FOUND);
    let (_, body) = answer(
        p.handle(
            &unauthenticated("no_certificate"),
            req("/r/echo/x", &format!("Bearer {REAL}"), ""),
        )
        .await,
    )
    .await;
    assert!(String::from_utf8_lossy(&body).contains("value_in_request"));
    // The audit log, the metrics (and the decision line) keep the true reason.
    let log = std::fs::read_to_string(&p.log).unwrap();
    for reason in [
        "unauthenticated",
        "foreign_trust_domain",
        "unverified_certificate",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("\"reason\":\"{reason}\""))
                    && l.contains(crate::caller::NO_AGENT.as_str())),
            "{reason}: {log}"
        );
    }
    let m = p.metrics().render();
    for reason in [
        "token_unknown",
        "unauthenticated",
        "foreign_trust_domain",
        "unverified_certificate",
    ] {
        assert!(
            m.contains(&format!(
                "route=\"echo\",decision=\"refused\",reason=\"{reason}\"}} 1"
            )),
            "{reason}: {m}"
        );
    }
}

#[tokio::test]
async fn the_rate_limit_refuses_past_the_burst_before_asking_nexus() {
    let up = reflector().await;
    let t = table();
    let limits = ProxyLimits {
        rate: crate::ratelimit::RateLimits {
            // One a minute: nothing refills while the test runs.
            agent: spike_runtime::ratelimit::Rate {
                per_minute: 1,
                burst: 3,
            },
            unauthenticated: spike_runtime::ratelimit::Rate {
                per_minute: 1,
                burst: 1,
            },
        },
        ..ProxyLimits::default()
    };
    let p = proxy_with(vec![route("echo", up.port())], t.clone(), limits).await;
    let bearer = format!("Bearer {}", token(1));
    for _ in 0..3 {
        let r = p.handle(&agent(), req("/r/echo/x", &bearer, "")).await;
        assert_eq!(r.status(), StatusCode::FOUND);
    }
    let asked = t.resolutions.load(Ordering::SeqCst);
    let limited = p.handle(&agent(), req("/r/echo/x", &bearer, "")).await;
    // One request a minute refills one every 60 s.
    assert_eq!(limited.headers()[http::header::RETRY_AFTER], "60");
    let (status, body) = answer(limited).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");
    assert_eq!(
        t.resolutions.load(Ordering::SeqCst),
        asked,
        "Nexus was asked"
    );
    // Requests refused before the limit do not spend it, and another agent has its own.
    let other = Caller::from(SpiffeId::new("spiffe://poc.local/agents/b").unwrap());
    let r = p.handle(&other, req("/r/nope/x", &bearer, "")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = p.handle(&other, req("/r/echo/x", &bearer, "")).await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "token_unknown, not limited"
    );
    // Unauthenticated callers share one bucket, whatever their certificate.
    let r = p
        .handle(
            &unauthenticated("no_certificate"),
            req("/r/echo/x", &bearer, ""),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = p
        .handle(
            &unauthenticated("other_trust_domain"),
            req("/r/echo/x", &bearer, ""),
        )
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let m = p.metrics().render();
    assert!(
        m.contains(r#"route="echo",decision="refused",reason="rate_limited"} 2"#),
        "{m}"
    );
}

#[path = "proxy_audit_tests.rs"]
mod audit;
