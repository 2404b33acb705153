//! Test fixtures shared by Nexus's unit tests: the one stub SVID source, engines on a fresh
//! store with fresh keys, Nexus instances on a store (open, or restarted "after kill -9"),
//! and what keepers would answer.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use spike_core::api::ShareBody;
use spike_core::error::ErrorCode;
use spike_core::id::TrustDomain;
use spike_runtime::svid::{Identity, SvidSource};
use spike_store::{Batch, MemoryStore, Store};

use crate::config::NexusConfig;
use crate::error::AppResult;
use crate::keys::OpenKeys;
use crate::state::{INIT_KEY, META, Nexus};
use crate::unseal::unseal_with;

/// The trust domain of every fixture.
pub(crate) const TD: &str = "spike.test";

/// `Nexus::new` needs a source only for keeper handshakes, which never start in unit tests:
/// either no keeper is configured or the keepers' port is closed, so every call fails at
/// connect.
struct NoSource(TrustDomain);

impl SvidSource for NoSource {
    fn current(&self) -> Arc<Identity> {
        unreachable!("unit tests never complete a keeper handshake")
    }
    fn trust_domain(&self) -> &TrustDomain {
        &self.0
    }
}

/// Fresh keys of a 3/2 split.
pub(crate) fn keys() -> OpenKeys {
    OpenKeys::create(3, 2).unwrap().0
}

/// The error code of a result that must be an error.
pub(crate) fn code<T>(r: AppResult<T>) -> ErrorCode {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.code(),
    }
}

/// An engine (secrets, policies) on a fresh memory store, with fresh keys.
pub(crate) struct Engine<E> {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) engine: E,
    pub(crate) keys: OpenKeys,
}

impl<E> Engine<E> {
    /// `make` builds the engine on the store.
    pub(crate) fn new(make: impl FnOnce(Arc<dyn Store>) -> E) -> Self {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        Self {
            engine: make(store.clone()),
            store,
            keys: keys(),
        }
    }
}

/// A configuration in [`TD`] with `keepers` and an audit log at `audit_log`.
pub(crate) fn config(keepers: Vec<String>, audit_log: PathBuf) -> NexusConfig {
    NexusConfig::new(TrustDomain::new(TD).unwrap(), keepers, audit_log)
}

/// A Nexus with `config` on `store`.
pub(crate) fn nexus(config: NexusConfig, store: Arc<dyn Store>) -> Arc<Nexus> {
    let td = config.trust_domain.clone();
    Arc::new(Nexus::new(config, Arc::new(NoSource(td)), store).unwrap())
}

/// A Nexus on `store` with three unreachable keepers; tests play the keepers by hand.
/// Each gets its own audit log, so several can be open at once (one is locked per writer).
pub(crate) fn nexus_on(store: Arc<dyn Store>, dir: &Path) -> Arc<Nexus> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let keepers = vec!["127.0.0.1:1".to_owned(); 3];
    nexus(config(keepers, dir.join(format!("audit-{n}.log"))), store)
}

/// What the keepers would answer: every share of the keys' current split.
pub(crate) fn keeper_answers(keys: &OpenKeys) -> Vec<(u8, ShareBody)> {
    let (epoch, shares) = keys.keeper_shares().unwrap();
    shares
        .into_iter()
        .map(|share| (share.index(), ShareBody { share, epoch }))
        .collect()
}

/// A store initialized with a fresh 3/2 root key, and an open Nexus on it.
pub(crate) async fn open_nexus(dir: &Path) -> (Arc<dyn Store>, Arc<Nexus>) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (keys, record) = OpenKeys::create(3, 2).unwrap();
    let mut batch = Batch::new();
    batch.put(META, INIT_KEY.to_vec(), record.encode());
    store.commit(batch).await.unwrap();
    let n = nexus_on(store.clone(), dir);
    n.load_init_state().await;
    n.open_with(keys).await.unwrap();
    (store, n)
}

/// Restarts "after kill -9": a new Nexus on the same store, unsealed with `answers`.
pub(crate) async fn restart(
    store: &Arc<dyn Store>,
    dir: &Path,
    answers: &[(u8, ShareBody)],
) -> (Arc<Nexus>, Result<(), String>) {
    let n = nexus_on(store.clone(), dir);
    n.load_init_state().await;
    assert!(n.is_sealed());
    let (raw, record) = n.read_init().await.unwrap();
    let result = unseal_with(&n, &raw, &record, answers).await;
    // As the sealed reason reads, which the tests check.
    (n, result.map_err(|e| e.to_string()))
}

/// Restarts `old` as a clean stop would: its audit log closed, then a new Nexus with the same
/// configuration (so the same audit log) on the same store, unsealed with `answers`.
pub(crate) async fn restart_cleanly(
    old: &Nexus,
    store: &Arc<dyn Store>,
    answers: &[(u8, ShareBody)],
) -> Arc<Nexus> {
    if let Ok(o) = old.opened() {
        o.audit.close().await;
    }
    old.seal_for_shutdown();
    let n = nexus(old.config().clone(), store.clone());
    n.load_init_state().await;
    let (raw, record) = n.read_init().await.unwrap();
    unseal_with(&n, &raw, &record, answers).await.unwrap();
    n
}

/// A Nexus without keepers behind its API router, on a memory store, optionally open.
pub(crate) struct Served {
    pub(crate) router: Router,
    pub(crate) nexus: Arc<Nexus>,
    /// Holds the audit log.
    pub(crate) dir: tempfile::TempDir,
}

/// A [`Served`] Nexus whose configuration `edit` adjusts.
pub(crate) async fn served(edit: impl FnOnce(&mut NexusConfig), open: bool) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(Vec::new(), dir.path().join("audit.log"));
    edit(&mut config);
    let nexus = nexus(config, Arc::new(MemoryStore::new()));
    if open {
        nexus.open_with(keys()).await.unwrap();
    }
    Served {
        router: crate::routes::api_router(nexus.clone()),
        nexus,
        dir,
    }
}

/// A caller that reads secrets in engine tests (scopes that name IDs are tested on their own).
pub(crate) fn reader() -> spike_core::id::SpiffeId {
    spike_core::id::SpiffeId::new("spiffe://spike.dev/test/reader")
        .unwrap_or_else(|_| unreachable!())
}
