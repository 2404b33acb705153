//! The operator's health and metrics server: `/healthz`, `/readyz` and `/metrics` over plain
//! HTTP on `SPIKE_OPERATOR_HEALTH_LISTEN` (the chart's probes and a Prometheus scrape).
//!
//! - `/healthz`: the process is alive and serving: always `200 ok`.
//! - `/readyz`: `200 ok` once the caller marks the operator ready, else `503` with a short,
//!   fixed reason. A standby is ready as soon as it takes part in the election: it is healthy,
//!   and the chart's rolling update (`maxUnavailable: 0`) waits for the new pod's readiness while
//!   the old pod still holds the Lease, so a standby that reported unready would stall every
//!   rollout. The leader is ready once its controllers have started.
//! - `/metrics`: Prometheus text exposition (`text/plain; version=0.0.4`) from a render closure,
//!   so this module does not depend on the type that holds the metrics.
//!
//! Nothing here reads a secret: the bodies are fixed strings and the rendered metrics.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The environment variable that names the server's address (the chart sets `0.0.0.0:8560`).
pub const HEALTH_LISTEN_ENV: &str = "SPIKE_OPERATOR_HEALTH_LISTEN";

/// The content type of the OpenMetrics text format, which `prometheus-client` writes (and
/// Prometheus scrapes).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders the current metrics as Prometheus text.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Why the health server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The configured address is not `host:port` with an IP host.
    #[error("{HEALTH_LISTEN_ENV} is not an address such as 0.0.0.0:8560: {value:?}")]
    BadAddress {
        /// The value as given.
        value: String,
    },
    /// Binding the address failed (in use, or not allowed).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("the health server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Parses the listen address, as `SPIKE_OPERATOR_HEALTH_LISTEN` holds it.
pub fn parse_listen_addr(value: &str) -> Result<SocketAddr, HealthError> {
    value.trim().parse().map_err(|_| HealthError::BadAddress {
        value: value.to_owned(),
    })
}

/// What `/readyz` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyState {
    /// Ready: `200 ok`.
    Ready,
    /// Not ready: `503` with this short, fixed reason.
    NotReady(&'static str),
}

/// The operator's readiness, flipped by the caller and read by `/readyz`. Clones share the
/// state. It starts not ready, with the reason `starting`.
#[derive(Clone)]
pub struct Readiness(Arc<watch::Sender<ReadyState>>);

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Readiness").field(&*self.0.borrow()).finish()
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Not ready, because `starting`.
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(ReadyState::NotReady(
            "starting",
        ))))
    }

    /// Marks the operator ready.
    pub fn set_ready(&self) {
        self.0.send_replace(ReadyState::Ready);
    }

    /// Marks it not ready; `reason` is a short, fixed phrase served as the 503 body (a
    /// `&'static str`, so no runtime value, let alone a secret, can reach the probe's output).
    pub fn set_not_ready(&self, reason: &'static str) {
        self.0.send_replace(ReadyState::NotReady(reason));
    }

    /// The current state.
    pub fn get(&self) -> ReadyState {
        *self.0.borrow()
    }

    /// A receiver of changes, for a caller that waits for readiness.
    pub fn subscribe(&self) -> watch::Receiver<ReadyState> {
        self.0.subscribe()
    }
}

/// What the handlers share.
#[derive(Clone)]
struct Shared {
    readiness: Readiness,
    metrics: MetricsRender,
}

/// The routes: the three endpoints, 404 for every other path.
fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(shared)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(shared): State<Shared>) -> Response {
    match shared.readiness.get() {
        ReadyState::Ready => (StatusCode::OK, "ok").into_response(),
        ReadyState::NotReady(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn metrics(State(shared): State<Shared>) -> Response {
    let body = (shared.metrics)();
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response()
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found")
}

/// A bound health server, ready to serve.
pub struct HealthServer {
    listener: TcpListener,
    shared: Shared,
}

impl fmt::Debug for HealthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthServer")
            .field("addr", &self.listener.local_addr().ok())
            .field("readiness", &self.shared.readiness)
            .finish_non_exhaustive()
    }
}

impl HealthServer {
    /// Binds `addr`; the server answers once [`HealthServer::serve`] runs. Binding first lets
    /// the caller fail fast on a taken port, before it starts anything else.
    pub async fn bind(
        addr: SocketAddr,
        readiness: Readiness,
        metrics: MetricsRender,
    ) -> Result<Self, HealthError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HealthError::Bind { addr, source })?;
        Ok(Self {
            listener,
            shared: Shared { readiness, metrics },
        })
    }

    /// The bound address (the port chosen when binding port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, HealthError> {
        self.listener.local_addr().map_err(HealthError::Serve)
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight requests
    /// finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HealthError> {
        axum::serve(self.listener, router(self.shared))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(HealthError::Serve)
    }
}
