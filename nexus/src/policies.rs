//! Policies: stored authenticated, served from an in-memory engine swapped on every change.

use std::sync::{Arc, RwLock};

use spike_core::admin_scope::AdminScope;
use spike_core::api::{PolicyResponse, PutPolicyRequest, PutPolicyResponse};
use spike_core::error::ErrorCode;
use spike_core::pattern::{IdPattern, PathPattern};
use spike_core::policy::{Policy, PolicyEngine};
use spike_store::{Batch, Store, StoreError, Table};

use crate::clock::now;
use crate::error::{AppError, AppResult};
use crate::keys::OpenKeys;
use crate::records::{self, Kind};

/// Policies, keyed by name.
pub(crate) const POLICIES: Table = Table::new("policies");

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Stored {
    policy: Policy,
    created: String,
    updated: String,
}

impl Stored {
    fn to_api(&self) -> PolicyResponse {
        PolicyResponse {
            name: self.policy.name().as_str().to_owned(),
            spiffe_id_pattern: self.policy.spiffe_id_pattern().as_str().to_owned(),
            path_pattern: self.policy.path_pattern().as_str().to_owned(),
            permissions: self.policy.permissions().iter().collect(),
            created_at: self.created.clone(),
            updated_at: self.updated.clone(),
        }
    }
}

/// Who administers policies: a full administrator, or a scoped one (the operator) whose every
/// policy, new or existing, must lie within its scope.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PolicyAdmin<'a> {
    /// The superuser, or a workload with `super` on `**`.
    Full,
    /// The operator, bounded by its scope.
    Scoped(&'a AdminScope),
}

impl PolicyAdmin<'_> {
    /// Refuses a policy outside the scope; `what` names it in the refusal ("the new policy",
    /// "the existing policy web").
    fn check(self, policy: &Policy, what: &str) -> AppResult<()> {
        match self {
            Self::Full => Ok(()),
            Self::Scoped(scope) => scope
                .check(policy)
                .map_err(|e| AppError::outside_scope(what, &e)),
        }
    }

    /// Refuses a request whose patterns or permissions lie outside the scope, before the
    /// policy is validated. Patterns that do not parse pass here: validation says why.
    fn check_request(self, req: &PutPolicyRequest) -> AppResult<()> {
        let Self::Scoped(scope) = self else {
            return Ok(());
        };
        let (Ok(paths), Ok(ids)) = (
            PathPattern::parse(&req.path_pattern),
            IdPattern::parse(&req.spiffe_id_pattern),
        ) else {
            return Ok(());
        };
        let permissions = req.permissions.iter().copied().collect();
        scope
            .check_parts(&paths, &ids, permissions)
            .map_err(|e| AppError::outside_scope("the policy", &e))
    }

    /// True when the administrator may see `policy`.
    fn sees(self, policy: &Policy) -> bool {
        self.check(policy, "").is_ok()
    }
}

pub(crate) struct Policies {
    store: Arc<dyn Store>,
    engine: RwLock<Arc<PolicyEngine>>,
    write: tokio::sync::Mutex<()>,
}

impl Policies {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            engine: RwLock::new(Arc::new(PolicyEngine::new(Vec::new()))),
            write: tokio::sync::Mutex::new(()),
        }
    }

    /// True when a workload policy grants `caller` `super` on every path: such a caller may
    /// manage policies.
    pub(crate) fn is_admin(&self, caller: &spike_core::id::SpiffeId) -> bool {
        // As in the engine: workload policies never apply to SPIKE's own (reserved) IDs, such
        // as gateways, however broad their ID pattern.
        if spike_core::policy::CallerClass::of(caller) != spike_core::policy::CallerClass::Workload
        {
            return false;
        }
        self.engine().policies().iter().any(|p| {
            p.kind() == spike_core::policy::PolicyKind::Workload
                && p.spiffe_id_pattern().matches(caller)
                && p.path_pattern().matches_everything()
                && p.permissions()
                    .contains(spike_core::policy::Permission::Super)
        })
    }

    /// The current engine (default deny until policies load).
    pub(crate) fn engine(&self) -> Arc<PolicyEngine> {
        self.engine
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn all(&self, keys: &OpenKeys) -> AppResult<Vec<Stored>> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .store
                .scan(POLICIES, b"", after.as_deref(), 1000)
                .await
                .map_err(|e| AppError::internal("store", e))?;
            let done = page.len() < 1000;
            for (k, v) in page {
                let s: Stored = records::verify(keys, Kind::Policy, &k, &v)
                    .map_err(|e| AppError::internal("policy record", e))?;
                after = Some(k);
                out.push(s);
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// Rebuilds the engine from the store. On failure the engine denies everything: keeping
    /// the old one would keep serving a policy whose deletion was just committed.
    pub(crate) async fn reload(&self, keys: &OpenKeys) -> AppResult<()> {
        let (engine, result) = match self.all(keys).await {
            Ok(all) => (PolicyEngine::new(all.into_iter().map(|s| s.policy)), Ok(())),
            Err(e) => (PolicyEngine::empty(), Err(e)),
        };
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(engine);
        result
    }

    pub(crate) async fn put(
        &self,
        keys: &OpenKeys,
        admin: PolicyAdmin<'_>,
        name: &str,
        req: PutPolicyRequest,
    ) -> AppResult<PutPolicyResponse> {
        admin.check_request(&req)?;
        let policy = Policy::parse(
            name,
            &req.spiffe_id_pattern,
            &req.path_pattern,
            req.permissions.iter().copied(),
        )
        .map_err(|e| AppError::new(ErrorCode::InvalidPolicy, e.to_string()))?;
        let name = policy.name().clone();
        let _guard = self.write.lock().await;
        let key = name.as_str().as_bytes().to_vec();
        let old = self
            .store
            .get(POLICIES, &key)
            .await
            .map_err(|e| AppError::internal("store", e))?;
        let ts = now();
        let mut batch = Batch::new();
        let (stored, created) = match &old {
            Some(_) if req.create_only => return Err(already_exists(&name)),
            Some(raw) => {
                let prev: Stored = records::verify(keys, Kind::Policy, &key, raw)
                    .map_err(|e| AppError::internal("policy record", e))?;
                // Replacing needs the old policy within the scope too, or a scoped
                // administrator could overwrite (and so remove) anyone's policy.
                admin.check(&prev.policy, &format!("the existing policy {name}"))?;
                if prev.policy == policy {
                    return Ok(PutPolicyResponse {
                        created: false,
                        unchanged: true,
                    });
                }
                batch.require_value(POLICIES, key.clone(), raw.clone());
                (
                    Stored {
                        policy,
                        created: prev.created,
                        updated: ts,
                    },
                    false,
                )
            }
            None => {
                batch.require_absent(POLICIES, key.clone());
                (
                    Stored {
                        policy,
                        created: ts.clone(),
                        updated: ts,
                    },
                    true,
                )
            }
        };
        batch.put(
            POLICIES,
            key.clone(),
            records::tag(keys, Kind::Policy, &key, &stored),
        );
        match self.commit(batch).await {
            // Lost a race with another create of the same name.
            Err(e) if req.create_only && e.code() == ErrorCode::CasMismatch => {
                return Err(already_exists(&name));
            }
            r => r?,
        }
        self.reload(keys).await?;
        Ok(PutPolicyResponse {
            created,
            unchanged: false,
        })
    }

    /// Re-encryption (see `reencrypt`): re-tags policy `key` under the current generation,
    /// under the write lock and with a compare-and-set, so no concurrent write is lost.
    /// Returns true when it was re-tagged.
    pub(crate) async fn retag(&self, keys: &OpenKeys, key: &[u8]) -> AppResult<bool> {
        let _guard = self.write.lock().await;
        let Some(raw) = self
            .store
            .get(POLICIES, key)
            .await
            .map_err(|e| AppError::internal("store", e))?
        else {
            return Ok(false);
        };
        let Some(next) = records::retag(keys, Kind::Policy, key, &raw)
            .map_err(|e| AppError::internal("policy record", e))?
        else {
            return Ok(false);
        };
        let mut batch = Batch::new();
        batch.require_value(POLICIES, key.to_vec(), raw);
        batch.put(POLICIES, key.to_vec(), next);
        self.commit(batch).await?;
        Ok(true)
    }

    async fn commit(&self, batch: Batch) -> AppResult<()> {
        match self.store.commit(batch).await {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(AppError::new(
                ErrorCode::CasMismatch,
                "the policy changed concurrently; retry",
            )),
            Err(e) => Err(AppError::internal("store", e)),
        }
    }

    pub(crate) async fn get(
        &self,
        keys: &OpenKeys,
        admin: PolicyAdmin<'_>,
        name: &str,
    ) -> AppResult<PolicyResponse> {
        let key = valid_name(name)?.as_bytes();
        let raw = self
            .store
            .get(POLICIES, key)
            .await
            .map_err(|e| AppError::internal("store", e))?
            .ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such policy"))?;
        let s: Stored = records::verify(keys, Kind::Policy, key, &raw)
            .map_err(|e| AppError::internal("policy record", e))?;
        admin.check(&s.policy, &format!("policy {name}"))?;
        Ok(s.to_api())
    }

    /// The policies `admin` may see: all of them, or those within its scope.
    pub(crate) async fn list(
        &self,
        keys: &OpenKeys,
        admin: PolicyAdmin<'_>,
    ) -> AppResult<Vec<PolicyResponse>> {
        Ok(self
            .all(keys)
            .await?
            .iter()
            .filter(|s| admin.sees(&s.policy))
            .map(Stored::to_api)
            .collect())
    }

    pub(crate) async fn delete(
        &self,
        keys: &OpenKeys,
        admin: PolicyAdmin<'_>,
        name: &str,
    ) -> AppResult<()> {
        let key = valid_name(name)?.as_bytes().to_vec();
        let _guard = self.write.lock().await;
        let raw = self
            .store
            .get(POLICIES, &key)
            .await
            .map_err(|e| AppError::internal("store", e))?
            .ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such policy"))?;
        if let PolicyAdmin::Scoped(_) = admin {
            let prev: Stored = records::verify(keys, Kind::Policy, &key, &raw)
                .map_err(|e| AppError::internal("policy record", e))?;
            admin.check(&prev.policy, &format!("policy {name}"))?;
        }
        let mut batch = Batch::new();
        batch.require_value(POLICIES, key.clone(), raw);
        batch.delete(POLICIES, key);
        self.commit(batch).await?;
        self.reload(keys).await
    }
}

/// A name from a request, checked like a stored one, so an impossible name (say, longer than
/// the store's key limit) is a client error rather than a store failure.
fn valid_name(name: &str) -> AppResult<&str> {
    spike_core::policy::PolicyName::new(name)
        .map_err(|e| AppError::new(ErrorCode::InvalidPolicy, e.to_string()))?;
    Ok(name)
}

#[cfg(test)]
#[path = "policies_tests.rs"]
mod tests;

fn already_exists(name: &spike_core::policy::PolicyName) -> AppError {
    AppError::new(
        ErrorCode::AlreadyExists,
        format!(
            "policy {name} already exists: replace it with `spike policy create --replace`, or change it declaratively with `spike policy apply`"
        ),
    )
}
