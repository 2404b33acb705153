//! The keeper: holds one Shamir share of Nexus's root key, in memory only.
//!
//! A keeper has no disk state. It learns its index from its own SVID
//! (`spiffe://<td>/spike/keeper/<i>`), accepts and serves its share only to Nexus (enforced
//! at the TLS layer: any other client fails the handshake), refuses a share meant for another
//! index, and is ready only while it holds a share. A restarted keeper is empty until Nexus
//! pushes its share again.
//!
//! During a root-key rotation or rekey a keeper holds two shares: the new split's (current)
//! and the one of the last split Nexus confirmed (previous). Nexus names the split to keep on
//! every push (`PUT /v1/share?keep=<epoch>`); a push without `keep` drops the previous share.
//! So a Nexus that crashes, even twice in a row, part-way through pushing a new split still
//! finds `threshold` keepers holding the old one (`GET /v1/share/previous`).
//!
//! A keeper also holds the store's freshness witness (`PUT`/`GET /v1/witness`): the latest
//! generation and digest of Nexus's store, tagged by Nexus. It is a witness outside the data
//! directory, so an older copy of the store put back behind Nexus's back is refused on the next
//! unseal. A keeper cannot check the tag (it has no key) and does not need to: it keeps the
//! latest push, and Nexus checks what it gets back.
#![warn(missing_docs)]

mod config;

pub use config::{KeeperArgs, KeeperSettings, spec};

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use serde::Deserialize;
use spike_core::api::{ShareBody, WitnessBody};
use spike_core::error::{ApiError, ErrorCode};
use spike_core::id::{Builtin, TrustDomain};
use spike_runtime::net::{ConnLimits, serve_mtls, serve_plain_bounded};
use spike_runtime::svid::SvidSource;
use spike_runtime::tls::{PeerRule, server_config};

/// Why a keeper could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeeperError {
    /// The keeper's SVID is not a keeper identity.
    #[error("this process's SVID {0} is not a keeper identity (spiffe://<td>/spike/keeper/<i>)")]
    NotAKeeper(String),
    /// A share for another keeper index.
    #[error("share index does not match this keeper's index")]
    WrongIndex,
    /// TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] spike_runtime::tls::TlsError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The shares a keeper holds. Zeroized when replaced or dropped.
#[derive(Default)]
struct Slot(RwLock<Held>);

/// The share of the split in force, and the one of the last confirmed split while Nexus has
/// not yet confirmed the current one.
#[derive(Default)]
struct Held {
    current: Option<ShareBody>,
    previous: Option<ShareBody>,
    /// The store's freshness witness as last pushed (not secret).
    witness: Option<WitnessBody>,
}

impl Held {
    /// Stores `body` as the current share. Of the shares held so far, only the one of split
    /// `keep` stays (as the previous share); the others drop (and zeroize). A share of the
    /// same split as `body` is never kept: it would be the same share or a stale one.
    fn store(&mut self, body: ShareBody, keep: Option<u32>) {
        let epoch = body.epoch;
        let kept = keep.filter(|k| *k != epoch).and_then(|k| {
            [self.current.take(), self.previous.take()]
                .into_iter()
                .flatten()
                .find(|b| b.epoch == k)
        });
        self.current = Some(body);
        self.previous = kept;
    }
}

/// `PUT /v1/share` query: the epoch of the split whose share the keeper keeps alongside.
#[derive(Debug, Deserialize)]
struct PutQuery {
    keep: Option<u32>,
}

#[derive(Clone)]
struct AppState {
    index: u8,
    slot: Arc<Slot>,
}

/// A running keeper's state, for tests and `spike dev`.
#[derive(Clone)]
pub struct KeeperHandle {
    state: AppState,
}

impl KeeperHandle {
    /// True while the keeper holds a share.
    pub fn has_share(&self) -> bool {
        self.state
            .slot
            .0
            .read()
            .map(|s| s.current.is_some())
            .unwrap_or(false)
    }

    /// This keeper's 1-based index.
    pub fn index(&self) -> u8 {
        self.state.index
    }

    /// A copy of the held share. Only for `spike dev`'s insecure persistence; a production
    /// keeper never hands its share to anything but Nexus.
    pub fn share(&self) -> Option<ShareBody> {
        self.state
            .slot
            .0
            .read()
            .ok()
            .and_then(|s| s.current.clone())
    }

    /// The epoch of the previous share kept during a rotation, if any (never the share).
    pub fn previous_epoch(&self) -> Option<u32> {
        self.state
            .slot
            .0
            .read()
            .ok()
            .and_then(|s| s.previous.as_ref().map(|b| b.epoch))
    }

    /// Loads a share directly (in-process, `spike dev` only), with the same index check as
    /// the API.
    pub fn preload(&self, body: ShareBody) -> Result<(), KeeperError> {
        if body.share.index() != self.state.index {
            return Err(KeeperError::WrongIndex);
        }
        if let Ok(mut slot) = self.state.slot.0.write() {
            slot.store(body, None);
        }
        Ok(())
    }
}

/// Addresses a keeper listens on.
#[derive(Debug, Clone, Copy)]
pub struct KeeperAddrs {
    /// The mTLS API (Nexus only).
    pub api: SocketAddr,
    /// Plain HTTP `/healthz`, `/readyz` and `/metrics`.
    pub health: SocketAddr,
}

/// Bound listeners of a keeper, so callers can use port 0 and learn the real ports.
pub struct KeeperListeners {
    /// The mTLS API listener.
    pub api: TcpListener,
    /// The health listener.
    pub health: TcpListener,
}

impl KeeperListeners {
    /// Binds both addresses.
    pub async fn bind(addrs: KeeperAddrs) -> Result<Self, KeeperError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| KeeperError::Bind { addr, source })
        };
        Ok(Self {
            api: bind(addrs.api).await?,
            health: bind(addrs.health).await?,
        })
    }
}

/// Starts a keeper on the given listeners with default connection limits; returns once both
/// servers are running.
pub fn start(
    source: Arc<dyn SvidSource>,
    listeners: KeeperListeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(KeeperHandle, tokio::task::JoinHandle<()>), KeeperError> {
    start_with(source, listeners, ConnLimits::default(), shutdown)
}

/// Starts a keeper with `limits` on its mTLS API. The returned task ends after `shutdown`
/// completes: the API stops accepting, in-flight requests get up to `limits.drain_timeout`,
/// and the share is dropped (zeroized).
pub fn start_with(
    source: Arc<dyn SvidSource>,
    listeners: KeeperListeners,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(KeeperHandle, tokio::task::JoinHandle<()>), KeeperError> {
    let td: TrustDomain = source.trust_domain().clone();
    let own = source.current().id().clone();
    let Some(Builtin::Keeper(index)) = Builtin::of(&own, &td) else {
        return Err(KeeperError::NotAKeeper(own.to_string()));
    };
    let tls = server_config(source, PeerRule::exactly(Builtin::Nexus.id(&td)))
        .map_err(KeeperError::Tls)?;
    let state = AppState {
        index,
        slot: Arc::new(Slot::default()),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = serve_mtls(
        listeners.api,
        Arc::new(tls),
        api_router(state.clone()),
        limits,
        wait(stop_rx.clone()),
    );
    let health = serve_plain_bounded(
        listeners.health,
        health_router(state.clone()),
        limits.drain_timeout,
        wait(stop_rx),
    );
    tracing::info!(
        index,
        "keeper started; holding no share until Nexus sends one"
    );
    let slot = state.slot.clone();
    let task = tokio::spawn(async move {
        let stopper = async move {
            shutdown.await;
            tracing::info!("shutting down: draining connections");
            let _ = stop_tx.send(true);
        };
        let (_, _, h) = tokio::join!(stopper, api, health);
        if let Err(e) = h {
            tracing::warn!(error = %e, "health server failed");
        }
        // The share (a `Share` zeroizes on drop) goes before the process does.
        if let Ok(mut s) = slot.0.write() {
            *s = Held::default();
        }
        tracing::info!("stopped; share dropped");
    });
    Ok((KeeperHandle { state }, task))
}

fn api_router(state: AppState) -> Router {
    Router::new()
        .route("/v1/share", get(get_share).put(put_share))
        .route("/v1/share/previous", get(get_previous))
        .route("/v1/witness", get(get_witness).put(put_witness))
        .fallback(not_found)
        .with_state(state)
}

fn health_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

struct AppError(ApiError);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0.to_body())).into_response()
    }
}

fn err(code: ErrorCode, msg: &str) -> AppError {
    AppError(ApiError::new(code, msg))
}

async fn not_found() -> AppError {
    err(ErrorCode::NotFound, "no such route")
}

async fn get_share(State(state): State<AppState>) -> Result<Response, AppError> {
    held_share(&state, |h| h.current.as_ref(), "this keeper holds no share")
}

async fn get_previous(State(state): State<AppState>) -> Result<Response, AppError> {
    held_share(
        &state,
        |h| h.previous.as_ref(),
        "this keeper holds no previous share",
    )
}

fn held_share(
    state: &AppState,
    pick: impl Fn(&Held) -> Option<&ShareBody>,
    missing: &str,
) -> Result<Response, AppError> {
    let slot = state
        .slot
        .0
        .read()
        .map_err(|_| err(ErrorCode::Internal, "keeper state is unavailable"))?;
    let body = pick(&slot).ok_or_else(|| err(ErrorCode::NoShare, missing))?;
    // The JSON holds the share in clear: build it in a buffer that is wiped once the response
    // has been sent, rather than in axum's ordinary (unwiped) JSON buffer.
    let json = body
        .to_json()
        .map_err(|_| err(ErrorCode::Internal, "the share could not be encoded"))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from(bytes::Bytes::from_owner(json)),
    )
        .into_response())
}

async fn put_share(
    State(state): State<AppState>,
    query: Result<Query<PutQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<StatusCode, AppError> {
    let Query(query) =
        query.map_err(|_| err(ErrorCode::BadRequest, "keep must be a split epoch"))?;
    let bytes = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|_| err(ErrorCode::TooLarge, "share body is too large"))?;
    // The body holds the share in clear: parse it from a buffer that is wiped afterwards.
    let body = ShareBody::from_json(Vec::from(bytes))
        .map_err(|_| err(ErrorCode::BadRequest, "body is not a valid share"))?;
    if body.share.index() != state.index {
        return Err(err(
            ErrorCode::BadRequest,
            "share index does not match this keeper's index",
        ));
    }
    let mut slot = state
        .slot
        .0
        .write()
        .map_err(|_| err(ErrorCode::Internal, "keeper state is unavailable"))?;
    // Replaced shares (a `Share` zeroizes on drop) are dropped here.
    let (epoch, replaced) = (body.epoch, slot.current.is_some());
    slot.store(body, query.keep);
    let kept = slot.previous.as_ref().map(|b| b.epoch);
    tracing::info!(index = state.index, epoch, replaced, ?kept, "share stored");
    Ok(StatusCode::NO_CONTENT)
}

async fn get_witness(State(state): State<AppState>) -> Result<Json<WitnessBody>, AppError> {
    let slot = state
        .slot
        .0
        .read()
        .map_err(|_| err(ErrorCode::Internal, "keeper state is unavailable"))?;
    slot.witness
        .map(Json)
        .ok_or_else(|| err(ErrorCode::NotFound, "this keeper holds no witness"))
}

async fn put_witness(
    State(state): State<AppState>,
    body: Result<Json<WitnessBody>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, AppError> {
    let Json(body) = body.map_err(|_| err(ErrorCode::BadRequest, "body is not a valid witness"))?;
    let mut slot = state
        .slot
        .0
        .write()
        .map_err(|_| err(ErrorCode::Internal, "keeper state is unavailable"))?;
    if slot.witness.map(|w| w.generation) != Some(body.generation) {
        tracing::debug!(
            index = state.index,
            generation = body.generation,
            "witness stored"
        );
    }
    slot.witness = Some(body);
    Ok(StatusCode::NO_CONTENT)
}

/// Prometheus text: whether the share is held, and the refused TLS handshakes by reason.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let held = u8::from((KeeperHandle { state }).has_share());
    let mut body = format!(
        "# HELP spike_keeper_has_share Whether this keeper holds its share (1) or not (0).\n\
         # TYPE spike_keeper_has_share gauge\n\
         spike_keeper_has_share {held}\n"
    );
    body.push_str(&spike_runtime::net::render_handshake_metrics());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if (KeeperHandle { state }).has_share() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no share")
    }
}
