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
/// prefixes (the tenancy roots, from the cluster's namespace), `super` only from the cluster's
/// namespace, and SPIKE's own policy rules.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests_support::{cluster, policy};
    use crate::validate::validate_cluster;

    fn check(p: &SpikePolicy) -> Result<ValidPolicy, InvalidSpec> {
        validate_policy(p, &validate_cluster(&cluster("spike-system")).unwrap())
    }

    const A_IDS: &str = "spiffe://spike.dev/ns/team-a/**";
    const A_PATHS: &str = "k8s/team-a/**";

    #[test]
    fn a_policy_inside_its_namespace_becomes_a_nexus_policy() {
        let v = check(&policy("team-a", A_IDS, A_PATHS, &["read", "list"])).unwrap();
        assert_eq!(v.policy.name().as_str(), "k8s.team-a.readers");
        assert_eq!(v.policy.spiffe_id_pattern().as_str(), A_IDS);
        assert_eq!(v.policy.path_pattern().as_str(), A_PATHS);
        assert_eq!(policy_name("a-b", "c"), "k8s.a-b.c");
    }

    #[test]
    fn tenancy_escapes_are_refused() {
        let cases = [
            (
                policy("team-a", A_IDS, "k8s/team-b/**", &["read"]),
                "spec.pathPattern: pathPattern k8s/team-b/** can reach paths outside namespace team-a's prefix k8s/team-a/: its leading segments must be literally k8s/team-a",
            ),
            (
                policy("team-a", A_IDS, "**", &["read"]),
                "spec.pathPattern: pathPattern ** can reach paths outside namespace team-a's prefix k8s/team-a/: its leading segments must be literally k8s/team-a",
            ),
            (
                policy(
                    "team-a",
                    "spiffe://spike.dev/ns/team-b/**",
                    A_PATHS,
                    &["read"],
                ),
                "spec.spiffeIdPattern: spiffe://spike.dev/ns/team-b/** can reach identities outside namespace team-a's prefix spiffe://spike.dev/ns/team-a/: a resource in this namespace may only name identities below it",
            ),
            (
                policy("team-a", "spiffe://spike.dev/ns/*/**", A_PATHS, &["read"]),
                "spec.spiffeIdPattern: spiffe://spike.dev/ns/*/** can reach identities outside namespace team-a's prefix spiffe://spike.dev/ns/team-a/: a resource in this namespace may only name identities below it",
            ),
            (
                policy("team-a", A_IDS, A_PATHS, &["read", "super"]),
                "spec.permissions: only the SpikeCluster's own namespace (spike-system) may grant 'super'; namespace team-a may not",
            ),
            (
                policy(
                    "team-a",
                    "spiffe://other.dev/ns/team-a/**",
                    A_PATHS,
                    &["read"],
                ),
                "spec.spiffeIdPattern: spiffe://other.dev/ns/team-a/** is not in trust domain spike.dev, the one this SpikeCluster serves",
            ),
        ];
        for (p, message) in cases {
            assert_eq!(check(&p).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn the_cluster_namespace_reaches_every_tenant_within_the_roots() {
        check(&policy(
            "spike-system",
            "spiffe://spike.dev/ns/**",
            "k8s/**",
            &["super"],
        ))
        .unwrap();
        for (ids, paths, perms) in [
            // Beyond the tenancy roots: outside the operator's scope in Nexus.
            ("spiffe://spike.dev/ns/**", "**", &["read"][..]),
            ("spiffe://spike.dev/**", "k8s/**", &["read"][..]),
        ] {
            let err = check(&policy("spike-system", ids, paths, perms)).unwrap_err();
            assert!(matches!(err, InvalidSpec::Tenancy { .. }), "{err}");
        }
    }

    #[test]
    fn spike_policy_rules_still_apply() {
        let err = check(&policy("team-a", A_IDS, A_PATHS, &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a policy must grant at least one permission"
        );
        let err = check(&policy("team-a", A_IDS, A_PATHS, &["resolve"])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("'resolve' can only be granted to gateway identities")
        );
        let mut p = policy("team-a", A_IDS, A_PATHS, &["read"]);
        p.metadata.name = Some("x".repeat(200));
        assert!(
            check(&p)
                .unwrap_err()
                .to_string()
                .starts_with("policy name is ")
        );
    }
}
