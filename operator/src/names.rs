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
    }
}
