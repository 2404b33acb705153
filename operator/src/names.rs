//! The names of the objects a `SpikeCluster` owns, in one place: the builders create objects by
//! these names and the controllers find them (and Nexus's address) by the same.
//!
//! Every name starts with the cluster's name, so two clusters in one namespace never collide,
//! and stays within Kubernetes' 63-character limits (a StatefulSet's pods carry a
//! `controller-revision-hash` label made of its name and a hash) as long as the cluster's name
//! is short enough, which the validate step checks.

/// The Nexus API port (mTLS), as in the settings' default `0.0.0.0:8553`.
pub const NEXUS_API_PORT: u16 = 8553;
/// The Nexus health port (plain HTTP: `/healthz`, `/readyz`, `/metrics`).
pub const NEXUS_HEALTH_PORT: u16 = 8554;
/// The keepers' API port (mTLS, Nexus and bootstrap only).
pub const KEEPER_API_PORT: u16 = 8443;
/// The keepers' health port (`/readyz` is ready only while the keeper holds its share).
pub const KEEPER_HEALTH_PORT: u16 = 8444;
/// The gateway's port for agents.
pub const GATEWAY_PORT: u16 = 8480;
/// The gateway's health port.
pub const GATEWAY_HEALTH_PORT: u16 = 8481;

/// The longest `SpikeCluster` name: the keeper StatefulSet `<cluster>-keeper` names its pods'
/// `controller-revision-hash` label `<cluster>-keeper-<hash of up to 10 characters>`, and a
/// label value holds at most 63 characters (63 - 11 - 7 = 45). Every other derived name fits
/// with it: the bootstrap Job's pods, `<cluster>-bootstrap-<5 characters>`, are 61 at most.
pub const MAX_CLUSTER_NAME: usize = 45;

/// The ConfigMap with every component's settings file.
pub fn config(cluster: &str) -> String {
    format!("{cluster}-config")
}

/// The NetworkPolicy that denies every SPIKE pod of the cluster all traffic the others do not
/// allow.
pub fn default_deny(cluster: &str) -> String {
    format!("{cluster}-default-deny")
}

/// The address of keeper `id` (1-based, its pod's StatefulSet ordinal) through the headless
/// Service.
pub fn keeper_addr(cluster: &str, namespace: &str, id: i32) -> String {
    let sts = keeper(cluster);
    format!("{sts}-{id}.{sts}.{namespace}.svc:{KEEPER_API_PORT}")
}

/// Nexus's StatefulSet and Service.
pub fn nexus(cluster: &str) -> String {
    format!("{cluster}-nexus")
}

/// The keeper StatefulSet and its headless Service.
pub fn keeper(cluster: &str) -> String {
    format!("{cluster}-keeper")
}

/// The bootstrap Job.
pub fn bootstrap(cluster: &str) -> String {
    format!("{cluster}-bootstrap")
}

/// The gateway Deployment and Service.
pub fn gateway(cluster: &str) -> String {
    format!("{cluster}-gateway")
}

/// The address the operator (and every workload) reaches Nexus's API at, `host:port`, through
/// its Service's cluster DNS name.
pub fn nexus_addr(cluster: &str, namespace: &str) -> String {
    format!("{}.{namespace}.svc:{NEXUS_API_PORT}", nexus(cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_start_with_the_cluster_and_the_address_uses_the_service() {
        assert_eq!(nexus("prod"), "prod-nexus");
        assert_eq!(keeper("prod"), "prod-keeper");
        assert_eq!(bootstrap("prod"), "prod-bootstrap");
        assert_eq!(gateway("prod"), "prod-gateway");
        assert_eq!(nexus_addr("prod", "spike"), "prod-nexus.spike.svc:8553");
        assert_eq!(config("prod"), "prod-config");
        assert_eq!(default_deny("prod"), "prod-default-deny");
        assert_eq!(
            keeper_addr("prod", "spike", 2),
            "prod-keeper-2.prod-keeper.spike.svc:8443"
        );
    }

    #[test]
    fn the_longest_cluster_name_keeps_the_revision_hash_label_within_63() {
        let name = "a".repeat(MAX_CLUSTER_NAME);
        // A StatefulSet's pods: `controller-revision-hash: <sts>-<hash of up to 10>`.
        assert_eq!(keeper(&name).len() + 1 + 10, 63);
        assert!(nexus(&name).len() + 11 <= 63);
        // A Job's pods carry its name as a label and are named `<job>-<5 characters>`; the
        // rest are names of at most 63 characters.
        assert!(bootstrap(&name).len() + 6 <= 63);
        for derived in [gateway(&name), config(&name), default_deny(&name)] {
            assert!(derived.len() <= 63, "{derived}");
        }
    }
}
