//! The health server over real TCP on 127.0.0.1, with a real HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use spike_operator::runtime::health::{
    HealthError, HealthServer, METRICS_CONTENT_TYPE, MetricsRender, Readiness, ReadyState,
    parse_listen_addr,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Running {
    addr: SocketAddr,
    readiness: Readiness,
    renders: Arc<AtomicUsize>,
    stop: oneshot::Sender<()>,
    served: JoinHandle<Result<(), HealthError>>,
    client: Client<HttpConnector, Empty<Bytes>>,
}

async fn start() -> Running {
    let readiness = Readiness::new();
    let renders = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&renders);
    let metrics: MetricsRender = Arc::new(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        format!("# TYPE spike_test_renders_total counter\nspike_test_renders_total {n}\n")
    });
    let addr = parse_listen_addr("127.0.0.1:0").expect("an address");
    let server = HealthServer::bind(addr, readiness.clone(), metrics)
        .await
        .expect("bound");
    let addr = server.local_addr().expect("an address");
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        readiness,
        renders,
        stop,
        served,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

impl Running {
    /// Status, content type and body of `method path`.
    async fn call(&self, method: Method, path: &str) -> (StatusCode, Option<String>, String) {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .body(Empty::new())
            .expect("a request");
        let response = self.client.request(request).await.expect("a response");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().expect("ascii").to_owned());
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).expect("utf-8"),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Option<String>, String) {
        self.call(Method::GET, path).await
    }
}

#[tokio::test]
async fn healthz_answers_ok_whatever_the_readiness() {
    let s = start().await;
    let (status, _, body) = s.get("/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    s.readiness.set_not_ready("shutting down");
    let (status, _, body) = s.get("/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn readyz_follows_the_flag_with_its_reason() {
    let s = start().await;
    let (status, _, body) = s.get("/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    );

    s.readiness.set_ready();
    assert_eq!(s.readiness.get(), ReadyState::Ready);
    let (status, _, body) = s.get("/readyz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));

    s.readiness.set_not_ready("shutting down");
    let (status, _, body) = s.get("/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    );
}

#[tokio::test]
async fn metrics_render_fresh_on_every_scrape_as_prometheus_text() {
    let s = start().await;
    let (status, content_type, body) = s.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some(METRICS_CONTENT_TYPE));
    assert!(body.contains("spike_test_renders_total 1\n"), "{body}");
    let (_, _, body) = s.get("/metrics").await;
    assert!(body.contains("spike_test_renders_total 2\n"), "{body}");
    assert_eq!(s.renders.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn other_paths_are_404_and_other_methods_405() {
    let s = start().await;
    for path in ["/", "/health", "/metrics/x", "/readyz/", "/debug/pprof"] {
        let (status, _, body) = s.get(path).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, "not found"),
            "{path}"
        );
    }
    let (status, _, _) = s.call(Method::POST, "/readyz").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // HEAD is what some probes send: answered like GET, without a body.
    let (status, _, body) = s.call(Method::HEAD, "/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
}

#[tokio::test]
async fn shutdown_ends_the_server_and_closes_the_port() {
    let s = start().await;
    assert_eq!(s.get("/healthz").await.0, StatusCode::OK);
    s.stop.send(()).expect("the server runs");
    let served = tokio::time::timeout(Duration::from_secs(10), s.served)
        .await
        .expect("the server ends")
        .expect("no panic");
    served.expect("a clean end");
    assert!(tokio::net::TcpStream::connect(s.addr).await.is_err());
}

#[tokio::test]
async fn a_taken_port_and_a_bad_address_are_clear_errors() {
    let s = start().await;
    let taken = HealthServer::bind(s.addr, Readiness::new(), Arc::new(String::new)).await;
    match taken {
        Err(HealthError::Bind { addr, .. }) => assert_eq!(addr, s.addr),
        other => panic!("expected a bind error, got {other:?}"),
    }
    for bad in ["", "8560", "localhost:8560", "0.0.0.0:99999", "0.0.0.0"] {
        let err = parse_listen_addr(bad).expect_err(bad);
        assert!(
            err.to_string().contains("SPIKE_OPERATOR_HEALTH_LISTEN"),
            "{err}"
        );
    }
    assert_eq!(
        parse_listen_addr(" 0.0.0.0:8560 ").expect("valid"),
        "0.0.0.0:8560".parse::<SocketAddr>().expect("valid")
    );
}
