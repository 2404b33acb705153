//! Nexus's shared state: its status (uninitialized, sealed, open), engines, keepers, audit.

use std::sync::{Arc, RwLock};

use spike_core::admin_scope::AdminScope;
use spike_core::audit::{AuditKey, AuditRecord, Decision};
use spike_core::error::ErrorCode;
use spike_core::id::{Builtin, SpiffeId, TrustDomain};
use spike_core::path::SecretPath;
use spike_core::policy::Permission;
use spike_runtime::svid::SvidSource;
use spike_store::{Batch, Store, StoreError, Table};

use crate::StartError;
use crate::audit_log::{AuditWriter, WriterOptions, store_anchor};
use crate::config::NexusConfig;
use crate::error::{AppError, AppResult};
use crate::keepers::Keepers;
use crate::keys::{InitRecord, OpenKeys};
use crate::metrics::Metrics;
use crate::policies::{Policies, PolicyAdmin};
use crate::ratelimit::{RateClass, RateLimiter};
use crate::refusals::Suppressed;
use crate::restore_shares::PendingRestore;
use crate::sealed_audit::SealedAudit;
use crate::secrets::Secrets;

/// System records (the init record).
pub(crate) const META: Table = Table::new("meta");
pub(crate) const INIT_KEY: &[u8] = b"init";
/// Set (to a fresh random value) with every change of the init record, cleared once the store
/// was compacted after it: a crash between the two leaves it set, so the compaction is redone.
const COMPACT_KEY: &[u8] = b"compact-pending";

/// Action of the summary line of a caller's refusals counted instead of written.
pub(crate) const SUPPRESSED_ACTION: &str = "audit.suppressed";

/// Outcomes that count against a caller's refusal rate: what a caller's own request caused
/// (no permission, bad input), not what Nexus or the data did (sealed, not found, conflict).
fn is_refusal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Forbidden
            | ErrorCode::InvalidPath
            | ErrorCode::BadRequest
            | ErrorCode::TooLarge
            | ErrorCode::UnsupportedMediaType
            | ErrorCode::InvalidPolicy
            | ErrorCode::MethodNotAllowed
            | ErrorCode::RateLimited
    )
}

/// Why the init record could not be read or replaced.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitStoreError {
    /// There is none: bootstrap has not run.
    #[error("Nexus is not initialized yet; run `spike bootstrap`")]
    NotInitialized,
    /// A compare-and-set lost: the record changed meanwhile, nothing was written.
    #[error("the init record changed meanwhile; nothing was changed: retry")]
    Changed,
    /// The stored record is unusable.
    #[error(transparent)]
    Record(#[from] crate::keys::InitRecordError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Why Nexus could not open with a rebuilt root key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// The audit log cannot be opened (or its chain does not verify under this key).
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit_log::AuditError),
    /// The stored policies cannot be loaded.
    #[error("policies: {}", .0.message)]
    Policies(#[source] spike_core::error::ApiError),
}

/// A value for the compaction mark that no earlier mark had (so clearing an old one cannot
/// clear a newer one).
fn compaction_mark() -> Vec<u8> {
    let mut b = [0u8; 16];
    // Without randomness the mark is still set; clearing it may then race a newer one, which
    // costs only a repeated compaction.
    let _ = spike_core::crypto::fill_random(&mut b);
    b.to_vec()
}

/// Where Nexus stands. "Sealed" means only this: no root key in memory.
#[derive(Clone)]
pub(crate) enum Status {
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
}

impl Opened {
    pub(crate) fn audit_key(&self) -> AuditKey {
        AuditKey::new(self.keys.audit_key())
    }
}

/// The running Nexus.
pub struct Nexus {
    config: NexusConfig,
    store: Arc<dyn Store>,
    status: RwLock<Status>,
    init: RwLock<Option<InitRecord>>,
    secrets: Secrets,
    policies: Policies,
    tokens: crate::tokens::Tokens,
    keepers: Keepers,
    metrics: Metrics,
    limiter: RateLimiter,
    /// Serializes everything that changes the root key or its splits (init, unseal, restore,
    /// rotate, rekey, break-glass export, keeper re-supply) so they cannot interleave.
    open_lock: tokio::sync::Mutex<()>,
    /// Break-glass shares received so far by restore (only while sealed).
    restore: std::sync::Mutex<Option<PendingRestore>>,
    /// Background re-encryption after a rotation.
    reencryption: crate::reencrypt::Reencryption,
    /// Refusals counted instead of written (a caller over its refusal rate).
    suppressed: Suppressed,
    /// Audit records of requests made while sealed, appended once the chain opens.
    sealed_audit: std::sync::Mutex<SealedAudit>,
}

/// Who may administer policies, as refusals say it.
const ADMINISTRATOR: &str =
    "an administrator (the superuser, or a workload granted `super` on `**`)";

impl Nexus {
    pub(crate) fn new(
        config: NexusConfig,
        source: Arc<dyn SvidSource>,
        store: Arc<dyn Store>,
    ) -> Result<Self, StartError> {
        let keepers = Keepers::new(&config.trust_domain, &config.keepers, &source)?;
        Ok(Self {
            secrets: Secrets::new(store.clone(), config.secret_limits).with_batch_limits(
                crate::secrets::BatchLimits {
                    max_items: config.max_batch_items,
                    max_bytes: config.max_batch_bytes,
                },
            ),
            policies: Policies::new(store.clone()),
            tokens: crate::tokens::Tokens::new(store.clone()),
            limiter: RateLimiter::new(config.rate_limits),
            config,
            store,
            status: RwLock::new(Status::Uninitialized),
            init: RwLock::new(None),
            keepers,
            metrics: Metrics::default(),
            open_lock: tokio::sync::Mutex::new(()),
            restore: std::sync::Mutex::new(None),
            reencryption: crate::reencrypt::Reencryption::default(),
            suppressed: Suppressed::default(),
            sealed_audit: std::sync::Mutex::new(SealedAudit::default()),
        })
    }

    pub(crate) fn config(&self) -> &NexusConfig {
        &self.config
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    pub(crate) fn policies(&self) -> &Policies {
        &self.policies
    }

    pub(crate) fn tokens(&self) -> &crate::tokens::Tokens {
        &self.tokens
    }

    pub(crate) fn keepers(&self) -> &Keepers {
        &self.keepers
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// Refusals counted instead of written.
    pub(crate) fn suppressed(&self) -> &Suppressed {
        &self.suppressed
    }

    /// See the field: take it around anything that changes the root key or its splits.
    pub(crate) fn open_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.open_lock
    }

    /// Background re-encryption after a rotation.
    pub(crate) fn reencryption(&self) -> &crate::reencrypt::Reencryption {
        &self.reencryption
    }

    /// Break-glass shares received so far by restore (only while sealed).
    pub(crate) fn pending_restore(&self) -> &std::sync::Mutex<Option<PendingRestore>> {
        &self.restore
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.config.trust_domain
    }

    /// True while Nexus holds no root key.
    pub fn is_sealed(&self) -> bool {
        !matches!(
            *self.status.read().unwrap_or_else(|p| p.into_inner()),
            Status::Open(_)
        )
    }

    /// Why Nexus is not open, if it is not.
    pub fn seal_reason(&self) -> Option<String> {
        match &*self.status.read().unwrap_or_else(|p| p.into_inner()) {
            Status::Uninitialized => Some("not initialized: run `spike bootstrap`".into()),
            Status::Sealed(r) => Some(r.clone()),
            Status::Open(_) => None,
        }
    }

    /// A snapshot of the status.
    pub(crate) fn status(&self) -> Status {
        self.status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_status(&self, s: Status) {
        *self.status.write().unwrap_or_else(|p| p.into_inner()) = s;
    }

    pub(crate) fn opened(&self) -> AppResult<Arc<Opened>> {
        match &*self.status.read().unwrap_or_else(|p| p.into_inner()) {
            Status::Open(o) => Ok(o.clone()),
            Status::Uninitialized => Err(AppError::new(
                ErrorCode::Sealed,
                "Nexus is not initialized yet; run `spike bootstrap`",
            )),
            Status::Sealed(reason) => Err(AppError::new(
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
                    self.set_status(Status::Sealed("waiting for keeper shares".into()));
                }
                Err(e) => self.set_status(Status::Sealed(format!("init record unusable: {e}"))),
            },
            Ok(None) => self.set_status(Status::Uninitialized),
            Err(e) => self.set_status(Status::Sealed(format!("storage unavailable: {e}"))),
        }
    }

    /// The init record as stored, with its exact bytes for a compare-and-set.
    pub(crate) async fn read_init(&self) -> Result<(Vec<u8>, InitRecord), InitStoreError> {
        let raw = self
            .store
            .get(META, INIT_KEY)
            .await?
            .ok_or(InitStoreError::NotInitialized)?;
        let record = InitRecord::decode(&raw)?;
        Ok((raw, record))
    }

    /// Replaces the init record with `next` in one durable commit, if it still is `old`
    /// (compare-and-set), then updates the in-memory copy. On any failure nothing changed.
    pub(crate) async fn commit_init(
        &self,
        old: &[u8],
        next: &InitRecord,
    ) -> Result<(), InitStoreError> {
        let mut batch = Batch::new();
        batch.require_value(META, INIT_KEY.to_vec(), old.to_vec());
        batch.put(META, INIT_KEY.to_vec(), next.encode());
        batch.put(META, COMPACT_KEY.to_vec(), compaction_mark());
        match self.store.commit(batch).await {
            Ok(()) => {
                *self.init.write().unwrap_or_else(|p| p.into_inner()) = Some(next.clone());
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => Err(InitStoreError::Changed),
            Err(e) => Err(e.into()),
        }
    }

    /// Compacts the store if the init record changed since the last compaction, so no free page
    /// of the data file keeps a key wrapped under a root key the record no longer holds.
    pub(crate) async fn compact_if_pending(&self) -> Result<(), StoreError> {
        let Some(mark) = self.store.get(META, COMPACT_KEY).await? else {
            return Ok(());
        };
        self.store.compact().await?;
        let mut clear = Batch::new();
        // A change committed meanwhile set a new mark: it stays, for the next compaction.
        clear.require_value(META, COMPACT_KEY.to_vec(), mark);
        clear.delete(META, COMPACT_KEY.to_vec());
        match self.store.commit(clear).await {
            Ok(()) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Opens with `keys`: opens the audit log (refusing one that does not reach its stored
    /// checkpoint), appends what was audited while sealed, loads policies.
    pub(crate) async fn open_with(&self, keys: OpenKeys) -> Result<(), OpenError> {
        let options = WriterOptions {
            max_file_bytes: self.config.audit.max_file_bytes,
            accept_loss_at: Some(self.config.audit.accept_loss_at).filter(|&s| s > 0),
            ship: self.config.audit_ship.clone(),
            ..WriterOptions::default()
        };
        let audit = AuditWriter::open_with(
            &self.config.audit_log,
            AuditKey::new(keys.audit_key()),
            options,
            Some(store_anchor(self.store.clone())),
        )
        .await?;
        let buffered = self
            .sealed_audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain();
        for (record, time) in buffered {
            audit.append_at(record, time).await?;
        }
        self.policies
            .reload(&keys)
            .await
            .map_err(|e| OpenError::Policies(e.0))?;
        self.set_status(Status::Open(Arc::new(Opened { keys, audit })));
        // Partial break-glass state is moot once open; its shares zeroize as they drop.
        *self.restore.lock().unwrap_or_else(|p| p.into_inner()) = None;
        tracing::info!("Nexus is open");
        Ok(())
    }

    /// Drops the keys (zeroized on drop) at shutdown.
    pub(crate) fn seal_for_shutdown(&self) {
        self.set_status(Status::Sealed("shutting down".into()));
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
            Some(Builtin::Operator) => match &self.config.operator_scope {
                Some(scope) if scope.allows(path, perm) => Ok(()),
                Some(scope) => Err(AppError::new(
                    ErrorCode::OutsideScope,
                    format!(
                        "{caller} may not `{perm}` {path}: the operator holds only list, write, delete and token, on the paths operator.path_scope ({}) matches",
                        scope.path_scope()
                    ),
                )),
                None => Err(AppError::new(
                    ErrorCode::OutsideScope,
                    format!(
                        "{caller} may not `{perm}` {path}: this Nexus gives the operator no scope (operator.path_scope and operator.spiffe_id_scope are unset)"
                    ),
                )),
            },
            Some(_) => Err(AppError::not_admin(
                caller,
                "a workload identity or the superuser (SPIKE's own identities have no data access)",
            )),
            None if self.policies.engine().allows(caller, path, perm) => Ok(()),
            None => Err(AppError::forbidden_on(caller, perm, path)),
        }
    }

    /// Full administration: the superuser, or a workload with `super` on every path.
    pub(crate) fn authorize_admin(&self, caller: &SpiffeId) -> AppResult<()> {
        match Builtin::of(caller, self.trust_domain()) {
            Some(Builtin::Superuser) => Ok(()),
            None if self.policies.is_admin(caller) => Ok(()),
            _ => Err(AppError::not_admin(caller, ADMINISTRATOR)),
        }
    }

    /// Policy administration: a full administrator, or the operator within its scope (when
    /// this Nexus gives it one).
    pub(crate) fn authorize_policy_admin(&self, caller: &SpiffeId) -> AppResult<PolicyAdmin<'_>> {
        match (
            Builtin::of(caller, self.trust_domain()),
            &self.config.operator_scope,
        ) {
            (Some(Builtin::Operator), Some(scope)) => Ok(PolicyAdmin::Scoped(scope)),
            _ => self.authorize_admin(caller).map(|()| PolicyAdmin::Full),
        }
    }

    /// The operator's scope when `caller` is the operator and this Nexus gives it one.
    pub(crate) fn operator_scope_of(&self, caller: &SpiffeId) -> Option<&AdminScope> {
        (Builtin::of(caller, self.trust_domain()) == Some(Builtin::Operator))
            .then_some(self.config.operator_scope.as_ref())
            .flatten()
    }

    /// Writes one audit line; fails closed. While sealed the record is kept and appended once
    /// the chain opens. A refusal takes one of the caller's refusal-rate tokens: without one,
    /// it is only counted and the caller gets `429 rate_limited` (see `refusals`).
    pub(crate) async fn audit(
        &self,
        opened: Option<&Opened>,
        caller: &SpiffeId,
        action: &'static str,
        path: Option<&str>,
        outcome: &Result<(), ErrorCode>,
    ) -> AppResult<()> {
        let record = Self::audit_line(caller, action, path, outcome);
        self.audit_record(opened, record, outcome).await
    }

    /// The audit line of a request by `caller` with `outcome`.
    pub(crate) fn audit_line(
        caller: &SpiffeId,
        action: &'static str,
        path: Option<&str>,
        outcome: &Result<(), ErrorCode>,
    ) -> AuditRecord {
        let (decision, reason) = match outcome {
            Ok(()) => (Decision::Allow, "ok"),
            Err(code) if code.denies_access() => (Decision::Deny, code.as_str()),
            Err(code) => (Decision::Error, code.as_str()),
        };
        let mut record = AuditRecord::new(action, decision, reason).with_caller(caller.clone());
        if let Some(p) = path {
            // An invalid raw path is caller data of any size and bytes: keep only a short
            // escaped prefix and a hash of it.
            record = match outcome {
                Err(ErrorCode::InvalidPath) => record.with_raw_path(p),
                _ => record.with_path(p),
            };
        }
        record
    }

    /// Writes `record`, the line of a request with `outcome` (see [`Nexus::audit`]).
    pub(crate) async fn audit_record(
        &self,
        opened: Option<&Opened>,
        record: AuditRecord,
        outcome: &Result<(), ErrorCode>,
    ) -> AppResult<()> {
        let Some(opened) = opened else {
            let caller = record.caller().map(ToString::to_string).unwrap_or_default();
            let (action, decision, reason) = (record.action(), record.decision(), record.reason());
            tracing::info!(%caller, action, ?decision, %reason, "request while sealed; audited once the chain opens");
            self.sealed_audit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(record);
            return Ok(());
        };
        if let Err(code) = outcome
            && is_refusal(*code)
        {
            self.audit_refusal(opened, record).await
        } else {
            self.append(opened, record).await
        }
    }

    /// Writes the refusal `record` if its caller has a refusal-rate token, first writing
    /// what was counted for it meanwhile; otherwise counts it and answers `429`.
    pub(crate) async fn audit_refusal(
        &self,
        opened: &Opened,
        record: AuditRecord,
    ) -> AppResult<()> {
        let Some(caller) = record.caller().cloned() else {
            return self.append(opened, record).await;
        };
        if self.limiter.check(RateClass::Refused, &caller).is_err() {
            if record.counts().is_empty() {
                self.suppressed.add(&caller, record.reason(), 1);
            } else {
                for (reason, n) in record.counts() {
                    self.suppressed.add(&caller, reason, *n);
                }
            }
            return Err(AppError::new(
                ErrorCode::RateLimited,
                "too many refused requests from this SPIFFE ID; slow down and retry",
            ));
        }
        self.write_suppressed(opened, &caller).await?;
        self.append(opened, record).await
    }

    /// Writes the `audit.suppressed` summary of what was counted for `caller` (and for
    /// callers beyond the table's cap). Call holding one of its refusal tokens.
    async fn write_suppressed(&self, opened: &Opened, caller: &SpiffeId) -> AppResult<()> {
        for (who, counts) in self.suppressed.take(caller) {
            let mut summary = AuditRecord::new(SUPPRESSED_ACTION, Decision::Deny, "rate_limited");
            if let Some(w) = &who {
                summary = summary.with_caller(w.clone());
            }
            for (reason, n) in &counts {
                summary = summary.with_count(reason, *n);
            }
            if let Err(e) = self.append(opened, summary).await {
                self.suppressed.restore(who, counts);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes the pending counts of every caller that has a refusal token again, so counts
    /// reach the log even when the caller never comes back. Run periodically while open.
    pub(crate) async fn flush_suppressed(&self, opened: &Opened) {
        for caller in self.suppressed.callers() {
            if self.limiter.check(RateClass::Refused, &caller).is_ok()
                && let Err(e) = self.write_suppressed(opened, &caller).await
            {
                tracing::warn!(error = %e.0.message, "could not write suppressed refusal counts; kept for later");
                return;
            }
        }
    }

    async fn append(&self, opened: &Opened, record: AuditRecord) -> AppResult<()> {
        opened.audit.append(record).await.map_err(|e| {
            tracing::error!(error = %e, "audit log write failed; refusing the request");
            AppError::new(ErrorCode::Unavailable, "the audit log cannot be written")
        })?;
        Ok(())
    }

    /// True when `caller` has used up its refusal rate: its requests are then answered
    /// `429` before they run, and only counted.
    pub(crate) fn refusals_exhausted(&self, caller: &SpiffeId) -> bool {
        let out = self.limiter.exhausted(RateClass::Refused, caller);
        if out {
            // Counted under the answer it got: the request never ran, so it has no other.
            self.suppressed
                .add(caller, ErrorCode::RateLimited.as_str(), 1);
        }
        out
    }

    /// Stores the first init record, unless one exists (another process may have initialized
    /// a shared store first: then its record is loaded and `false` returned).
    pub(crate) async fn create_init(&self, record: &InitRecord) -> Result<bool, InitStoreError> {
        let mut batch = Batch::new();
        batch.require_absent(META, INIT_KEY.to_vec());
        batch.put(META, INIT_KEY.to_vec(), record.encode());
        match self.store.commit(batch).await {
            Ok(()) => {
                *self.init.write().unwrap_or_else(|p| p.into_inner()) = Some(record.clone());
                Ok(true)
            }
            Err(StoreError::Conflict { .. }) => {
                self.load_init_state().await;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}
