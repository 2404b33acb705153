//! Policies: read, then create or replace only when the stored one differs.

use http::Method;
use spike_core::api::{PolicyResponse, PutPolicyRequest, PutPolicyResponse};
use spike_core::policy::Permission;

use super::client::NexusSync;
use super::error::SyncError;
use super::{DeleteOutcome, DeletionPolicy};

/// A policy as a `SpikePolicy` declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPolicy {
    /// The policy's name in Nexus.
    pub name: String,
    /// Which callers it applies to.
    pub spiffe_id_pattern: String,
    /// Which secret paths it covers.
    pub path_pattern: String,
    /// What it allows.
    pub permissions: Vec<Permission>,
}

/// What applying a policy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// It did not exist and was created.
    Created,
    /// It differed and was replaced.
    Replaced,
    /// It was already as declared: nothing was written.
    Unchanged,
}

/// What a reconcile will write to a policy, if anything.
#[derive(Debug)]
pub struct PolicyPlan {
    route: String,
    what: String,
    body: Option<PutPolicyRequest>,
}

impl PolicyPlan {
    /// True when nothing will be written.
    pub fn is_unchanged(&self) -> bool {
        self.body.is_none()
    }
}

impl DesiredPolicy {
    /// True when `stored` grants exactly this (permissions compared as sets).
    fn matches(&self, stored: &PolicyResponse) -> bool {
        self.spiffe_id_pattern == stored.spiffe_id_pattern
            && self.path_pattern == stored.path_pattern
            && sorted(&self.permissions) == sorted(&stored.permissions)
    }
}

fn sorted(p: &[Permission]) -> Vec<Permission> {
    let mut v = p.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

fn route(name: &str) -> Result<String, SyncError> {
    // Nexus's own rule for names; checked here so a bad name never becomes a URL.
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(SyncError::BadInput(format!(
            "policy name `{name}`: use 1 to 128 characters of letters, digits, `.`, `_` and `-`"
        )));
    }
    Ok(format!("/v1/policies/{name}"))
}

impl NexusSync {
    /// Makes the policy in Nexus what `desired` declares, writing only when it differs.
    pub async fn apply_policy(&self, desired: &DesiredPolicy) -> Result<PolicyOutcome, SyncError> {
        let plan = self.plan_policy(desired).await?;
        self.write_policy_plan(plan).await
    }

    /// The read half of [`NexusSync::apply_policy`]: what to write, if anything. Nothing is
    /// written.
    pub async fn plan_policy(&self, desired: &DesiredPolicy) -> Result<PolicyPlan, SyncError> {
        let route = route(&desired.name)?;
        let what = format!("policy {}", desired.name);
        let stored: Option<PolicyResponse> = self.get_optional(&route, &what).await?;
        let body = match &stored {
            Some(s) if desired.matches(s) => None,
            _ => Some(PutPolicyRequest {
                spiffe_id_pattern: desired.spiffe_id_pattern.clone(),
                path_pattern: desired.path_pattern.clone(),
                permissions: sorted(&desired.permissions),
                // A policy created by someone else after the read is not overwritten.
                create_only: stored.is_none(),
            }),
        };
        Ok(PolicyPlan { route, what, body })
    }

    /// The write half of [`NexusSync::apply_policy`]. A create finding the policy created
    /// since the read is [`SyncError::Conflict`].
    pub async fn write_policy_plan(&self, plan: PolicyPlan) -> Result<PolicyOutcome, SyncError> {
        let Some(body) = plan.body else {
            return Ok(PolicyOutcome::Unchanged);
        };
        let _: PutPolicyResponse = self
            .call(Method::PUT, &plan.route, Some(&body), &plan.what)
            .await?;
        Ok(if body.create_only {
            PolicyOutcome::Created
        } else {
            PolicyOutcome::Replaced
        })
    }

    /// Removes policy `name` under [`DeletionPolicy::Delete`]; `Retain` touches nothing.
    pub async fn delete_policy(
        &self,
        name: &str,
        policy: DeletionPolicy,
    ) -> Result<DeleteOutcome, SyncError> {
        let route = route(name)?;
        if policy == DeletionPolicy::Retain {
            return Ok(DeleteOutcome::Retained);
        }
        match self
            .call_raw::<serde_json::Value>(Method::DELETE, &route, None::<&()>)
            .await
        {
            Ok(_) => Ok(DeleteOutcome::Deleted),
            Err(e) if SyncError::is_not_found(&e) => Ok(DeleteOutcome::AlreadyGone),
            Err(e) => Err(SyncError::from_client(e, &format!("policy {name}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(perms: &[Permission]) -> PolicyResponse {
        PolicyResponse {
            name: "web".into(),
            spiffe_id_pattern: "spiffe://td/ns/web/**".into(),
            path_pattern: "k8s/web/**".into(),
            permissions: perms.to_vec(),
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn a_policy_matches_whatever_the_order_of_its_permissions() {
        let d = DesiredPolicy {
            name: "web".into(),
            spiffe_id_pattern: "spiffe://td/ns/web/**".into(),
            path_pattern: "k8s/web/**".into(),
            permissions: vec![Permission::Read, Permission::List, Permission::Read],
        };
        assert!(d.matches(&stored(&[Permission::List, Permission::Read])));
        assert!(!d.matches(&stored(&[Permission::Read])));
        let mut other = d;
        other.path_pattern = "k8s/other/**".into();
        assert!(!other.matches(&stored(&[Permission::List, Permission::Read])));
    }

    #[test]
    fn bad_policy_names_never_become_urls() {
        for bad in ["", "a/b", "../x", "a?b", &"x".repeat(129)] {
            let e = route(bad).unwrap_err();
            assert!(matches!(e, SyncError::BadInput(_)), "{bad}: {e:?}");
        }
        assert_eq!(
            route("ns-web.read_1").unwrap(),
            "/v1/policies/ns-web.read_1"
        );
    }
}
