//! Nexus's shared state: seal status, engines, keeper clients, audit.

use std::sync::{Arc, RwLock};

use spike_core::api::{InitRequest, InitResponse, VerifyResponse};
use spike_core::audit::{AuditKey, AuditRecord, Checkpoint, Decision};

use crate::audit_log::AuditWriter;
use spike_core::error::ErrorCode;
use spike_core::id::{Builtin, SpiffeId, TrustDomain};
use spike_core::path::SecretPath;
use spike_core::policy::Permission;
use spike_runtime::net::MtlsClient;
use spike_runtime::svid::SvidSource;
use spike_store::{Batch, Store, StoreError, Table};

use crate::breakglass::PendingRestore;
use crate::config::NexusConfig;
use crate::error::{AppError, AppResult};
use crate::keys::{InitRecord, OpenKeys};
use crate::metrics::Metrics;
use crate::policies::Policies;
use crate::ratelimit::RateLimiter;
use crate::secrets::Secrets;
use crate::{StartError, recovery};

/// A keeper that does not answer within this is treated as unreachable for this round (a
/// frozen keeper accepts TCP but never finishes the handshake).
const KEEPER_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// System records (the init record).
pub(crate) const META: Table = Table::new("meta");
pub(crate) const INIT_KEY: &[u8] = b"init";

/// Where Nexus stands.
pub(crate) enum Seal {
    /// No init record: waiting for bootstrap.
    Uninitialized,
    /// Initialized, but the root key is not rebuilt yet.
    Sealed(String),
    /// The root key is in memory.
    Open(Arc<Opened>),
}

/// What exists only while Nexus is open.
pub(crate) struct Opened {
    pub(crate) keys: OpenKeys,
    pub(crate) audit: AuditWriter,
    /// The newest durable audit head, to detect truncation of the live log.
    pub(crate) audit_head: std::sync::Mutex<Option<Checkpoint>>,
}

impl Opened {
    pub(crate) fn audit_key(&self) -> AuditKey {
        AuditKey::new(self.keys.audit_key())
    }
}

/// The running Nexus.
pub struct Nexus {
    pub(crate) config: NexusConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) seal: RwLock<Seal>,
    pub(crate) init: RwLock<Option<InitRecord>>,
    pub(crate) secrets: Secrets,
    pub(crate) policies: Policies,
    pub(crate) keepers: Vec<MtlsClient>,
    pub(crate) metrics: Metrics,
    pub(crate) limiter: RateLimiter,
    /// Serializes everything that changes the root key or its splits (init, unseal, restore,
    /// rotate, rekey, break-glass export, keeper re-supply) so they cannot interleave.
    pub(crate) open_lock: tokio::sync::Mutex<()>,
    /// Break-glass shares received so far by restore (only while sealed).
    pub(crate) restore: std::sync::Mutex<Option<PendingRestore>>,
}

impl Nexus {
    pub(crate) fn new(
        config: NexusConfig,
        source: Arc<dyn SvidSource>,
        store: Arc<dyn Store>,
    ) -> Result<Self, StartError> {
        let td = config.trust_domain.clone();
        let keepers = config
            .keepers
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let index = u8::try_from(i + 1).unwrap_or(u8::MAX);
                MtlsClient::new(addr.clone(), Builtin::Keeper(index).id(&td), source.clone())
                    .map(|c| c.with_timeout(KEEPER_CALL_TIMEOUT))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            secrets: Secrets::new(store.clone(), config.secret_limits).with_batch_limits(
                crate::secrets::BatchLimits {
                    max_items: config.max_batch_items,
                    max_bytes: config.max_batch_bytes,
                },
            ),
            policies: Policies::new(store.clone()),
            limiter: RateLimiter::new(config.rate_limits),
            config,
            store,
            seal: RwLock::new(Seal::Uninitialized),
            init: RwLock::new(None),
            keepers,
            metrics: Metrics::default(),
            open_lock: tokio::sync::Mutex::new(()),
            restore: std::sync::Mutex::new(None),
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.config.trust_domain
    }

    /// True while Nexus holds no root key.
    pub fn is_sealed(&self) -> bool {
        !matches!(
            *self.seal.read().unwrap_or_else(|p| p.into_inner()),
            Seal::Open(_)
        )
    }

    /// Why Nexus is not open, if it is not.
    pub fn seal_reason(&self) -> Option<String> {
        match &*self.seal.read().unwrap_or_else(|p| p.into_inner()) {
            Seal::Uninitialized => Some("not initialized: run `spike bootstrap`".into()),
            Seal::Sealed(r) => Some(r.clone()),
            Seal::Open(_) => None,
        }
    }

    pub(crate) fn set_seal(&self, s: Seal) {
        *self.seal.write().unwrap_or_else(|p| p.into_inner()) = s;
    }

    pub(crate) fn opened(&self) -> AppResult<Arc<Opened>> {
        match &*self.seal.read().unwrap_or_else(|p| p.into_inner()) {
            Seal::Open(o) => Ok(o.clone()),
            Seal::Uninitialized => Err(AppError::new(
                ErrorCode::Sealed,
                "Nexus is not initialized yet; run `spike bootstrap`",
            )),
            Seal::Sealed(reason) => Err(AppError::new(
                ErrorCode::Sealed,
                format!("Nexus is sealed: {reason}"),
            )),
        }
    }

    pub(crate) fn init_record(&self) -> Option<InitRecord> {
        self.init.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the init record at start.
    pub(crate) async fn load_init_state(&self) {
        match self.store.get(META, INIT_KEY).await {
            Ok(Some(raw)) => match InitRecord::decode(&raw) {
                Ok(rec) => {
                    *self.init.write().unwrap_or_else(|p| p.into_inner()) = Some(rec);
                    self.set_seal(Seal::Sealed("waiting for keeper shares".into()));
                }
                Err(e) => self.set_seal(Seal::Sealed(format!("init record unusable: {e}"))),
            },
            Ok(None) => self.set_seal(Seal::Uninitialized),
            Err(e) => self.set_seal(Seal::Sealed(format!("storage unavailable: {e}"))),
        }
    }

    /// The init record as stored, with its exact bytes for a compare-and-set.
    pub(crate) async fn read_init(&self) -> AppResult<(Vec<u8>, InitRecord)> {
        let raw = self
            .store
            .get(META, INIT_KEY)
            .await
            .map_err(|e| AppError::internal("store", e))?
            .ok_or_else(|| {
                AppError::new(
                    ErrorCode::NotInitialized,
                    "Nexus is not initialized yet; run `spike bootstrap`",
                )
            })?;
        let record = InitRecord::decode(&raw).map_err(|e| AppError::internal("init record", e))?;
        Ok((raw, record))
    }

    /// Replaces the init record with `next` in one durable commit, if it still is `old`
    /// (compare-and-set), then updates the in-memory copy. On any failure nothing changed.
    pub(crate) async fn commit_init(&self, old: &[u8], next: &InitRecord) -> AppResult<()> {
        let mut batch = Batch::new();
        batch.require_value(META, INIT_KEY.to_vec(), old.to_vec());
        batch.put(META, INIT_KEY.to_vec(), next.encode());
        match self.store.commit(batch).await {
            Ok(()) => {
                *self.init.write().unwrap_or_else(|p| p.into_inner()) = Some(next.clone());
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => Err(AppError::new(
                ErrorCode::CasMismatch,
                "the init record changed meanwhile; nothing was changed: retry",
            )),
            Err(e) => Err(AppError::internal("store", e)),
        }
    }

    /// Opens with `keys`: loads policies, opens the audit log.
    pub(crate) async fn open_with(&self, keys: OpenKeys) -> Result<(), String> {
        let audit = AuditWriter::open(&self.config.audit_log, AuditKey::new(keys.audit_key()))
            .await
            .map_err(|e| format!("audit log: {e}"))?;
        self.policies
            .reload(&keys)
            .await
            .map_err(|e| format!("policies: {}", e.0.message))?;
        self.set_seal(Seal::Open(Arc::new(Opened {
            keys,
            audit,
            audit_head: std::sync::Mutex::new(None),
        })));
        // Partial break-glass state is moot once open; its shares zeroize as they drop.
        *self.restore.lock().unwrap_or_else(|p| p.into_inner()) = None;
        tracing::info!("Nexus is open");
        Ok(())
    }

    /// Drops the keys (zeroized on drop) at shutdown.
    pub(crate) fn seal_for_shutdown(&self) {
        self.set_seal(Seal::Sealed("shutting down".into()));
        *self.restore.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Authorizes `caller` for `perm` on `path`: superuser passes; other built-in identities
    /// never get data access; workloads need a policy.
    pub(crate) fn authorize(
        &self,
        caller: &SpiffeId,
        path: &SecretPath,
        perm: Permission,
    ) -> AppResult<()> {
        match Builtin::of(caller, self.trust_domain()) {
            Some(Builtin::Superuser) => Ok(()),
            Some(_) => Err(AppError::forbidden()),
            None if self.policies.engine().allows(caller, path, perm) => Ok(()),
            None => Err(AppError::forbidden()),
        }
    }

    /// Policy administration: the superuser, or a workload with `super` on every path.
    pub(crate) fn authorize_admin(&self, caller: &SpiffeId) -> AppResult<()> {
        match Builtin::of(caller, self.trust_domain()) {
            Some(Builtin::Superuser) => Ok(()),
            Some(_) => Err(AppError::forbidden()),
            None if self.policies.is_admin(caller) => Ok(()),
            None => Err(AppError::forbidden()),
        }
    }

    /// Writes one audit line; fails closed.
    pub(crate) async fn audit(
        &self,
        opened: Option<&Opened>,
        caller: &SpiffeId,
        action: &'static str,
        path: Option<&str>,
        outcome: &Result<(), ErrorCode>,
    ) -> AppResult<()> {
        let (decision, reason) = match outcome {
            Ok(()) => (Decision::Allow, "ok"),
            Err(ErrorCode::Forbidden) => (Decision::Deny, "forbidden"),
            Err(code) => (Decision::Error, code.as_str()),
        };
        let Some(opened) = opened else {
            // No audit key while sealed; the refusal goes to the operational log.
            tracing::info!(caller = %caller, action, ?decision, %reason, "request while sealed");
            return Ok(());
        };
        let mut record = AuditRecord::new(action, decision, reason).with_caller(caller.clone());
        if let Some(p) = path {
            record = record.with_path(p);
        }
        let head = opened.audit.append(record).await.map_err(|e| {
            tracing::error!(error = %e, "audit log write failed; refusing the request");
            AppError::new(ErrorCode::Unavailable, "the audit log cannot be written")
        })?;
        if let Ok(mut h) = opened.audit_head.lock()
            && h.as_ref().is_none_or(|c| c.seq < head.seq)
        {
            *h = Some(head);
        }
        Ok(())
    }

    /// `POST /v1/bootstrap/init`.
    pub(crate) async fn initialize(&self, req: InitRequest) -> AppResult<InitResponse> {
        let n = self.keepers.len();
        if usize::from(req.shares) != n {
            return Err(AppError::new(
                ErrorCode::BadRequest,
                format!("shares must equal the number of keepers Nexus is configured with ({n})"),
            ));
        }
        if req.threshold == 0 || req.threshold > req.shares {
            return Err(AppError::new(
                ErrorCode::BadRequest,
                "threshold must be between 1 and shares",
            ));
        }
        let _guard = self.open_lock.lock().await;
        if self.init_record().is_some() {
            return Ok(InitResponse {
                initialized: false,
                keepers_acknowledged: 0,
            });
        }
        let (keys, record) = OpenKeys::create(req.shares, req.threshold)
            .map_err(|e| AppError::internal("key generation", e))?;
        let mut batch = Batch::new();
        batch.require_absent(META, INIT_KEY.to_vec());
        batch.put(META, INIT_KEY.to_vec(), record.encode());
        match self.store.commit(batch).await {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => {
                // Someone else initialized first; their key stands.
                self.load_init_state().await;
                return Ok(InitResponse {
                    initialized: false,
                    keepers_acknowledged: 0,
                });
            }
            Err(e) => return Err(AppError::internal("store", e)),
        }
        *self.init.write().unwrap_or_else(|p| p.into_inner()) = Some(record);
        let (epoch, shares) = keys
            .keeper_shares()
            .map_err(|e| AppError::internal("share derivation", e))?;
        self.open_with(keys)
            .await
            .map_err(|e| AppError::internal("open after init", e))?;
        let acked = recovery::push_shares(self, epoch, &shares).await;
        tracing::info!(
            acked,
            shares = req.shares,
            "initialized; root key split to keepers"
        );
        Ok(InitResponse {
            initialized: true,
            keepers_acknowledged: acked,
        })
    }

    /// `POST /v1/bootstrap/verify`: proves the keepers' shares rebuild the key in memory.
    pub(crate) async fn verify(&self) -> AppResult<VerifyResponse> {
        let opened = self.opened()?;
        let params = opened.keys.params();
        let mut valid = 0u8;
        let mut collected = Vec::new();
        for (i, body) in recovery::fetch_shares(self).await {
            if opened.keys.is_current_share(i, &body.share) {
                valid += 1;
                collected.push(body.share);
            }
        }
        let verified = valid >= params.threshold && opened.keys.rebuilds_from(&collected);
        if !verified {
            return Err(AppError::new(
                ErrorCode::Unavailable,
                format!(
                    "only {valid} keepers hold a valid share; {} are needed",
                    params.threshold
                ),
            ));
        }
        Ok(VerifyResponse {
            verified,
            keepers_with_share: valid,
            threshold: params.threshold,
        })
    }
}
