//! Validating a `SpikePolicy` against its cluster's tenancy.

use kube::ResourceExt;
use spike_core::policy::{Permissions, Policy, PolicyName};

use super::{InvalidSpec, ValidCluster, namespace_of};
use crate::crd::SpikePolicy;

/// A `SpikePolicy` that stays inside its namespace's tenancy, as the Nexus policy it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPolicy {
    /// The policy, named `k8s.<namespace>.<name>`.
    pub policy: Policy,
}

/// The Nexus name of the policy of `SpikePolicy` `name` in `namespace`. A namespace holds no
/// `.`, so the first `.` after `k8s.` ends it and two resources never share a name.
pub fn policy_name(namespace: &str, name: &str) -> String {
    format!("k8s.{namespace}.{name}")
}

/// Checks a `SpikePolicy` against `cluster`: ID and path patterns under the namespace's
/// prefixes, `super` only from the cluster's namespace, and SPIKE's own policy rules.
pub fn validate_policy(
    policy: &SpikePolicy,
    cluster: &ValidCluster,
) -> Result<ValidPolicy, InvalidSpec> {
    let namespace = namespace_of(&policy.metadata)?;
    let tenant = cluster.tenant(namespace)?;
    let spec = &policy.spec;
    let id_pattern = tenant
        .check_id_pattern(&spec.spiffe_id_pattern)
        .map_err(InvalidSpec::tenancy("spec.spiffeIdPattern"))?;
    let path_pattern = tenant
        .check_path_pattern(&spec.path_pattern)
        .map_err(InvalidSpec::tenancy("spec.pathPattern"))?;
    let permissions: Permissions = spec.permissions.iter().map(|&p| p.into()).collect();
    tenant
        .check_permissions(permissions)
        .map_err(InvalidSpec::tenancy("spec.permissions"))?;
    let name = PolicyName::new(&policy_name(namespace, &policy.name_any()))
        .map_err(InvalidSpec::Policy)?;
    let policy =
        Policy::new(name, id_pattern, path_pattern, permissions).map_err(InvalidSpec::Policy)?;
    Ok(ValidPolicy { policy })
}
