//! Nexus: the SPIKE secret store service.
//!
//! Nexus starts sealed: it holds no root key and answers `503 sealed` on every data route.
//! A background task ([`recovery`]) polls the configured keepers, rebuilds the root key from
//! `threshold` shares, checks it against the stored init record, and opens. While open it
//! re-pushes shares to keepers that come back empty. `POST /v1/bootstrap/init` creates the
//! root key once (an atomic compare-and-set in the store).
//!
//! Words: *sealed* is only Nexus's status (no root key in memory); values are *encrypted* and
//! *decrypted*; stored records are *tagged* and *verified* (MACs).
//!
//! Modules, each calling only those below it (no module calls back into its caller):
//!
//! ```text
//! routes      HTTP handlers; the only place typed errors become wire errors
//! operator:   rotation (rotate, rekey: the state machine)   breakglass (export, restore)
//!             backup (a sealed snapshot of the store)
//! recovery    the keeper timer: unseal while sealed, re-supply keepers while open
//! reencrypt   after a rotation: move records to the new data key, then destroy the old
//! unseal      initialize, rebuild from shares, open, verify, finish a pending change
//! freshness   rollback detection: the store's witness, checked against the keepers
//! keepers     fetch and push shares; keeper reachability (logs, gauge)
//! state       Nexus: status, init record storage, authorization, audit
//! engines:    secrets, policies, records (tag/verify), keys (open keys, splits, init record)
//! leaves:     error, extract, metrics, ratelimit, clock, restore_shares (break-glass shares
//!             received so far), fault (crash-test hook), config
//! ```
//!
//! Test fixtures shared by the unit tests live in `fixtures` (cfg(test)).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod audit_log;
mod backup;
mod breakglass;
mod clock;
pub mod config;
mod error;
mod extract;
mod fault;
#[cfg(test)]
mod fixtures;
mod freshness;
mod keepers;
mod keys;
mod metrics;
mod policies;
mod ratelimit;
mod records;
mod recovery;
mod reencrypt;
mod refusals;
mod restore_shares;
mod rotation;
mod routes;
mod scope;
mod sealed_audit;
mod secrets;
mod state;
mod stripes;
mod tokens;
mod unseal;

use std::sync::Arc;

use tokio::net::TcpListener;

use spike_runtime::net::{serve_mtls, serve_plain_bounded};
use spike_runtime::svid::SvidSource;
use spike_runtime::tls::{PeerRule, server_config};
use spike_store::Store;

pub use config::{LimitSettings, NexusAddrs, NexusArgs, NexusConfig, NexusSettings};
pub use ratelimit::{Rate, RateLimits};
pub use secrets::SecretLimits;
pub use state::Nexus;

/// Why Nexus could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The SVID is not Nexus's identity.
    #[error("this process's SVID {0} is not the Nexus identity (spiffe://<td>/spike/nexus)")]
    NotNexus(String),
    /// TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] spike_runtime::tls::TlsError),
    /// The store could not be opened.
    #[error("storage: {0}")]
    Store(#[from] spike_store::StoreError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
}

/// Bound listeners, so callers can bind port 0 and learn the ports.
pub struct NexusListeners {
    /// mTLS API.
    pub api: TcpListener,
    /// Health and metrics.
    pub health: TcpListener,
}

impl NexusListeners {
    /// Binds both addresses.
    pub async fn bind(addrs: NexusAddrs) -> Result<Self, StartError> {
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        Ok(Self {
            api: bind(addrs.api).await?,
            health: bind(addrs.health).await?,
        })
    }
}

/// Opens the configured store: redb in `data_dir`, or memory.
pub fn open_store(config: &NexusConfig) -> Result<Arc<dyn Store>, StartError> {
    Ok(match &config.data_dir {
        Some(dir) => Arc::new(spike_store::RedbStore::open(dir)?),
        None => Arc::new(spike_store::MemoryStore::new()),
    })
}

/// Starts Nexus; the returned task ends after `shutdown` completes: the API stops accepting,
/// in-flight requests get up to `config.conn.drain_timeout` to finish, and the keys are
/// dropped (zeroized).
pub async fn start(
    config: NexusConfig,
    source: Arc<dyn SvidSource>,
    store: Arc<dyn Store>,
    listeners: NexusListeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(Arc<Nexus>, tokio::task::JoinHandle<()>), StartError> {
    let td = config.trust_domain.clone();
    let own = source.current().id().clone();
    if own != spike_core::id::Builtin::Nexus.id(&td) {
        return Err(StartError::NotNexus(own.to_string()));
    }
    if config.keepers.is_empty() || config.keepers.len() > 255 {
        return Err(StartError::Config(
            "configure between 1 and 255 keepers".into(),
        ));
    }
    // Reads the crash-test hook now, so a set one is logged at start, not at the first push.
    let _ = fault::armed();
    let tls = Arc::new(server_config(source.clone(), PeerRule::AnyInTrustDomain)?);
    let nexus = Arc::new(Nexus::new(config, source, store)?);
    nexus.load_init_state().await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let conn = nexus.config().conn;
    let api = serve_mtls(
        listeners.api,
        tls,
        routes::api_router(nexus.clone()),
        conn,
        wait(stop_rx.clone()),
    );
    let health = serve_plain_bounded(
        listeners.health,
        routes::health_router(nexus.clone()),
        conn.drain_timeout,
        wait(stop_rx.clone()),
    );
    let recovery = recovery::run(nexus.clone(), wait(stop_rx.clone()));
    let reencryption = reencrypt::run(nexus.clone(), wait(stop_rx));
    let n = nexus.clone();
    let task = tokio::spawn(async move {
        let stopper = async move {
            shutdown.await;
            tracing::info!("shutting down: draining connections");
            let _ = stop_tx.send(true);
        };
        let (_, _, h, _, _) = tokio::join!(stopper, api, health, recovery, reencryption);
        if let Err(e) = h {
            tracing::warn!(error = %e, "health server failed");
        }
        // Every request has been answered: finish the audit log, so the stored checkpoint
        // reaches its last line (a cut tail is then noticed on the next start).
        if let Ok(o) = n.opened() {
            o.audit.close().await;
        }
        // Drop the keys (zeroized on drop) before the process goes.
        n.seal_for_shutdown();
        tracing::info!("stopped; keys dropped");
    });
    Ok((nexus, task))
}
