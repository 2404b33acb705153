//! Kubernetes tenancy: a namespace is a tenant.
//!
//! A `SpikeSecret` or `SpikePolicy` in namespace `N` may touch only secret paths under `N`'s
//! path prefix (`k8s/<N>/` by default) and grant only SPIFFE IDs under `N`'s ID prefix
//! (`spiffe://<td>/ns/<N>/` by default). Only the `SpikeCluster`'s own namespace may reach
//! other tenants, and then only within the tenancy roots (paths under `k8s/`, IDs under
//! `spiffe://<td>/ns/`): exactly the scope Nexus gives the operator's identity. Only the
//! cluster's namespace may grant `super` (which then means every permission on those paths).
//! References to Kubernetes Secrets stay in the same namespace. The operator checks these rules before it writes anything, and Nexus
//! checks them again (the operator's identity holds only a scoped policy-administration
//! permission), so these checks are the first line, not the only one.
//!
//! Containment is decided on the literal leading segments of a pattern: a pattern whose first
//! segments are literally `k8s` and `<N>` can only ever match below `k8s/<N>`, whatever
//! wildcards follow. Anything else (a wildcard earlier, another namespace) is refused, even
//! when some cleverer analysis could prove it harmless: default deny.
//!
//! Every error message names the rule that broke and is fit for a Kubernetes condition.

use crate::id::{Builtin, IdError, SpiffeId, TrustDomain};
use crate::path::{PathError, PathPrefix, SecretPath};
use crate::pattern::{IdPattern, PathPattern, PathSpan, PatternError};
use crate::policy::{Permission, Permissions};

/// The default first segment of every tenant's path prefix: `k8s/<namespace>/`.
pub const DEFAULT_PATH_ROOT: &str = "k8s";
/// The default first segment of every tenant's ID prefix: `spiffe://<td>/ns/<namespace>/`.
pub const DEFAULT_ID_ROOT: &str = "ns";
/// Longest Kubernetes namespace name (an RFC 1123 label).
pub const MAX_NAMESPACE_LEN: usize = 63;

/// Why a tenancy rule refuses a path, pattern, identity or reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TenancyError {
    /// The namespace is not an RFC 1123 label.
    #[error(
        "namespace {0:?} is not a valid Kubernetes namespace: use 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
    )]
    BadNamespace(String),
    /// A tenancy root is not one path segment.
    #[error(
        "tenancy root {0:?} must be a single segment of lowercase letters, digits, '.', '_' and '-'"
    )]
    BadRoot(String),
    /// The secret path does not parse.
    #[error("invalid path: {0}")]
    Path(#[source] PathError),
    /// The path pattern does not parse.
    #[error("invalid pathPattern: {0}")]
    PathPattern(#[source] PatternError),
    /// The SPIFFE-ID pattern does not parse.
    #[error("invalid SPIFFE ID pattern: {0}")]
    IdPattern(#[source] PatternError),
    /// The SPIFFE ID does not parse.
    #[error("invalid SPIFFE ID: {0}")]
    Id(#[source] IdError),
    /// A secret path outside the namespace's prefix.
    #[error(
        "path {path} is outside namespace {namespace}'s prefix {prefix}/: a resource in this namespace may only touch paths below it"
    )]
    PathOutside {
        /// The path.
        path: String,
        /// The tenant namespace.
        namespace: String,
        /// The namespace's path prefix, without the trailing `/`.
        prefix: String,
    },
    /// A path pattern that can reach paths outside the namespace's prefix.
    #[error(
        "pathPattern {pattern} can reach paths outside namespace {namespace}'s prefix {prefix}/: its leading segments must be literally {prefix}"
    )]
    PathPatternOutside {
        /// The pattern.
        pattern: String,
        /// The tenant namespace.
        namespace: String,
        /// The namespace's path prefix, without the trailing `/`.
        prefix: String,
    },
    /// A SPIFFE ID or ID pattern of another trust domain.
    #[error("{id} is not in trust domain {served}, the one this SpikeCluster serves")]
    OtherTrustDomain {
        /// The ID or pattern.
        id: String,
        /// The cluster's trust domain.
        served: String,
    },
    /// A SPIFFE ID or ID pattern that can reach identities outside the namespace's prefix.
    #[error(
        "{id} can reach identities outside namespace {namespace}'s prefix {prefix}/: a resource in this namespace may only name identities below it"
    )]
    IdOutside {
        /// The ID or pattern.
        id: String,
        /// The tenant namespace.
        namespace: String,
        /// The namespace's ID prefix, without the trailing `/`.
        prefix: String,
    },
    /// A SPIKE component's identity named where a workload is meant.
    #[error(
        "{0} is one of SPIKE's own identities (under /spike/); it cannot be a workload or agent"
    )]
    ReservedIdentity(String),
    /// `super` granted outside the cluster's namespace.
    #[error(
        "only the SpikeCluster's own namespace ({cluster_namespace}) may grant 'super'; namespace {namespace} may not"
    )]
    SuperOutsideCluster {
        /// The tenant namespace.
        namespace: String,
        /// The cluster's namespace.
        cluster_namespace: String,
    },
    /// A reference to a Kubernetes Secret in another namespace.
    #[error(
        "Secret references are same-namespace only: a resource in namespace {namespace} cannot read a Secret in namespace {referenced}"
    )]
    CrossNamespaceSecret {
        /// The tenant namespace.
        namespace: String,
        /// The namespace referred to.
        referenced: String,
    },
}

/// A valid Kubernetes namespace name (an RFC 1123 label), which is also a valid path and ID
/// segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Namespace {
    /// Validates `s` as a namespace name.
    pub fn new(s: &str) -> Result<Self, TenancyError> {
        let b = s.as_bytes();
        let label = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let ok = !b.is_empty()
            && b.len() <= MAX_NAMESPACE_LEN
            && b.first().is_some_and(label)
            && b.last().is_some_and(label)
            && b.iter().all(|c| label(c) || *c == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            // Bounded and escaped: the message may end up in a condition.
            Err(TenancyError::BadNamespace(
                s.chars().take(MAX_NAMESPACE_LEN).collect(),
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The first segments of the tenants' path and ID prefixes (`k8s` and `ns` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenancyRoots {
    path_root: String,
    id_root: String,
}

impl TenancyRoots {
    /// Roots `path_root` (paths `<path_root>/<ns>/…`) and `id_root` (IDs
    /// `spiffe://<td>/<id_root>/<ns>/…`); each must be one segment, and the ID root must not
    /// be `spike`, which is reserved for SPIKE's components.
    pub fn new(path_root: &str, id_root: &str) -> Result<Self, TenancyError> {
        for root in [path_root, id_root] {
            let ok = !root.is_empty()
                && root != "."
                && root != ".."
                && root.len() <= MAX_NAMESPACE_LEN
                && root.bytes().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
                });
            if !ok {
                return Err(TenancyError::BadRoot(
                    root.chars().take(MAX_NAMESPACE_LEN).collect(),
                ));
            }
        }
        if id_root == "spike" {
            return Err(TenancyError::BadRoot(id_root.to_owned()));
        }
        Ok(Self {
            path_root: path_root.to_owned(),
            id_root: id_root.to_owned(),
        })
    }

    /// The first segment of the path prefixes.
    pub fn path_root(&self) -> &str {
        &self.path_root
    }

    /// The first segment of the ID prefixes.
    pub fn id_root(&self) -> &str {
        &self.id_root
    }
}

impl Default for TenancyRoots {
    fn default() -> Self {
        Self {
            path_root: DEFAULT_PATH_ROOT.to_owned(),
            id_root: DEFAULT_ID_ROOT.to_owned(),
        }
    }
}

/// One namespace's view of a SpikeCluster: what a resource in it may touch.
#[derive(Debug, Clone)]
pub struct Tenant {
    namespace: Namespace,
    cluster_namespace: Namespace,
    trust_domain: TrustDomain,
    roots: TenancyRoots,
    path_prefix: PathPrefix,
    /// What a resource in this namespace may reach: its own prefix, or for the cluster's
    /// namespace the path root (every tenant's prefix).
    path_reach: PathPrefix,
}

impl Tenant {
    /// The tenant `namespace` of the SpikeCluster in `cluster_namespace`, serving
    /// `trust_domain`.
    pub fn new(
        namespace: &str,
        cluster_namespace: &str,
        trust_domain: TrustDomain,
        roots: TenancyRoots,
    ) -> Result<Self, TenancyError> {
        let namespace = Namespace::new(namespace)?;
        let cluster_namespace = Namespace::new(cluster_namespace)?;
        let path_prefix = PathPrefix::parse(&format!("{}/{}", roots.path_root, namespace.0))
            .map_err(TenancyError::Path)?;
        let path_reach = if namespace == cluster_namespace {
            PathPrefix::parse(&roots.path_root).map_err(TenancyError::Path)?
        } else {
            path_prefix.clone()
        };
        Ok(Self {
            namespace,
            cluster_namespace,
            trust_domain,
            roots,
            path_prefix,
            path_reach,
        })
    }

    /// True when this is the SpikeCluster's own namespace, which may reach every tenant (within
    /// the tenancy roots).
    pub fn is_cluster_namespace(&self) -> bool {
        self.namespace == self.cluster_namespace
    }

    /// The namespace's path prefix, `k8s/<ns>` by default.
    pub fn path_prefix(&self) -> &PathPrefix {
        &self.path_prefix
    }

    /// The namespace's ID prefix with its trailing `/`, `spiffe://<td>/ns/<ns>/` by default.
    pub fn id_prefix(&self) -> String {
        format!(
            "{}/{}/{}/",
            self.trust_domain.id_string(),
            self.roots.id_root,
            self.namespace.0
        )
    }

    /// A secret path this namespace may write: strictly below its prefix (below the path root
    /// for the cluster's namespace).
    pub fn check_path(&self, path: &str) -> Result<SecretPath, TenancyError> {
        let path = SecretPath::parse(path).map_err(TenancyError::Path)?;
        if path.is_under(&self.path_reach) && self.path_reach.as_path() != Some(&path) {
            Ok(path)
        } else {
            Err(TenancyError::PathOutside {
                path: path.into_string(),
                namespace: self.namespace.0.clone(),
                prefix: self.path_reach.as_str().to_owned(),
            })
        }
    }

    /// A path pattern this namespace may grant: its literal leading segments are the prefix's
    /// (the path root's, for the cluster's namespace).
    pub fn check_path_pattern(&self, pattern: &str) -> Result<PathPattern, TenancyError> {
        let pattern = PathPattern::parse(pattern).map_err(TenancyError::PathPattern)?;
        if PathSpan::Under(self.path_reach.clone()).covers(&pattern.span()) {
            Ok(pattern)
        } else {
            Err(TenancyError::PathPatternOutside {
                pattern: pattern.as_str().to_owned(),
                namespace: self.namespace.0.clone(),
                prefix: self.path_reach.as_str().to_owned(),
            })
        }
    }

    /// A SPIFFE-ID pattern this namespace may grant: in the cluster's trust domain, with the
    /// literal leading segments `<id root>/<ns>` (just `<id root>` for the cluster's namespace;
    /// the reserved `/spike/` rules are the policy's, see [`crate::policy::Policy::new`]).
    pub fn check_id_pattern(&self, pattern: &str) -> Result<IdPattern, TenancyError> {
        let pattern = IdPattern::parse(pattern).map_err(TenancyError::IdPattern)?;
        self.check_trust_domain(pattern.as_str(), pattern.trust_domain_name())?;
        let inside = {
            let mut literal = pattern.literal_prefix();
            literal.next() == Some(self.roots.id_root.as_str())
                && (self.is_cluster_namespace()
                    || literal.next() == Some(self.namespace.0.as_str()))
        };
        if inside {
            Ok(pattern)
        } else {
            Err(self.id_outside(pattern.as_str()))
        }
    }

    /// An exact SPIFFE ID (an agent's) this namespace may name: in the trust domain, strictly
    /// below its ID prefix (below the ID root for the cluster's namespace).
    pub fn check_id(&self, id: &str) -> Result<SpiffeId, TenancyError> {
        let id = SpiffeId::new(id).map_err(TenancyError::Id)?;
        self.check_trust_domain(id.as_str(), id.trust_domain_name())?;
        if Builtin::is_reserved(&id, &self.trust_domain) {
            return Err(TenancyError::ReservedIdentity(id.as_str().to_owned()));
        }
        if id.as_str().starts_with(&self.id_reach()) {
            Ok(id)
        } else {
            Err(self.id_outside(id.as_str()))
        }
    }

    /// Permissions this namespace may grant: `super` only from the cluster's namespace (on
    /// paths within the path root, like everything it grants).
    pub fn check_permissions(&self, permissions: Permissions) -> Result<(), TenancyError> {
        if permissions.contains(Permission::Super) && !self.is_cluster_namespace() {
            return Err(TenancyError::SuperOutsideCluster {
                namespace: self.namespace.0.clone(),
                cluster_namespace: self.cluster_namespace.0.clone(),
            });
        }
        Ok(())
    }

    /// A reference to a Kubernetes Secret, with its namespace if one was written: only the
    /// tenant's own namespace, even for the cluster's namespace (a Secret is read with the
    /// operator's rights, which must not become a way to read another namespace's Secrets).
    pub fn check_secret_namespace(&self, referenced: Option<&str>) -> Result<(), TenancyError> {
        match referenced {
            Some(ns) if ns != self.namespace.0 => Err(TenancyError::CrossNamespaceSecret {
                namespace: self.namespace.0.clone(),
                referenced: ns.chars().take(MAX_NAMESPACE_LEN).collect(),
            }),
            _ => Ok(()),
        }
    }

    /// The IDs this namespace may name, with the trailing `/`: its ID prefix, or the ID root
    /// (`spiffe://<td>/ns/`) for the cluster's namespace.
    fn id_reach(&self) -> String {
        if self.is_cluster_namespace() {
            format!("{}/{}/", self.trust_domain.id_string(), self.roots.id_root)
        } else {
            self.id_prefix()
        }
    }

    fn check_trust_domain(&self, id: &str, td: &str) -> Result<(), TenancyError> {
        if td == self.trust_domain.as_str() {
            Ok(())
        } else {
            Err(TenancyError::OtherTrustDomain {
                id: id.to_owned(),
                served: self.trust_domain.to_string(),
            })
        }
    }

    fn id_outside(&self, id: &str) -> TenancyError {
        let prefix = self.id_reach();
        TenancyError::IdOutside {
            id: id.to_owned(),
            namespace: self.namespace.0.clone(),
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("spike.dev").unwrap()
    }

    fn tenant(ns: &str) -> Tenant {
        Tenant::new(ns, "spike-system", td(), TenancyRoots::default()).unwrap()
    }

    fn cluster() -> Tenant {
        tenant("spike-system")
    }

    #[test]
    fn prefixes_follow_the_namespace() {
        let t = tenant("team-a");
        assert_eq!(t.path_prefix().as_str(), "k8s/team-a");
        assert_eq!(t.id_prefix(), "spiffe://spike.dev/ns/team-a/");
        assert!(!t.is_cluster_namespace());
        assert!(cluster().is_cluster_namespace());
        let roots = TenancyRoots::new("tenants", "k8s-ns").unwrap();
        let t = Tenant::new("a", "spike-system", td(), roots).unwrap();
        assert_eq!(t.path_prefix().as_str(), "tenants/a");
        assert_eq!(t.id_prefix(), "spiffe://spike.dev/k8s-ns/a/");
    }

    #[test]
    fn namespaces_are_rfc1123_labels() {
        for good in ["a", "team-a", "0", "a1-b2"] {
            Namespace::new(good).unwrap();
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "-a",
            "a-",
            "Team",
            "a_b",
            "a.b",
            "a/b",
            "..",
            long.as_str(),
        ] {
            let err = Namespace::new(bad).unwrap_err();
            assert!(matches!(err, TenancyError::BadNamespace(_)), "{bad}");
            assert!(err.to_string().contains("not a valid Kubernetes namespace"));
        }
    }

    #[test]
    fn roots_are_single_segments_and_never_spike() {
        for (p, i) in [
            ("", "ns"),
            ("k8s/x", "ns"),
            ("k8s", ".."),
            ("K8S", "ns"),
            ("k8s", "spike"),
        ] {
            let err = TenancyRoots::new(p, i).unwrap_err();
            assert!(matches!(err, TenancyError::BadRoot(_)), "{p} {i}");
        }
    }

    #[test]
    fn paths_stay_strictly_below_the_prefix() {
        let t = tenant("team-a");
        assert_eq!(
            t.check_path("k8s/team-a/db/password").unwrap().as_str(),
            "k8s/team-a/db/password"
        );
        for bad in [
            "k8s/team-b/db",
            "k8s/team-a",
            "k8s/team-ab/x",
            "k8s",
            "apps/x",
        ] {
            let err = t.check_path(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "path {bad} is outside namespace team-a's prefix k8s/team-a/: a resource in this namespace may only touch paths below it"
                )
            );
        }
        let err = t.check_path("/k8s/team-a/x").unwrap_err();
        assert!(matches!(err, TenancyError::Path(PathError::LeadingSlash)));
        assert!(err.to_string().starts_with("invalid path: "));
        // The cluster's namespace reaches every tenant, within the path root only (the
        // operator's scope in Nexus is `k8s/**`).
        cluster().check_path("k8s/team-a/db").unwrap();
        for bad in ["apps/x", "k8s"] {
            assert_eq!(
                cluster().check_path(bad).unwrap_err().to_string(),
                format!(
                    "path {bad} is outside namespace spike-system's prefix k8s/: a resource in this namespace may only touch paths below it"
                )
            );
        }
    }

    #[test]
    fn path_patterns_need_the_literal_prefix() {
        let t = tenant("team-a");
        for good in [
            "k8s/team-a/**",
            "k8s/team-a/db/*",
            "k8s/team-a/x",
            "k8s/team-a/*/key",
        ] {
            t.check_path_pattern(good).unwrap();
        }
        for bad in [
            "**",
            "k8s/**",
            "k8s/*/db",
            "k8s/team-*/**",
            "k8s/team-b/**",
            "db/**",
        ] {
            let err = t.check_path_pattern(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "pathPattern {bad} can reach paths outside namespace team-a's prefix k8s/team-a/: its leading segments must be literally k8s/team-a"
                )
            );
        }
        let err = t.check_path_pattern("k8s/team-a/a**").unwrap_err();
        assert!(matches!(err, TenancyError::PathPattern(_)));
        for good in ["k8s/**", "k8s/*/db", "k8s/team-a/**"] {
            cluster().check_path_pattern(good).unwrap();
        }
        for bad in ["**", "*/x", "apps/**"] {
            assert!(
                matches!(
                    cluster().check_path_pattern(bad),
                    Err(TenancyError::PathPatternOutside { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn id_patterns_need_the_literal_prefix_and_trust_domain() {
        let t = tenant("team-a");
        for good in [
            "spiffe://spike.dev/ns/team-a/**",
            "spiffe://spike.dev/ns/team-a/sa/web",
            "spiffe://spike.dev/ns/team-a/sa/*",
        ] {
            t.check_id_pattern(good).unwrap();
        }
        for bad in [
            "spiffe://spike.dev/**",
            "spiffe://spike.dev/ns/*/sa/web",
            "spiffe://spike.dev/ns/team-b/**",
            "spiffe://spike.dev/ns/team-a*/**",
            "spiffe://spike.dev/spike/operator",
            // A namespace whose name extends this one's is another tenant.
            "spiffe://spike.dev/ns/team-ab/**",
        ] {
            let err = t.check_id_pattern(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "{bad} can reach identities outside namespace team-a's prefix spiffe://spike.dev/ns/team-a/: a resource in this namespace may only name identities below it"
                )
            );
        }
        let err = t
            .check_id_pattern("spiffe://other.dev/ns/team-a/**")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "spiffe://other.dev/ns/team-a/** is not in trust domain spike.dev, the one this SpikeCluster serves"
        );
        // The cluster's namespace reaches every tenant, but only below the ID root and never in
        // another trust domain.
        cluster()
            .check_id_pattern("spiffe://spike.dev/ns/**")
            .unwrap();
        cluster()
            .check_id_pattern("spiffe://spike.dev/ns/*/sa/web")
            .unwrap();
        for bad in ["spiffe://spike.dev/**", "spiffe://spike.dev/apps/x"] {
            assert_eq!(
                cluster().check_id_pattern(bad).unwrap_err().to_string(),
                format!(
                    "{bad} can reach identities outside namespace spike-system's prefix spiffe://spike.dev/ns/: a resource in this namespace may only name identities below it"
                )
            );
        }
        assert!(matches!(
            cluster().check_id_pattern("spiffe://other.dev/**"),
            Err(TenancyError::OtherTrustDomain { .. })
        ));
        assert!(matches!(
            t.check_id_pattern("ns/team-a/**"),
            Err(TenancyError::IdPattern(PatternError::MissingScheme))
        ));
    }

    #[test]
    fn agent_ids_stay_below_the_prefix_and_are_never_spike() {
        let t = tenant("team-a");
        t.check_id("spiffe://spike.dev/ns/team-a/sa/agent").unwrap();
        for bad in [
            "spiffe://spike.dev/ns/team-a",
            "spiffe://spike.dev/ns/team-b/sa/x",
        ] {
            assert!(
                matches!(t.check_id(bad), Err(TenancyError::IdOutside { .. })),
                "{bad}"
            );
        }
        for other in [
            "spiffe://other.dev/ns/team-a/sa/agent",
            "spiffe://spike.dev.evil/ns/team-a/sa/agent",
        ] {
            assert!(
                matches!(
                    t.check_id(other),
                    Err(TenancyError::OtherTrustDomain { .. })
                ),
                "{other}"
            );
        }
        cluster()
            .check_id("spiffe://spike.dev/ns/team-b/sa/x")
            .unwrap();
        assert!(matches!(
            cluster().check_id("spiffe://spike.dev/apps/x"),
            Err(TenancyError::IdOutside { .. })
        ));
        let err = cluster()
            .check_id("spiffe://spike.dev/spike/operator")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "spiffe://spike.dev/spike/operator is one of SPIKE's own identities (under /spike/); it cannot be a workload or agent"
        );
        assert!(matches!(
            t.check_id("spiffe://spike.dev/ns/team-a/a b"),
            Err(TenancyError::Id(_))
        ));
    }

    #[test]
    fn super_only_from_the_cluster_namespace() {
        let t = tenant("team-a");
        let sup: Permissions = [Permission::Read, Permission::Super].into_iter().collect();
        let err = t.check_permissions(sup).unwrap_err();
        assert_eq!(
            err.to_string(),
            "only the SpikeCluster's own namespace (spike-system) may grant 'super'; namespace team-a may not"
        );
        t.check_permissions(Permissions::only(Permission::Read))
            .unwrap();
        cluster().check_permissions(sup).unwrap();
    }

    #[test]
    fn secret_references_stay_in_the_namespace() {
        let t = tenant("team-a");
        t.check_secret_namespace(None).unwrap();
        t.check_secret_namespace(Some("team-a")).unwrap();
        let err = t.check_secret_namespace(Some("team-b")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Secret references are same-namespace only: a resource in namespace team-a cannot read a Secret in namespace team-b"
        );
        // Not even the cluster's namespace reads another namespace's Secrets.
        assert!(cluster().check_secret_namespace(Some("team-a")).is_err());
    }
}
