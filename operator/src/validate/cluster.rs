//! Validating a `SpikeCluster`.

use spike_core::id::TrustDomain;
use spike_core::tenancy::{TenancyRoots, Tenant};

use super::{InvalidSpec, namespace_of};
use crate::crd::SpikeCluster;
use crate::names::MAX_CLUSTER_NAME;

/// Most keepers: keeper IDs are `/spike/keeper/1` to `/spike/keeper/255`.
const MAX_KEEPERS: i32 = 255;

/// A `SpikeCluster` whose spec holds together, with what its tenants are checked against.
#[derive(Debug, Clone)]
pub struct ValidCluster {
    /// The cluster's name, a DNS label short enough for every name derived from it.
    pub name: String,
    /// The cluster's own namespace.
    pub namespace: String,
    /// The trust domain it serves.
    pub trust_domain: TrustDomain,
    /// The first segments of the tenant prefixes.
    pub roots: TenancyRoots,
}

impl ValidCluster {
    /// What a resource in `namespace` may touch in this cluster.
    pub fn tenant(&self, namespace: &str) -> Result<Tenant, InvalidSpec> {
        Tenant::new(
            namespace,
            &self.namespace,
            self.trust_domain.clone(),
            self.roots.clone(),
        )
        .map_err(InvalidSpec::tenancy("metadata.namespace"))
    }
}

/// Checks a `SpikeCluster`'s spec (the schema's rules again, since a resource may predate a
/// schema change, and what the schema cannot check).
pub fn validate_cluster(cluster: &SpikeCluster) -> Result<ValidCluster, InvalidSpec> {
    let namespace = namespace_of(&cluster.metadata)?.to_owned();
    let name = cluster_name(cluster.metadata.name.as_deref().unwrap_or_default())?;
    let spec = &cluster.spec;
    let trust_domain = TrustDomain::new(&spec.trust_domain).map_err(InvalidSpec::TrustDomain)?;
    let keepers = &spec.keepers;
    if !(1..=MAX_KEEPERS).contains(&keepers.replicas) {
        return Err(InvalidSpec::Replicas(keepers.replicas));
    }
    if !(1..=keepers.replicas).contains(&keepers.threshold) {
        return Err(InvalidSpec::Threshold {
            threshold: keepers.threshold,
            replicas: keepers.replicas,
        });
    }
    let identity = &spec.identity;
    let sources = [
        identity.spire_csi.is_some(),
        identity.cert_manager_csi.is_some(),
        identity.host_path.is_some(),
    ];
    if sources.iter().filter(|&&s| s).count() != 1 {
        return Err(InvalidSpec::Identity);
    }
    if identity.cert_manager_csi.is_some() {
        return Err(InvalidSpec::CertManagerIdentity);
    }
    let roots = TenancyRoots::new(&spec.tenancy.path_root, &spec.tenancy.id_root)
        .map_err(InvalidSpec::tenancy("spec.tenancy"))?;
    // The cluster's own namespace must itself be a valid tenant.
    let valid = ValidCluster {
        name,
        namespace,
        trust_domain,
        roots,
    };
    valid.tenant(&valid.namespace)?;
    Ok(valid)
}

/// The cluster's name when Services, StatefulSets and their pods' labels can be named after it:
/// a DNS-1035 label (a Service name must start with a letter) of at most
/// [`MAX_CLUSTER_NAME`] characters.
fn cluster_name(name: &str) -> Result<String, InvalidSpec> {
    let b = name.as_bytes();
    let ok = (1..=MAX_CLUSTER_NAME).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if ok {
        Ok(name.to_owned())
    } else {
        Err(InvalidSpec::ClusterName {
            name: name.chars().take(80).collect(),
            max: MAX_CLUSTER_NAME,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{HostPathSocket, SpikeClusterSpec};
    use crate::validate::tests_support::cluster;

    fn spec() -> SpikeClusterSpec {
        cluster("spike-system").spec
    }

    fn with(spec: SpikeClusterSpec) -> Result<ValidCluster, InvalidSpec> {
        let mut c = cluster("spike-system");
        c.spec = spec;
        validate_cluster(&c)
    }

    #[test]
    fn a_default_cluster_is_valid() {
        let v = with(spec()).unwrap();
        assert_eq!(v.namespace, "spike-system");
        assert_eq!(v.trust_domain.as_str(), "spike.dev");
        let t = v.tenant("team-a").unwrap();
        assert_eq!(t.path_prefix().as_str(), "k8s/team-a");
    }

    #[test]
    fn bad_specs_say_which_field() {
        let mut s = spec();
        s.trust_domain = "Spike.Dev".into();
        assert!(
            with(s)
                .unwrap_err()
                .to_string()
                .starts_with("spec.trustDomain: invalid trust domain")
        );

        let mut s = spec();
        s.keepers.threshold = 4;
        assert_eq!(
            with(s).unwrap_err().to_string(),
            "spec.keepers.threshold (4) must be between 1 and spec.keepers.replicas (3)"
        );
        let mut s = spec();
        s.keepers.threshold = 0;
        assert!(matches!(with(s), Err(InvalidSpec::Threshold { .. })));

        for replicas in [0, 256] {
            let mut s = spec();
            s.keepers.replicas = replicas;
            assert_eq!(
                with(s).unwrap_err().to_string(),
                format!("spec.keepers.replicas ({replicas}) must be between 1 and 255")
            );
        }

        let mut s = spec();
        s.identity.host_path = Some(HostPathSocket {
            path: "/run/spire/sockets".into(),
            socket_name: "agent.sock".into(),
        });
        assert_eq!(
            with(s.clone()).unwrap_err().to_string(),
            "spec.identity must set exactly one of spireCsi, certManagerCsi and hostPath"
        );
        s.identity.spire_csi = None;
        with(s.clone()).unwrap();
        s.identity.host_path = None;
        assert!(matches!(with(s.clone()), Err(InvalidSpec::Identity)));

        // csi-driver-spiffe cannot issue /spike/ IDs: refused with the reason and the way out.
        s.identity.cert_manager_csi = Some(crate::crd::CertManagerCsi::default());
        let err = with(s).unwrap_err().to_string();
        assert!(
            err.starts_with("spec.identity.certManagerCsi is not supported yet: cert-manager's csi-driver-spiffe issues only spiffe://<td>/ns/<namespace>/sa/<serviceaccount> IDs"),
            "{err}"
        );
        assert!(err.ends_with("use spireCsi or hostPath"), "{err}");

        let mut s = spec();
        s.tenancy.id_root = "spike".into();
        assert!(
            with(s)
                .unwrap_err()
                .to_string()
                .starts_with("spec.tenancy: tenancy root")
        );
    }

    #[test]
    fn the_name_must_fit_every_derived_name() {
        let mut c = cluster("spike-system");
        for good in ["spike", "a", "prod-1", &"a".repeat(MAX_CLUSTER_NAME)] {
            c.metadata.name = Some(good.to_owned());
            assert_eq!(validate_cluster(&c).unwrap().name, good);
        }
        for bad in [
            "",
            "1spike",
            "spike-",
            "Spike",
            "spike.prod",
            "spike_prod",
            &"a".repeat(MAX_CLUSTER_NAME + 1),
        ] {
            c.metadata.name = Some(bad.to_owned());
            let err = validate_cluster(&c).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "metadata.name {bad:?}: a SpikeCluster's name must be a DNS label (lowercase letters, digits and '-', starting with a letter) of at most 45 characters, so the names of the objects it owns fit Kubernetes' limits"
                )
            );
        }
        c.metadata.name = None;
        assert!(matches!(
            validate_cluster(&c),
            Err(InvalidSpec::ClusterName { .. })
        ));
    }

    #[test]
    fn a_cluster_needs_a_namespace() {
        let mut c = cluster("spike-system");
        c.metadata.namespace = None;
        assert_eq!(validate_cluster(&c).unwrap_err(), InvalidSpec::NoNamespace);
    }
}
