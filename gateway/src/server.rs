//! Running the gateway: the agent listener (TLS with the agents' SVIDs, or plain loopback in
//! sidecar mode), the health listener, and graceful shutdown that lets streams drain.
//!
//! The shared listener lets a client without a valid SVID complete its handshake (the
//! runtime's optional client authentication) so that the proxy can refuse it per request the
//! way it refuses a stolen token, instead of telling it apart at the TLS layer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use spike_core::id::{Builtin, SpiffeId, TrustDomain};
use spike_runtime::net::{
    ConnLimits, MtlsClient, serve_plain_bounded, serve_tls_optional_client_auth,
};
use spike_runtime::svid::SvidSource;
use spike_runtime::tls::{OptionalClientAuth, PeerRule};
use tokio::net::TcpListener;

use crate::audit::{AuditTrail, open_when_keyed};
use crate::caller::Caller;
use crate::config::Checked;
use crate::egress::{Egress, EgressLimits, SystemResolver};
use crate::proxy::Proxy;
use crate::refusal::{Reason, Refusal};
use crate::resolve::{CachedResolver, NexusResolver};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The gateway's SVID is not a gateway identity.
    #[error(
        "this process's SVID {0} is not a gateway identity (spiffe://<td>/spike/gateway/<name>): Nexus resolves tokens only for those"
    )]
    NotAGateway(String),
    /// TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

#[derive(Clone)]
struct App {
    proxy: Arc<Proxy>,
    sidecar: Option<SpiffeId>,
}

/// The running gateway's bound addresses.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Agents connect here.
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz`.
    pub health: SocketAddr,
}

/// `/readyz`: ready once the audit log is open, since until then every request is refused.
async fn ready(audit: Arc<AuditTrail>) -> (http::StatusCode, &'static str) {
    if audit.is_open() {
        (http::StatusCode::OK, "ready\n")
    } else {
        (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the audit log is not open yet (waiting for its chain key from Nexus)\n",
        )
    }
}

/// Starts the gateway with `checked` settings and SVID `source`; runs until `shutdown`.
pub async fn start(
    checked: Checked,
    source: Arc<dyn SvidSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(Bound, tokio::task::JoinHandle<()>), StartError> {
    let own = source.current().id().clone();
    if !own.path().starts_with("/spike/gateway/") {
        return Err(StartError::NotAGateway(own.to_string()));
    }
    let td: TrustDomain = own.trust_domain();
    let nexus = MtlsClient::new(
        checked.nexus.clone(),
        Builtin::Nexus.id(&td),
        source.clone(),
    )?;
    let audit = Arc::new(AuditTrail::new(own.clone()));
    let opening = tokio::spawn(open_when_keyed(
        audit.clone(),
        nexus.clone(),
        checked.audit_log,
        checked.audit,
    ));
    let proxy = Arc::new(Proxy::new(
        checked.routes,
        checked.forward,
        Egress::new(Arc::new(SystemResolver), EgressLimits::default()),
        Arc::new(CachedResolver::new(
            Arc::new(NexusResolver::new(nexus)),
            checked.resolve_cache,
        )),
        checked.limits,
        audit.clone(),
    ));
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let api = bind(checked.listen).await?;
    let health = bind(checked.health_listen).await?;
    let bound = Bound {
        listen: api.local_addr().map_err(|source| StartError::Bind {
            addr: checked.listen,
            source,
        })?,
        health: health.local_addr().map_err(|source| StartError::Bind {
            addr: checked.health_listen,
            source,
        })?,
    };
    let app = App {
        proxy,
        sidecar: checked.sidecar_agent,
    };
    let router = Router::new().fallback(forward).with_state(app.clone());
    let metrics = app.proxy.metrics().clone();
    let ready_audit = audit.clone();
    let health_router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || ready(ready_audit.clone())))
        .route("/metrics", get(move || async move { metrics.render() }));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let limits: ConnLimits = checked.server;
    let api_task: tokio::task::JoinHandle<()> = match app.sidecar {
        // Sidecar: the pod's loopback, one agent, no TLS (the agent's container must not see
        // the gateway's SPIFFE socket or files; docs/gateway.md says why).
        Some(_) => tokio::spawn({
            let stop = stopped();
            async move {
                if let Err(e) = serve_plain_bounded(api, router, limits.drain_timeout, stop).await {
                    tracing::error!(error = %e, "agent listener failed");
                }
            }
        }),
        None => {
            let auth = Arc::new(OptionalClientAuth::new(
                source.clone(),
                PeerRule::AnyInTrustDomain,
            )?);
            tokio::spawn(serve_tls_optional_client_auth(
                api,
                auth,
                router,
                limits,
                stopped(),
            ))
        }
    };
    let health_task = tokio::spawn({
        let stop = stopped();
        async move {
            if let Err(e) =
                serve_plain_bounded(health, health_router, limits.drain_timeout, stop).await
            {
                tracing::error!(error = %e, "health listener failed");
            }
        }
    });
    tracing::info!(listen = %bound.listen, health = %bound.health, gateway = %own, "gateway listening");
    let task = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        let _ = api_task.await;
        let _ = health_task.await;
        // After the last request: the log's last lines are synced and its lock released.
        opening.abort();
        audit.close().await;
    });
    Ok((bound, task))
}

async fn forward(State(app): State<App>, req: Request) -> Response {
    let caller = match &app.sidecar {
        Some(id) => Some(Caller::Agent(id.clone())),
        None => Caller::of(req.extensions()),
    };
    let Some(caller) = caller else {
        return Refusal::new(Reason::BadRequest, "no agent identity on this connection")
            .to_response()
            .map(axum::body::Body::new)
            .into_response();
    };
    app.proxy
        .handle(&caller, req)
        .await
        .map(axum::body::Body::new)
        .into_response()
}
