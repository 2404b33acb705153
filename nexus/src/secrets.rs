//! Versioned secrets over the store.
//!
//! Layout: table `secrets` maps a path to its authenticated [`SecretMeta`]; table `versions`
//! maps `path ‖ 0x00 ‖ version (u64 BE)` to the encrypted value. The value's associated data
//! binds record type, path, version and the path's incarnation (random per creation), so a
//! ciphertext copied to another path or version does not open. Mutations of one path are
//! serialized by a striped lock and committed with a compare-and-set on the old metadata
//! bytes, so a lost update is impossible even if two Nexus tasks race.
//!
//! Batches ([`Secrets::put_batch`], `POST /v1/secrets/batch`) decide each item like a single
//! put but commit all their writes in one store batch, each guarded by the same
//! compare-and-set; a conflicting store batch is redone item by item under the locks.
//!
//! A put's answer tells a writer only what it may see anyway ([`Sight`]): writers that may
//! not read never get content compared, so a put cannot serve as a test of a guessed value.
//!
//! A scope update ([`Secrets::update_scope`], `POST /v1/secrets/scope`) is a put whose values
//! are the current version's, read here and never returned ([`Content::Carried`]): a writer
//! that may not read (the operator) can change a secret's scope without seeing its values.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spike_core::api::{
    BatchItemStatus, GetSecretResponse, PutSecretResponse, SecretListEntry, SecretMetadata,
    VersionMetadata, VersionsResponse,
};
use spike_core::error::ErrorCode;
use spike_core::path::SecretPath;
use spike_core::pattern::PathSpan;
use spike_core::secret::SecretMap;
use spike_store::{Batch, Store, StoreError, Table};

use crate::clock::{now, rfc3339, unix_now};
use crate::error::{AppError, AppResult};
use crate::keys::OpenKeys;
use crate::records::{self, Kind};
use crate::scope::{Scope, ScopeChange};
use crate::stripes::Stripes;

/// Secret metadata, keyed by path.
pub(crate) const SECRETS: Table = Table::new("secrets");
/// Sealed secret values, keyed by path and version.
pub(crate) const VERSIONS: Table = Table::new("versions");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SecretMeta {
    incarnation: u64,
    current: u64,
    latest: u64,
    max_versions: u32,
    created: String,
    updated: String,
    versions: Vec<VersionMeta>,
    #[serde(default, skip_serializing_if = "Scope::is_unrestricted")]
    scope: Scope,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct VersionMeta {
    v: u64,
    created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted: Option<String>,
    #[serde(default)]
    destroyed: bool,
    /// Unix seconds after which it may no longer be read (its write time plus the TTL then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<i64>,
}

impl VersionMeta {
    fn live(&self) -> bool {
        self.deleted.is_none() && !self.destroyed
    }

    /// Why it cannot be read at `at` (unix seconds), if it cannot.
    fn gone(&self, at: i64) -> Option<Gone> {
        if self.destroyed {
            Some(Gone::Destroyed)
        } else if self.deleted.is_some() {
            Some(Gone::Deleted)
        } else {
            self.expires.filter(|&e| at >= e).map(Gone::Expired)
        }
    }
}

/// Why a version cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    Destroyed,
    Deleted,
    /// Since these unix seconds.
    Expired(i64),
}

impl Gone {
    /// The refusal of a read of `which` (e.g. "version 3").
    fn error(self, which: &str) -> AppError {
        match self {
            Self::Destroyed => AppError::new(
                ErrorCode::Destroyed,
                format!(
                    "{which} is destroyed: its value is gone for good; read another version explicitly"
                ),
            ),
            Self::Deleted => AppError::new(
                ErrorCode::Deleted,
                format!("{which} is deleted: undelete it, or read another version explicitly"),
            ),
            Self::Expired(since) => AppError::new(
                ErrorCode::Expired,
                format!(
                    "{which} expired at {}: write a new version (each write starts the secret's TTL again)",
                    rfc3339(since)
                ),
            ),
        }
    }
}

/// The newest version of a secret as a token resolution uses it: its value and the scope the
/// token is checked against again.
pub(crate) struct LiveSecret {
    pub(crate) data: SecretMap,
    pub(crate) scope: Scope,
    /// When the version expires (unix seconds), if it does.
    pub(crate) expires: Option<i64>,
}

impl SecretMeta {
    /// The current version is the newest one while it is live, else none (0): deleting the
    /// newest version never makes an older one current again, so a rotated-away (perhaps
    /// leaked) credential cannot silently come back.
    fn recompute_current(&mut self) {
        self.current = self.newest().filter(|v| v.live()).map_or(0, |v| v.v);
    }

    /// The newest version kept.
    fn newest(&self) -> Option<&VersionMeta> {
        self.versions.iter().max_by_key(|v| v.v)
    }

    fn to_api(&self, path: &SecretPath) -> SecretMetadata {
        SecretMetadata {
            path: path.as_str().to_owned(),
            current_version: self.current,
            latest_version: self.latest,
            max_versions: self.max_versions,
            created_at: self.created.clone(),
            updated_at: self.updated.clone(),
            versions: self
                .versions
                .iter()
                .map(|v| VersionMetadata {
                    version: v.v,
                    created_at: v.created.clone(),
                    deleted_at: v.deleted.clone(),
                    destroyed: v.destroyed,
                    expires_at: v.expires.map(rfc3339),
                })
                .collect(),
            ttl_seconds: self.scope.ttl,
            allowed_spiffe_ids: self.scope.ids.clone(),
            allowed_destinations: self.scope.destinations.clone(),
        }
    }
}

/// Limits on secret content.
#[derive(Debug, Clone, Copy)]
pub struct SecretLimits {
    /// Most keys in one secret.
    pub max_keys: usize,
    /// Longest key name, bytes.
    pub max_key_len: usize,
    /// Largest single value, bytes.
    pub max_value_len: usize,
    /// Versions kept per secret; older ones are dropped (their numbers are never reused).
    pub max_versions: u32,
    /// Largest list page.
    pub max_page: usize,
}

impl Default for SecretLimits {
    fn default() -> Self {
        Self {
            max_keys: 256,
            max_key_len: 256,
            max_value_len: 64 * 1024,
            max_versions: 10,
            max_page: 1000,
        }
    }
}

/// Limits of `POST /v1/secrets/batch`; crossing either refuses the whole request (413).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchLimits {
    /// Most items one batch may carry.
    pub(crate) max_items: usize,
    /// Largest body of one batch request, bytes (the API's general `max_body` does not apply
    /// to this route).
    pub(crate) max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_items: spike_core::api::DEFAULT_MAX_BATCH_ITEMS,
            max_bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }
}

/// Default of [`BatchLimits::max_bytes`]: 4 MiB. The body is parsed before items are counted
/// or authorized, so this bounds what any caller can make Nexus allocate per request.
pub(crate) const DEFAULT_MAX_BATCH_BYTES: usize = 4 << 20;

/// Items of one batch planned at the same time (each plan is one or two store reads).
const PLAN_CONCURRENCY: usize = 32;

/// A batch's writes are committed in store batches of at most this many bytes (a quarter of
/// the store's own limit, which also counts the expected old values).
const CHUNK_BYTES: usize = spike_store::MAX_BATCH_BYTES / 4;

/// How much of a secret's stored state a writer may learn from a put, decided by what else it
/// holds on the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sight {
    /// Holds `read`: the put compares with the current content (`unchanged` instead of a new
    /// version) and the answer shows versions.
    Read,
    /// Holds `list` but not `read`: listings and metadata show versions and times anyway, so
    /// the answer does too; but the content is never compared, so every put writes.
    List,
    /// Holds neither: every put writes, the answer is `written` with no version, and a
    /// compare-and-set mismatch does not name the current version.
    Blind,
}

/// One valid, authorized item of a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchEntry<'a> {
    pub(crate) path: &'a SecretPath,
    pub(crate) data: &'a SecretMap,
    pub(crate) cas: Option<u64>,
    /// Scope changes, validated.
    pub(crate) scope: Option<&'a ScopeChange>,
    /// What the item's writer may see of the path.
    pub(crate) sight: Sight,
}

/// What a put did (or would do), as its writer may see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PutOutcome {
    /// The version current afterwards; `None` for a [`Sight::Blind`] writer.
    pub(crate) version: Option<u64>,
    /// Created, updated or unchanged; `written` for a [`Sight::Blind`] writer.
    pub(crate) status: BatchItemStatus,
}

/// The values of the version a put writes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Content<'a> {
    /// Given by the writer.
    Given(&'a SecretMap),
    /// The current version's, carried into the new one unchanged (a scope update). The current
    /// version must be readable (live, not expired); its values never leave Nexus.
    Carried,
}

/// Most times a put is re-planned when its commit conflicts with a concurrent batch (batches
/// take no stripe lock): each retry re-reads the metadata, so only a path rewritten this often
/// within one put still fails.
const PUT_ATTEMPTS: usize = 16;

/// The decision of [`Secrets::plan_put`].
enum PutPlan {
    /// The content equals the current version.
    Unchanged { version: u64 },
    /// A new version to write.
    Write(WritePlan),
    /// Another writer changed the secret while it was being read (the current version's
    /// value was pruned after its metadata was read): plan again.
    Stale,
}

/// A prepared write of one new version: the store operations, not yet committed.
struct WritePlan {
    /// The metadata key (the path).
    key: Vec<u8>,
    /// The metadata as read (compare-and-set), or `None` for a new secret.
    old_meta: Option<Vec<u8>>,
    new_meta: Vec<u8>,
    value_key: Vec<u8>,
    ciphertext: Vec<u8>,
    /// Version keys pruned by `max_versions`.
    dropped: Vec<Vec<u8>>,
    version: u64,
    created: bool,
}

impl WritePlan {
    fn add_to(&self, batch: &mut Batch) {
        match &self.old_meta {
            Some(raw) => batch.require_value(SECRETS, self.key.clone(), raw.clone()),
            None => batch.require_absent(SECRETS, self.key.clone()),
        };
        batch.put(VERSIONS, self.value_key.clone(), self.ciphertext.clone());
        for k in &self.dropped {
            batch.delete(VERSIONS, k.clone());
        }
        batch.put(SECRETS, self.key.clone(), self.new_meta.clone());
    }

    /// Conditions plus operations it adds to a batch.
    fn entries(&self) -> usize {
        3 + self.dropped.len()
    }

    /// Bytes it adds to a batch (as the store counts them).
    fn bytes(&self) -> usize {
        let cond = self.key.len() + self.old_meta.as_ref().map_or(0, Vec::len);
        let dropped: usize = self.dropped.iter().map(Vec::len).sum();
        cond + self.value_key.len()
            + self.ciphertext.len()
            + dropped
            + self.key.len()
            + self.new_meta.len()
    }

    fn outcome(&self, sight: Sight) -> PutOutcome {
        match sight {
            Sight::Blind => PutOutcome {
                version: None,
                status: BatchItemStatus::Written,
            },
            Sight::Read | Sight::List => PutOutcome {
                version: Some(self.version),
                status: if self.created {
                    BatchItemStatus::Created
                } else {
                    BatchItemStatus::Updated
                },
            },
        }
    }
}

fn version_key(path: &SecretPath, v: u64) -> Vec<u8> {
    version_key_of(path.as_str().as_bytes(), v)
}

/// The `versions` key of version `v` of the path stored under `key`.
fn version_key_of(key: &[u8], v: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 9);
    k.extend_from_slice(key);
    k.push(0);
    k.extend_from_slice(&v.to_be_bytes());
    k
}

fn store_err(e: StoreError) -> AppError {
    AppError::internal("store", e)
}

/// A failed commit of a secret's metadata: a conflict means another writer got there first.
fn commit_err(e: StoreError) -> AppError {
    match e {
        StoreError::Conflict { .. } => AppError::new(
            ErrorCode::CasMismatch,
            "the secret changed concurrently; retry",
        ),
        e => store_err(e),
    }
}

/// The secret engine: one per open Nexus.
pub(crate) struct Secrets {
    store: Arc<dyn Store>,
    limits: SecretLimits,
    batch_limits: BatchLimits,
    locks: Stripes,
}

impl Secrets {
    /// An engine over `store`.
    pub(crate) fn new(store: Arc<dyn Store>, limits: SecretLimits) -> Self {
        Self {
            store,
            limits,
            batch_limits: BatchLimits::default(),
            locks: Stripes::new(),
        }
    }

    /// Replaces the batch limits (the defaults apply until then).
    pub(crate) fn with_batch_limits(mut self, limits: BatchLimits) -> Self {
        self.batch_limits = limits;
        self
    }

    /// The batch limits in force.
    pub(crate) fn batch_limits(&self) -> BatchLimits {
        self.batch_limits
    }

    fn lock_for(&self, path: &SecretPath) -> &tokio::sync::Mutex<()> {
        self.lock_for_key(path.as_str().as_bytes())
    }

    /// The lock of the path stored under `key` (its bytes).
    fn lock_for_key(&self, key: &[u8]) -> &tokio::sync::Mutex<()> {
        self.locks.for_key(key)
    }

    async fn load_meta(
        &self,
        keys: &OpenKeys,
        path: &SecretPath,
    ) -> AppResult<Option<(SecretMeta, Vec<u8>)>> {
        let key = path.as_str().as_bytes();
        let Some(raw) = self.store.get(SECRETS, key).await.map_err(store_err)? else {
            return Ok(None);
        };
        let meta = records::verify(keys, Kind::SecretMeta, key, &raw)
            .map_err(|e| AppError::internal("secret metadata", e))?;
        Ok(Some((meta, raw)))
    }

    fn check_data(&self, data: &SecretMap) -> AppResult<()> {
        if data.is_empty() {
            return Err(AppError::new(
                ErrorCode::BadRequest,
                "a secret needs at least one key=value pair",
            ));
        }
        if data.len() > self.limits.max_keys {
            return Err(AppError::new(
                ErrorCode::TooLarge,
                format!("a secret may have at most {} keys", self.limits.max_keys),
            ));
        }
        for (k, v) in data.iter() {
            if k.is_empty() || k.len() > self.limits.max_key_len {
                return Err(AppError::new(
                    ErrorCode::BadRequest,
                    format!("keys must be 1 to {} bytes long", self.limits.max_key_len),
                ));
            }
            if v.len() > self.limits.max_value_len {
                return Err(AppError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "value of key `{k}` is larger than {} bytes",
                        self.limits.max_value_len
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Writes a new version unless the content equals the current one (compared only for a
    /// [`Sight::Read`] writer), answering as much as `sight` allows.
    pub(crate) async fn put(
        &self,
        keys: &OpenKeys,
        path: &SecretPath,
        data: &SecretMap,
        cas: Option<u64>,
        scope: Option<&ScopeChange>,
        sight: Sight,
    ) -> AppResult<PutSecretResponse> {
        self.put_content(keys, path, Content::Given(data), cas, scope, sight)
            .await
    }

    /// A put of the current version's values with `scope` applied: a new version, unless the
    /// scope changes nothing (told only to a writer that may see the scope anyway, a
    /// [`Sight::Read`] or [`Sight::List`] one; a [`Sight::Blind`] writer's update always
    /// writes). No readable current version: the refusal a read would get, nothing written.
    pub(crate) async fn update_scope(
        &self,
        keys: &OpenKeys,
        path: &SecretPath,
        cas: Option<u64>,
        scope: &ScopeChange,
        sight: Sight,
    ) -> AppResult<PutSecretResponse> {
        self.put_content(keys, path, Content::Carried, cas, Some(scope), sight)
            .await
    }

    async fn put_content(
        &self,
        keys: &OpenKeys,
        path: &SecretPath,
        content: Content<'_>,
        cas: Option<u64>,
        scope: Option<&ScopeChange>,
        sight: Sight,
    ) -> AppResult<PutSecretResponse> {
        let outcome = self
            .put_locked(keys, path, content, cas, scope, sight)
            .await?;
        Ok(PutSecretResponse {
            version: outcome.version,
            unchanged: outcome.status == BatchItemStatus::Unchanged,
        })
    }

    /// A single put: serialized with other writers of the path by its stripe lock, then
    /// committed with compare-and-set on the metadata it read. A batch may still commit the
    /// path in between (it holds no lock); the put is then planned again against the new
    /// state, which re-checks `cas`, so a put without `cas` does not fail for it.
    async fn put_locked(
        &self,
        keys: &OpenKeys,
        path: &SecretPath,
        content: Content<'_>,
        cas: Option<u64>,
        scope: Option<&ScopeChange>,
        sight: Sight,
    ) -> AppResult<PutOutcome> {
        if let Content::Given(data) = content {
            self.check_data(data)?;
        }
        let _guard = self.lock_for(path).lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let w = match self
                .plan_put(keys, path, content, cas, scope, sight)
                .await?
            {
                PutPlan::Unchanged { version } => {
                    return Ok(PutOutcome {
                        version: Some(version),
                        status: BatchItemStatus::Unchanged,
                    });
                }
                PutPlan::Write(w) => w,
                PutPlan::Stale if attempt < PUT_ATTEMPTS => continue,
                PutPlan::Stale => {
                    return Err(AppError::new(
                        ErrorCode::CasMismatch,
                        "the secret changed concurrently; retry",
                    ));
                }
            };
            let mut batch = Batch::new();
            w.add_to(&mut batch);
            match self.store.commit(batch).await {
                Ok(()) => return Ok(w.outcome(sight)),
                Err(StoreError::Conflict { .. }) if attempt < PUT_ATTEMPTS => {}
                Err(e) => return Err(commit_err(e)),
            }
        }
    }

    /// Decides what a put of `content` to `path` does against the stored state, and prepares
    /// the write (encrypted value and metadata, with the compare-and-set condition on the
    /// metadata read here). Writes nothing.
    async fn plan_put(
        &self,
        keys: &OpenKeys,
        path: &SecretPath,
        content: Content<'_>,
        cas: Option<u64>,
        scope: Option<&ScopeChange>,
        sight: Sight,
    ) -> AppResult<PutPlan> {
        let existing = self.load_meta(keys, path).await?;
        let current = existing.as_ref().map_or(0, |(m, _)| m.current);
        let old_scope = existing
            .as_ref()
            .map(|(m, _)| m.scope.clone())
            .unwrap_or_default();
        let new_scope = scope.map_or_else(|| old_scope.clone(), |c| c.apply(&old_scope));
        let at = unix_now();
        if let Some(expected) = cas
            && expected != current
        {
            let message = match sight {
                Sight::Read | Sight::List => {
                    format!("compare-and-set failed: current version is {current}, not {expected}")
                }
                Sight::Blind => {
                    format!("compare-and-set failed: current version is not {expected}")
                }
            };
            return Err(AppError::new(ErrorCode::CasMismatch, message));
        }
        let carried;
        let data = match content {
            Content::Given(data) => {
                // Only a writer that may read learns that its content equals the stored one:
                // for any other, `unchanged` would confirm a guessed value. A scope change, or
                // a current version past its TTL, is a change: the write mints a version (and
                // so a new lease).
                if sight == Sight::Read
                    && new_scope == old_scope
                    && let Some((meta, _)) = &existing
                    && meta.current > 0
                    && meta
                        .versions
                        .iter()
                        .any(|v| v.v == meta.current && v.gone(at).is_none())
                {
                    let Some(old) = self
                        .read_version_if_kept(keys, path, meta, meta.current)
                        .await?
                    else {
                        // Pruned by a writer (of another Nexus on the store) since the
                        // metadata was read.
                        return Ok(PutPlan::Stale);
                    };
                    if old == *data {
                        return Ok(PutPlan::Unchanged {
                            version: meta.current,
                        });
                    }
                }
                data
            }
            Content::Carried => {
                let Some((meta, _)) = &existing else {
                    return Err(AppError::new(ErrorCode::NotFound, "no such secret"));
                };
                // The version a read without a version number would get: the newest.
                let newest = meta
                    .newest()
                    .ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such secret"))?;
                if let Some(gone) = newest.gone(at) {
                    let which = format!("the newest version ({})", newest.v);
                    return Err(gone.error(&which));
                }
                // The scope is metadata, which read and list show anyway; a blind writer is
                // told nothing of it, so its update always writes.
                if sight != Sight::Blind && new_scope == old_scope {
                    return Ok(PutPlan::Unchanged {
                        version: meta.current,
                    });
                }
                let Some(current) = self
                    .read_version_if_kept(keys, path, meta, newest.v)
                    .await?
                else {
                    return Ok(PutPlan::Stale);
                };
                carried = current;
                &carried
            }
        };
        let ts = now();
        let created = existing.is_none();
        let (mut meta, old_meta) = match existing {
            Some((meta, raw)) => (meta, Some(raw)),
            None => (
                SecretMeta {
                    incarnation: keys
                        .random_u64()
                        .map_err(|e| AppError::internal("randomness", e))?,
                    current: 0,
                    latest: 0,
                    max_versions: self.limits.max_versions,
                    created: ts.clone(),
                    updated: ts.clone(),
                    versions: Vec::new(),
                    scope: Scope::default(),
                },
                None,
            ),
        };
        let version = meta.latest + 1;
        let plaintext = data.to_json_bytes();
        let ciphertext = keys
            .encrypt_value(
                path.as_str(),
                version,
                meta.incarnation,
                plaintext.expose_secret(),
            )
            .map_err(|e| AppError::internal("encrypt", e))?;
        meta.latest = version;
        meta.current = version;
        meta.updated = ts.clone();
        meta.versions.push(VersionMeta {
            v: version,
            created: ts,
            deleted: None,
            destroyed: false,
            expires: new_scope.expiry(at),
        });
        meta.scope = new_scope;
        // Keep at most max_versions; the dropped ones are gone for good.
        let keep = usize::try_from(meta.max_versions.max(1)).unwrap_or(usize::MAX);
        let mut dropped = Vec::new();
        while meta.versions.len() > keep {
            let old = meta.versions.remove(0);
            dropped.push(version_key(path, old.v));
        }
        let key = path.as_str().as_bytes().to_vec();
        let new_meta = records::tag(keys, Kind::SecretMeta, &key, &meta);
        Ok(PutPlan::Write(WritePlan {
            value_key: version_key(path, version),
            key,
            old_meta,
            new_meta,
            ciphertext,
            dropped,
            version,
            created,
        }))
    }

    /// Applies many puts: each item decided and reported on its own (see
    /// [`BatchPutRequest`](spike_core::api::BatchPutRequest)), the writes committed together in
    /// as few store batches as the store's limits allow.
    ///
    /// No stripe lock is held: every write carries a compare-and-set condition on the metadata
    /// it was planned against, so a concurrent writer can only make a chunk's commit conflict,
    /// never lose an update. A conflicting chunk is redone item by item through the locked
    /// single-put path. The caller guarantees distinct paths (two writes of one path in one
    /// store batch would both pass their condition).
    pub(crate) async fn put_batch(
        &self,
        keys: &OpenKeys,
        items: &[BatchEntry<'_>],
        dry_run: bool,
    ) -> Vec<AppResult<PutOutcome>> {
        // Bounded concurrency: a few dozen reads in flight, in item order. (Plain loops, not
        // a stream of closures: the latter trips the compiler's `Send` inference in handlers.)
        let mut plans: Vec<AppResult<PutPlan>> = Vec::with_capacity(items.len());
        for group in items.chunks(PLAN_CONCURRENCY) {
            let mut futs = Vec::with_capacity(group.len());
            for item in group {
                futs.push(self.plan_item(keys, *item));
            }
            plans.extend(futures::future::join_all(futs).await);
        }
        let mut results: Vec<Option<AppResult<PutOutcome>>> = Vec::with_capacity(plans.len());
        // Chunks of (item index, write) that fit one store batch.
        let mut chunks: Vec<Vec<(usize, WritePlan)>> = Vec::new();
        let (mut entries, mut bytes) = (0usize, 0usize);
        for (i, plan) in plans.into_iter().enumerate() {
            match plan {
                Err(e) => results.push(Some(Err(e))),
                Ok(PutPlan::Stale) if dry_run => results.push(Some(Err(AppError::new(
                    ErrorCode::CasMismatch,
                    "the secret changed concurrently; compare again",
                )))),
                // Changed while it was read: redone under its lock, as a conflicting chunk is.
                Ok(PutPlan::Stale) => {
                    let item = &items[i];
                    results.push(Some(
                        self.put_locked(
                            keys,
                            item.path,
                            Content::Given(item.data),
                            item.cas,
                            item.scope,
                            item.sight,
                        )
                        .await,
                    ));
                }
                Ok(PutPlan::Unchanged { version }) => results.push(Some(Ok(PutOutcome {
                    version: Some(version),
                    status: BatchItemStatus::Unchanged,
                }))),
                Ok(PutPlan::Write(w)) if dry_run => {
                    results.push(Some(Ok(w.outcome(items[i].sight))));
                }
                Ok(PutPlan::Write(w)) => {
                    results.push(None);
                    let (e, b) = (w.entries(), w.bytes());
                    let fits =
                        entries + e <= spike_store::MAX_BATCH_ENTRIES && bytes + b <= CHUNK_BYTES;
                    match chunks.last_mut() {
                        Some(chunk) if fits => {
                            chunk.push((i, w));
                            entries += e;
                            bytes += b;
                        }
                        _ => {
                            chunks.push(vec![(i, w)]);
                            entries = e;
                            bytes = b;
                        }
                    }
                }
            }
        }
        let committed = futures::future::join_all(chunks.into_iter().map(|chunk| async move {
            let mut batch = Batch::new();
            for (_, w) in &chunk {
                w.add_to(&mut batch);
            }
            let result = self.store.commit(batch).await;
            (chunk, result)
        }))
        .await;
        for (chunk, result) in committed {
            match result {
                Ok(()) => {
                    for (i, w) in chunk {
                        results[i] = Some(Ok(w.outcome(items[i].sight)));
                    }
                }
                Err(StoreError::Conflict { .. }) => {
                    // Someone wrote one of these paths since it was read: redo each item
                    // under its lock, which re-reads, re-compares and re-checks `cas`.
                    let redone = futures::future::join_all(chunk.iter().map(|(i, _)| {
                        let item = &items[*i];
                        self.put_locked(
                            keys,
                            item.path,
                            Content::Given(item.data),
                            item.cas,
                            item.scope,
                            item.sight,
                        )
                    }))
                    .await;
                    for ((i, _), r) in chunk.iter().zip(redone) {
                        results[*i] = Some(r);
                    }
                }
                Err(e) => {
                    let e = store_err(e);
                    for (i, _) in chunk {
                        results[i] = Some(Err(AppError::new(e.code(), e.0.message.clone())));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(AppError::internal("batch", "item without result"))))
            .collect()
    }

    async fn plan_item(&self, keys: &OpenKeys, item: BatchEntry<'_>) -> AppResult<PutPlan> {
        self.check_data(item.data)?;
        self.plan_put(
            keys,
            item.path,
            Content::Given(item.data),
            item.cas,
            item.scope,
            item.sight,
        )
        .await
    }

    async fn commit(&self, batch: Batch) -> AppResult<()> {
        self.store.commit(batch).await.map_err(commit_err)
    }

    async fn read_version(
        &self,
        keys: &OpenKeys,
        path: &SecretPath,
        meta: &SecretMeta,
        v: u64,
    ) -> AppResult<SecretMap> {
        self.read_version_if_kept(keys, path, meta, v)
            .await?
            .ok_or_else(|| AppError::internal("secret value", "metadata names a missing version"))
    }

    /// Version `v`'s value, or `None` when the store no longer holds it.
    async fn read_version_if_kept(
        &self,
        keys: &OpenKeys,
        path: &SecretPath,
        meta: &SecretMeta,
        v: u64,
    ) -> AppResult<Option<SecretMap>> {
        let Some(raw) = self
            .store
            .get(VERSIONS, &version_key(path, v))
            .await
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        let plain = keys
            .decrypt_value(path.as_str(), v, meta.incarnation, &raw)
            .map_err(|e| AppError::internal("secret value", e))?;
        SecretMap::from_json_bytes(plain.expose_secret())
            .map(Some)
            .map_err(|e| AppError::internal("secret value", e))
    }

    /// Reads the current version, or `version`, for `reader` (who must be among the secret's
    /// allowed IDs, if it has any), at `at` (unix seconds: versions past their TTL are not
    /// read).
    pub(crate) async fn get(
        &self,
        keys: &OpenKeys,
        path: &SecretPath,
        version: Option<u64>,
        reader: &spike_core::id::SpiffeId,
        at: i64,
    ) -> AppResult<GetSecretResponse> {
        let not_found = || AppError::new(ErrorCode::NotFound, "no such secret or version");
        let (meta, _) = self.load_meta(keys, path).await?.ok_or_else(not_found)?;
        meta.scope.check_reader(reader, path.as_str())?;
        // Without a version: the newest, whatever its state; never an older one instead.
        let explicit = version.filter(|&v| v > 0);
        let vm = match explicit {
            Some(v) => meta.versions.iter().find(|m| m.v == v),
            None => meta.newest(),
        }
        .ok_or_else(not_found)?;
        let v = vm.v;
        let which = if explicit.is_some() {
            format!("version {v}")
        } else {
            format!("the newest version ({v})")
        };
        if let Some(gone) = vm.gone(at) {
            return Err(gone.error(&which));
        }
        let data = self.read_version(keys, path, &meta, v).await?;
        Ok(GetSecretResponse {
            path: path.as_str().to_owned(),
            version: v,
            data,
            created_at: vm.created.clone(),
        })
    }

    /// The newest version for a token resolution at `at`, or `None` when the secret has
    /// none that can be read (missing, deleted, destroyed or expired): a resolution then
    /// answers `secret_unavailable`, whichever it is.
    pub(crate) async fn newest_live(
        &self,
        keys: &OpenKeys,
        path: &SecretPath,
        at: i64,
    ) -> AppResult<Option<LiveSecret>> {
        let Some((meta, _)) = self.load_meta(keys, path).await? else {
            return Ok(None);
        };
        let Some(vm) = meta.newest().filter(|v| v.gone(at).is_none()) else {
            return Ok(None);
        };
        let data = self.read_version(keys, path, &meta, vm.v).await?;
        Ok(Some(LiveSecret {
            data,
            expires: vm.expires,
            scope: meta.scope,
        }))
    }

    /// The secret's metadata.
    pub(crate) async fn metadata(
        &self,
        keys: &OpenKeys,
        path: &SecretPath,
    ) -> AppResult<SecretMetadata> {
        let (meta, _) = self
            .load_meta(keys, path)
            .await?
            .ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such secret"))?;
        Ok(meta.to_api(path))
    }

    /// Soft-deletes, undeletes or destroys versions.
    pub(crate) async fn change_versions(
        &self,
        keys: &OpenKeys,
        path: &SecretPath,
        versions: &[u64],
        op: VersionOp,
    ) -> AppResult<VersionsResponse> {
        let _guard = self.lock_for(path).lock().await;
        let (mut meta, raw) = self
            .load_meta(keys, path)
            .await?
            .ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such secret"))?;
        let targets: Vec<u64> = if versions.is_empty() {
            let pick = match op {
                VersionOp::Undelete => meta
                    .versions
                    .iter()
                    .filter(|v| v.deleted.is_some() && !v.destroyed)
                    .map(|v| v.v)
                    .max(),
                _ => (meta.current > 0).then_some(meta.current),
            };
            pick.into_iter().collect()
        } else {
            versions.to_vec()
        };
        for v in &targets {
            match meta.versions.iter().find(|m| m.v == *v) {
                None => {
                    return Err(AppError::new(
                        ErrorCode::NotFound,
                        format!("version {v} does not exist (or is no longer kept)"),
                    ));
                }
                Some(m) if op == VersionOp::Undelete && m.destroyed => {
                    return Err(AppError::new(
                        ErrorCode::Destroyed,
                        format!("version {v} is destroyed: that cannot be undone"),
                    ));
                }
                Some(_) => {}
            }
        }
        let ts = now();
        let mut batch = Batch::new();
        let key = path.as_str().as_bytes().to_vec();
        batch.require_value(SECRETS, key.clone(), raw);
        let mut changed = Vec::new();
        for m in meta.versions.iter_mut().filter(|m| targets.contains(&m.v)) {
            let did = match op {
                VersionOp::Delete if m.live() => {
                    m.deleted = Some(ts.clone());
                    true
                }
                VersionOp::Undelete if m.deleted.is_some() && !m.destroyed => {
                    m.deleted = None;
                    true
                }
                VersionOp::Destroy if !m.destroyed => {
                    m.destroyed = true;
                    batch.delete(VERSIONS, version_key(path, m.v));
                    true
                }
                _ => false,
            };
            if did {
                changed.push(m.v);
            }
        }
        if !changed.is_empty() {
            meta.recompute_current();
            meta.updated = ts;
            batch.put(
                SECRETS,
                key.clone(),
                records::tag(keys, Kind::SecretMeta, &key, &meta),
            );
            self.commit(batch).await?;
        }
        Ok(VersionsResponse {
            changed,
            current_version: Some(meta.current),
        })
    }

    /// Lists the secrets in `spans` that `visible` admits, one page at a time, in path order.
    ///
    /// Only the keys inside `spans` are read (the spans of the caller's list grants, see
    /// [`CallerPolicies::list_spans`](spike_core::policy::CallerPolicies::list_spans)), so how
    /// long a page takes does not depend on secrets outside them.
    pub(crate) async fn list(
        &self,
        keys: &OpenKeys,
        spans: &[PathSpan],
        after: Option<&str>,
        limit: usize,
        visible: impl Fn(&SecretPath) -> bool,
    ) -> AppResult<(Vec<SecretListEntry>, Option<String>)> {
        // The cursor comes from the client; one the store cannot take is a client error.
        if after.is_some_and(|a| a.len() > spike_store::MAX_KEY_LEN) {
            return Err(AppError::new(
                ErrorCode::BadRequest,
                "the list cursor is too long; pass the `next` of the previous page",
            ));
        }
        let limit = limit.clamp(1, self.limits.max_page);
        let chunk = limit.max(64);
        let mut cursor: Option<Vec<u8>> = after.map(|a| a.as_bytes().to_vec());
        let mut out = Vec::new();
        for range in key_ranges(spans) {
            loop {
                let (rows, exhausted) = match &range {
                    KeyRange::Key(k) => {
                        if cursor.as_deref().is_some_and(|c| c >= k.as_slice()) {
                            break;
                        }
                        let row = self.store.get(SECRETS, k).await.map_err(store_err)?;
                        (row.map(|v| (k.clone(), v)).into_iter().collect(), true)
                    }
                    KeyRange::Prefix(p) => {
                        let rows = self
                            .store
                            .scan(SECRETS, p, cursor.as_deref(), chunk)
                            .await
                            .map_err(store_err)?;
                        let exhausted = rows.len() < chunk;
                        (rows, exhausted)
                    }
                };
                for (k, v) in rows {
                    cursor = Some(k.clone());
                    let Ok(s) = std::str::from_utf8(&k) else {
                        continue;
                    };
                    // Stored paths were valid under the limits of their day; list them under
                    // the ceiling so lowering a limit later never hides a secret.
                    let Ok(path) =
                        SecretPath::parse_with(s, &spike_core::path::PathLimits::CEILING)
                    else {
                        continue;
                    };
                    if !visible(&path) {
                        continue;
                    }
                    let meta: SecretMeta = records::verify(keys, Kind::SecretMeta, &k, &v)
                        .map_err(|e| AppError::internal("secret metadata", e))?;
                    out.push(SecretListEntry {
                        path: s.to_owned(),
                        current_version: meta.current,
                        updated_at: meta.updated,
                    });
                    if out.len() == limit {
                        // More may follow; a final empty page is cheaper than a look-ahead.
                        return Ok((out, Some(s.to_owned())));
                    }
                }
                if exhausted {
                    break;
                }
            }
        }
        Ok((out, None))
    }
}

/// Keys of the `secrets` table a listing reads: one key, or every key with a byte prefix.
#[derive(Debug, PartialEq, Eq)]
enum KeyRange {
    Key(Vec<u8>),
    Prefix(Vec<u8>),
}

impl KeyRange {
    fn start(&self) -> &[u8] {
        match self {
            Self::Key(k) | Self::Prefix(k) => k,
        }
    }
}

impl Secrets {
    /// Re-encryption (see `reencrypt`): moves the values and metadata of the path stored under
    /// `key` to the current generation, under the path's lock and with a compare-and-set on
    /// its metadata, so no concurrent write is lost. Returns true unless everything already
    /// was current (a lost compare-and-set counts as not settled yet).
    pub(crate) async fn reseal(&self, keys: &OpenKeys, key: &[u8]) -> AppResult<bool> {
        let _guard = self.lock_for_key(key).lock().await;
        let Some(raw) = self.store.get(SECRETS, key).await.map_err(store_err)? else {
            return Ok(false);
        };
        let meta: SecretMeta = records::verify(keys, Kind::SecretMeta, key, &raw)
            .map_err(|e| AppError::internal("secret metadata", e))?;
        let path =
            std::str::from_utf8(key).map_err(|e| AppError::internal("secret metadata", e))?;
        let current = keys.current_generation();
        let mut batch = Batch::new();
        for v in meta.versions.iter().filter(|v| !v.destroyed) {
            let vkey = version_key_of(key, v.v);
            let Some(sealed) = self.store.get(VERSIONS, &vkey).await.map_err(store_err)? else {
                continue;
            };
            if crate::keys::stamped_id(&sealed) == Some(current) {
                continue;
            }
            let plain = keys
                .decrypt_value(path, v.v, meta.incarnation, &sealed)
                .map_err(|e| AppError::internal("secret value", e))?;
            let resealed = keys
                .encrypt_value(path, v.v, meta.incarnation, plain.expose_secret())
                .map_err(|e| AppError::internal("secret value", e))?;
            batch.put(VERSIONS, vkey, resealed);
        }
        let retagged = records::retag(keys, Kind::SecretMeta, key, &raw)
            .map_err(|e| AppError::internal("secret metadata", e))?;
        if batch.is_empty() && retagged.is_none() {
            return Ok(false);
        }
        batch.require_value(SECRETS, key.to_vec(), raw.clone());
        batch.put(SECRETS, key.to_vec(), retagged.unwrap_or(raw));
        match self.store.commit(batch).await {
            Ok(()) | Err(StoreError::Conflict { .. }) => Ok(true),
            Err(e) => Err(store_err(e)),
        }
    }
}

/// The key ranges of `spans`, in key order. A span `p` and below is the key `p` plus the
/// prefix `p/` (a byte prefix `p` would also read `p-x` or `px`, which lie outside it). Spans
/// never overlap (none covers another), so neither do their ranges, and ordering them by
/// start orders every key they hold.
fn key_ranges(spans: &[PathSpan]) -> Vec<KeyRange> {
    let mut ranges = Vec::with_capacity(spans.len() * 2);
    for span in spans {
        match span {
            PathSpan::Exactly(p) => ranges.push(KeyRange::Key(p.as_str().as_bytes().to_vec())),
            PathSpan::Under(prefix) => match prefix.as_path() {
                None => ranges.push(KeyRange::Prefix(Vec::new())),
                Some(p) => {
                    ranges.push(KeyRange::Key(p.as_str().as_bytes().to_vec()));
                    ranges.push(KeyRange::Prefix(format!("{}/", p.as_str()).into_bytes()));
                }
            },
        }
    }
    ranges.sort_by(|a, b| a.start().cmp(b.start()));
    ranges
}

/// What to do to versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionOp {
    /// Soft delete.
    Delete,
    /// Undo a soft delete.
    Undelete,
    /// Remove the value for good.
    Destroy,
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
