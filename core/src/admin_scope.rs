//! A scoped policy administrator: an identity that may create, replace and delete policies
//! only inside a path scope P and a SPIFFE-ID scope Q, and use a fixed set of data permissions
//! on P. Nexus gives it to the Kubernetes operator (`/spike/operator`), so even a compromised
//! operator can grant nothing beyond the tenancy its scope draws.
//!
//! A policy lies within the scope when every path its pattern can match is matched by P and
//! every ID its pattern can match is matched by Q ([`PathPattern::is_within`],
//! [`IdPattern::is_within`]). A scope is refused when P is `**`-only (that is the whole path
//! space: a superuser in all but name) or when Q reaches SPIKE's own identities
//! (`spiffe://<td>/spike/**`), so no policy it writes can ever apply to a SPIKE component or
//! grant `resolve` (only gateway policies, whose IDs are under `/spike`, may).

use crate::id::TrustDomain;
use crate::path::SecretPath;
use crate::pattern::{IdPattern, PathPattern, PatternError};
use crate::policy::{Permission, Permissions, Policy};

/// What a scoped administrator may do itself on P: see metadata and list (`list`), write
/// versions, delete them, mint reference tokens. Never `read` (values), `cipher`, `resolve`
/// or `super`.
pub const DATA_PERMISSIONS: [Permission; 4] = [
    Permission::List,
    Permission::Write,
    Permission::Delete,
    Permission::Token,
];

/// Why a scope cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminScopeError {
    /// P is not a valid path pattern.
    #[error("invalid path scope: {0}")]
    PathScope(#[source] PatternError),
    /// Q is not a valid SPIFFE-ID pattern.
    #[error("invalid SPIFFE-ID scope: {0}")]
    IdScope(#[source] PatternError),
    /// P matches every path.
    #[error(
        "the path scope matches every path: a scoped administrator must be bounded, e.g. \"k8s/**\""
    )]
    EveryPath,
    /// Q is in another trust domain.
    #[error("the SPIFFE-ID scope is in trust domain {scope}, but this Nexus serves {served}")]
    OtherTrustDomain {
        /// The scope's trust domain.
        scope: String,
        /// The served trust domain.
        served: String,
    },
    /// Q can match an ID under `/spike`.
    #[error(
        "the SPIFFE-ID scope can match SPIKE's own identities (spiffe://<td>/spike/...): use a scope such as \"spiffe://<td>/ns/**\""
    )]
    ReachesReserved,
}

/// Why a policy lies outside a scope. The messages name the patterns, never any secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutsideScope {
    /// The policy's path pattern can match a path outside P.
    #[error(
        "pathPattern {pattern} is not within the path scope {scope}: every path it can match must match the scope"
    )]
    Path {
        /// The policy's path pattern.
        pattern: String,
        /// P.
        scope: String,
    },
    /// The policy's ID pattern can match an ID outside Q.
    #[error(
        "spiffeIdPattern {pattern} is not within the SPIFFE-ID scope {scope}: every ID it can match must match the scope"
    )]
    Id {
        /// The policy's ID pattern.
        pattern: String,
        /// Q.
        scope: String,
    },
    /// A token's agent (an ID or a pattern) can be an ID outside Q.
    #[error(
        "the token's agent {pattern} is not within the SPIFFE-ID scope {scope}: a token grants its agent the secret as a policy would"
    )]
    Agent {
        /// The agent ID or pattern the token would be bound to.
        pattern: String,
        /// Q.
        scope: String,
    },
    /// The policy grants `resolve` (a gateway policy): never within a scope.
    #[error("a scoped administrator cannot grant 'resolve': gateway policies are the superuser's")]
    Resolve,
}

/// A validated scope (P, Q).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminScope {
    paths: PathPattern,
    ids: IdPattern,
}

impl AdminScope {
    /// Parses and checks a scope for a Nexus serving `served`.
    pub fn parse(paths: &str, ids: &str, served: &TrustDomain) -> Result<Self, AdminScopeError> {
        let paths = PathPattern::parse(paths).map_err(AdminScopeError::PathScope)?;
        let ids = IdPattern::parse(ids).map_err(AdminScopeError::IdScope)?;
        if paths.matches_everything() {
            return Err(AdminScopeError::EveryPath);
        }
        if ids.trust_domain_name() != served.as_str() {
            return Err(AdminScopeError::OtherTrustDomain {
                scope: ids.trust_domain_name().to_owned(),
                served: served.to_string(),
            });
        }
        if ids.could_match_under(&["spike"]) {
            return Err(AdminScopeError::ReachesReserved);
        }
        Ok(Self { paths, ids })
    }

    /// P.
    pub fn path_scope(&self) -> &PathPattern {
        &self.paths
    }

    /// Q.
    pub fn id_scope(&self) -> &IdPattern {
        &self.ids
    }

    /// True when the administrator itself may use `perm` on `path`.
    pub fn allows(&self, path: &SecretPath, perm: Permission) -> bool {
        Permissions::from(DATA_PERMISSIONS).contains(perm) && self.paths.matches(path)
    }

    /// Refuses a reference token for an agent outside Q: minting one hands the agent the
    /// secret (through a gateway) as surely as a policy would, so the same bound holds.
    pub fn check_agent(&self, agent: &IdPattern) -> Result<(), OutsideScope> {
        if agent.is_within(&self.ids) {
            Ok(())
        } else {
            Err(OutsideScope::Agent {
                pattern: agent.as_str().to_owned(),
                scope: self.ids.as_str().to_owned(),
            })
        }
    }

    /// Refuses a policy that does not lie within the scope.
    pub fn check(&self, policy: &Policy) -> Result<(), OutsideScope> {
        self.check_parts(
            policy.path_pattern(),
            policy.spiffe_id_pattern(),
            policy.permissions(),
        )
    }

    /// Refuses a policy's parts that do not lie within the scope, before the policy itself is
    /// validated: a scoped administrator asking for SPIKE's own IDs hears "outside your scope"
    /// (what it is), not only "invalid".
    pub fn check_parts(
        &self,
        paths: &PathPattern,
        ids: &IdPattern,
        permissions: Permissions,
    ) -> Result<(), OutsideScope> {
        if !paths.is_within(&self.paths) {
            return Err(OutsideScope::Path {
                pattern: paths.as_str().to_owned(),
                scope: self.paths.as_str().to_owned(),
            });
        }
        if !ids.is_within(&self.ids) {
            return Err(OutsideScope::Id {
                pattern: ids.as_str().to_owned(),
                scope: self.ids.as_str().to_owned(),
            });
        }
        if permissions.contains(Permission::Resolve) {
            return Err(OutsideScope::Resolve);
        }
        Ok(())
    }
}

#[cfg(test)]
// Tests may unwrap: a panic is the failure report.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("spike.dev").unwrap()
    }

    fn scope() -> AdminScope {
        AdminScope::parse("k8s/**", "spiffe://spike.dev/ns/**", &td()).unwrap()
    }

    fn policy(ids: &str, paths: &str, perms: &[Permission]) -> Policy {
        Policy::parse("p", ids, paths, perms.iter().copied()).unwrap()
    }

    #[test]
    fn a_token_agent_must_lie_within_the_id_scope() {
        let s = AdminScope::parse("k8s/**", "spiffe://spike.dev/ns/team-a/**", &td()).unwrap();
        let agent = |p: &str| IdPattern::parse(p).unwrap();
        assert_eq!(
            s.check_agent(&agent("spiffe://spike.dev/ns/team-a/sa/x")),
            Ok(())
        );
        assert_eq!(
            s.check_agent(&agent("spiffe://spike.dev/ns/team-a/**")),
            Ok(())
        );
        for outside in [
            "spiffe://spike.dev/ns/team-b/sa/x",
            "spiffe://spike.dev/ns/*/sa/x",
            "spiffe://spike.dev/apps/x",
            "spiffe://spike.dev/**",
        ] {
            assert!(
                matches!(
                    s.check_agent(&agent(outside)),
                    Err(OutsideScope::Agent { .. })
                ),
                "{outside}"
            );
        }
    }

    #[test]
    fn refuses_unbounded_or_reserved_scopes() {
        let bad = |p: &str, q: &str| AdminScope::parse(p, q, &td()).unwrap_err();
        assert_eq!(
            bad("**", "spiffe://spike.dev/ns/**"),
            AdminScopeError::EveryPath
        );
        assert_eq!(
            bad("**/**", "spiffe://spike.dev/ns/**"),
            AdminScopeError::EveryPath
        );
        for q in [
            "spiffe://spike.dev/**",
            "spiffe://spike.dev/*/**",
            "spiffe://spike.dev/spike/**",
            "spiffe://spike.dev/spi*/x",
            "spiffe://spike.dev/spike/operator",
        ] {
            assert_eq!(bad("k8s/**", q), AdminScopeError::ReachesReserved, "{q}");
        }
        assert!(matches!(
            bad("k8s/**", "spiffe://evil.dev/ns/**"),
            AdminScopeError::OtherTrustDomain { .. }
        ));
        assert!(matches!(
            bad("/k8s", "spiffe://spike.dev/ns/**"),
            AdminScopeError::PathScope(_)
        ));
        assert!(matches!(
            bad("k8s/**", "ns/**"),
            AdminScopeError::IdScope(_)
        ));
    }

    #[test]
    fn admits_policies_within_and_refuses_every_escape() {
        let s = scope();
        let ok = policy(
            "spiffe://spike.dev/ns/a/**",
            "k8s/a/**",
            &[Permission::Read],
        );
        assert_eq!(s.check(&ok), Ok(()));
        let sup = policy(
            "spiffe://spike.dev/ns/a/sa/x",
            "k8s/a/db",
            &[Permission::Super],
        );
        assert_eq!(s.check(&sup), Ok(()));
        for paths in ["apps/**", "**", "k8s*/x", "*/x", "k8s"] {
            let p = policy("spiffe://spike.dev/ns/a/**", paths, &[Permission::Read]);
            if paths == "k8s" {
                // `k8s/**` matches `k8s` itself.
                assert_eq!(s.check(&p), Ok(()));
                continue;
            }
            assert!(
                matches!(s.check(&p), Err(OutsideScope::Path { .. })),
                "{paths}"
            );
        }
        for ids in [
            "spiffe://spike.dev/**",
            "spiffe://spike.dev/*/a/**",
            "spiffe://spike.dev/nsx/**",
        ] {
            let p = policy(ids, "k8s/a/**", &[Permission::Read]);
            assert!(matches!(s.check(&p), Err(OutsideScope::Id { .. })), "{ids}");
        }
        let gw = policy(
            "spiffe://spike.dev/spike/gateway/g",
            "k8s/a/**",
            &[Permission::Resolve],
        );
        assert!(matches!(s.check(&gw), Err(OutsideScope::Id { .. })));
        let resolve = |ids: &str| {
            s.check_parts(
                &PathPattern::parse("k8s/a/**").unwrap(),
                &IdPattern::parse(ids).unwrap(),
                Permissions::only(Permission::Resolve),
            )
        };
        assert_eq!(
            resolve("spiffe://spike.dev/ns/a/**"),
            Err(OutsideScope::Resolve)
        );
        assert!(matches!(
            resolve("spiffe://spike.dev/spike/operator"),
            Err(OutsideScope::Id { .. })
        ));
    }

    #[test]
    fn its_own_permissions_are_the_data_set_on_the_path_scope() {
        let s = scope();
        let inside = SecretPath::parse("k8s/a/db").unwrap();
        let outside = SecretPath::parse("apps/db").unwrap();
        for p in Permission::ALL {
            let expected = DATA_PERMISSIONS.contains(&p);
            assert_eq!(s.allows(&inside, p), expected, "{p}");
            assert!(!s.allows(&outside, p), "{p}");
        }
    }
}
