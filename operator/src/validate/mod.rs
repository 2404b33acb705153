//! The pure "validate" step of each controller: a resource's spec, checked against the rules
//! the schema cannot express (tenancy above all), turned into parsed `spike-core` values the
//! "build" step uses. No Kubernetes or Nexus call happens here.
//!
//! Every error's message is meant for the resource's `Ready` condition: it says which field is
//! wrong and why, and never holds a secret value (the specs hold none).

mod cluster;
mod policy;
mod secret;

use std::time::Duration;

use spike_core::id::IdError;
use spike_core::policy::PolicyError;
use spike_core::tenancy::TenancyError;
use spike_core::token::DestinationError;

pub use cluster::{ValidCluster, validate_cluster};
pub use policy::{ValidPolicy, policy_name, validate_policy};
pub use secret::{
    MAX_GENERATED_LEN, MIN_GENERATED_LEN, ValidData, ValidSecret, ValidToken, validate_secret,
};

/// Why a spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSpec {
    /// The resource has no namespace (every SPIKE kind is namespaced).
    #[error("the resource has no namespace")]
    NoNamespace,
    /// A `SpikeCluster` name from which not every owned object's name can be derived.
    #[error(
        "metadata.name {name:?}: a SpikeCluster's name must be a DNS label (lowercase letters, digits and '-', starting with a letter) of at most {max} characters, so the names of the objects it owns fit Kubernetes' limits"
    )]
    ClusterName {
        /// The name, cut to 80 characters.
        name: String,
        /// The longest name accepted.
        max: usize,
    },
    /// `spec.trustDomain` is not a trust domain.
    #[error("spec.trustDomain: {0}")]
    TrustDomain(#[source] IdError),
    /// More shares needed than keepers run.
    #[error(
        "spec.keepers.threshold ({threshold}) must be between 1 and spec.keepers.replicas ({replicas})"
    )]
    Threshold {
        /// The threshold.
        threshold: i32,
        /// The replicas.
        replicas: i32,
    },
    /// Keeper replicas outside 1 to 255 (keeper IDs are 1 to 255).
    #[error("spec.keepers.replicas ({0}) must be between 1 and 255")]
    Replicas(i32),
    /// Not exactly one identity delivery.
    #[error("spec.identity must set exactly one of spireCsi, certManagerCsi and hostPath")]
    Identity,
    /// `spec.identity.certManagerCsi`, whose IDs cannot name SPIKE's components.
    #[error("spec.{}", crate::crd::CERT_MANAGER_REFUSED)]
    CertManagerIdentity,
    /// A tenancy rule.
    #[error("{field}: {source}")]
    Tenancy {
        /// The field, such as `spec.pathPattern`.
        field: String,
        /// The rule that broke.
        #[source]
        source: TenancyError,
    },
    /// A duration that is not `<n><s|m|h|d>` with `n >= 1`.
    #[error(
        "{field}: {value:?} is not a duration: write a positive number and one unit of s, m, h or d, such as 24h"
    )]
    Duration {
        /// The field.
        field: String,
        /// The value (a duration, never secret).
        value: String,
    },
    /// A destination that does not parse.
    #[error("{field}: {source}")]
    Destination {
        /// The field.
        field: String,
        /// Why.
        #[source]
        source: DestinationError,
    },
    /// A data key used twice.
    #[error("spec.data: key {0:?} appears more than once")]
    DuplicateKey(String),
    /// A data entry without exactly one source.
    #[error(
        "spec.data[{0}]: set exactly one of fromSecret and generate (values never go in the resource)"
    )]
    DataSource(usize),
    /// A generated value's length out of range.
    #[error("spec.data[{index}].generate.length ({length}) must be between {min} and {max}")]
    GenerateLength {
        /// Which entry.
        index: usize,
        /// The length.
        length: u32,
        /// Shortest.
        min: u32,
        /// Longest.
        max: u32,
    },
    /// A token for a data key the secret does not have.
    #[error("spec.tokens[{index}].key: {reason}")]
    TokenKey {
        /// Which token.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Two tokens write the same Kubernetes Secret.
    #[error("spec.tokens: secretName {0:?} appears more than once")]
    DuplicateTokenSecret(String),
    /// A token without anywhere to go.
    #[error("spec.tokens[{0}]: needs destinations, since spec.allowedDestinations is empty")]
    TokenDestinations(usize),
    /// A token's agent outside the secret's allowed SPIFFE IDs.
    #[error("spec.tokens[{0}].agent matches none of spec.allowedSpiffeIds")]
    TokenAgentNotAllowed(usize),
    /// The policy itself is refused by SPIKE's policy rules.
    #[error("{0}")]
    Policy(#[source] PolicyError),
}

impl InvalidSpec {
    fn tenancy(field: impl Into<String>) -> impl FnOnce(TenancyError) -> Self {
        let field = field.into();
        move |source| Self::Tenancy { field, source }
    }
}

/// The longest duration accepted anywhere, which no real TTL needs to exceed: ten years.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Parses the one-unit durations the schema accepts (`90s`, `15m`, `24h`, `7d`).
pub fn parse_duration(field: &str, value: &str) -> Result<Duration, InvalidSpec> {
    let bad = || InvalidSpec::Duration {
        field: field.to_owned(),
        value: value.chars().take(16).collect(),
    };
    let unit = value.chars().last().ok_or_else(bad)?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let digits = &value[..value.len() - 1];
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs = n.checked_mul(scale).ok_or_else(bad)?;
    let d = Duration::from_secs(secs);
    if d > MAX_DURATION {
        return Err(bad());
    }
    Ok(d)
}

/// The namespace of a namespaced object (the API server guarantees one; a fixture might not).
pub(crate) fn namespace_of(meta: &kube::api::ObjectMeta) -> Result<&str, InvalidSpec> {
    meta.namespace.as_deref().ok_or(InvalidSpec::NoNamespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_one_unit_and_are_positive() {
        assert_eq!(
            parse_duration("ttl", "90s").unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_duration("ttl", "15m").unwrap(),
            Duration::from_secs(900)
        );
        assert_eq!(
            parse_duration("ttl", "24h").unwrap(),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            parse_duration("ttl", "7d").unwrap(),
            Duration::from_secs(604_800)
        );
        for bad in [
            "",
            "0s",
            "05m",
            "1",
            "h",
            "1h30m",
            "-1h",
            "1w",
            "99999999d",
            "1.5h",
            "１h",
        ] {
            let err = parse_duration("spec.ttl", bad).unwrap_err();
            assert!(
                err.to_string().starts_with("spec.ttl: ")
                    && err.to_string().contains("is not a duration"),
                "{bad}: {err}"
            );
        }
    }
}

/// Resources for the tests of this module and its children.
#[cfg(test)]
pub(crate) mod tests_support {
    use crate::crd::{
        ClusterRef, DataEntry, Generate, SecretKeySelector, SpikeCluster, SpikeClusterSpec,
        SpikePolicy, SpikePolicySpec, SpikeSecret, SpikeSecretSpec,
    };

    fn meta(name: &str, ns: &str) -> kube::api::ObjectMeta {
        kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        }
    }

    fn cluster_ref() -> ClusterRef {
        ClusterRef {
            name: "spike".into(),
            namespace: Some("spike-system".into()),
        }
    }

    /// A default cluster `spike` serving `spike.dev` in `ns`.
    pub(crate) fn cluster(ns: &str) -> SpikeCluster {
        let spec: SpikeClusterSpec =
            serde_json::from_value(serde_json::json!({"trustDomain": "spike.dev"})).unwrap();
        SpikeCluster {
            metadata: meta("spike", ns),
            spec,
            status: None,
        }
    }

    /// A secret `db` in `ns` at `path`, with one key from a Secret and one generated.
    pub(crate) fn secret(ns: &str, path: &str) -> SpikeSecret {
        SpikeSecret {
            metadata: meta("db", ns),
            spec: SpikeSecretSpec {
                cluster_ref: cluster_ref(),
                path: path.into(),
                data: vec![
                    DataEntry {
                        key: "password".into(),
                        from_secret: Some(SecretKeySelector {
                            name: "db-source".into(),
                            key: "password".into(),
                            namespace: None,
                        }),
                        generate: None,
                    },
                    DataEntry {
                        key: "salt".into(),
                        from_secret: None,
                        generate: Some(Generate {
                            length: 32,
                            alphabet: Default::default(),
                        }),
                    },
                ],
                write_policy: Default::default(),
                deletion_policy: Default::default(),
                ttl: None,
                allowed_spiffe_ids: vec![],
                allowed_destinations: vec![],
                tokens: vec![],
            },
            status: None,
        }
    }

    /// A policy `readers` in `ns`.
    pub(crate) fn policy(ns: &str, id: &str, path: &str, perms: &[&str]) -> SpikePolicy {
        let permissions = perms
            .iter()
            .map(|p| serde_json::from_value(serde_json::json!(p)).unwrap())
            .collect();
        SpikePolicy {
            metadata: meta("readers", ns),
            spec: SpikePolicySpec {
                cluster_ref: cluster_ref(),
                spiffe_id_pattern: id.into(),
                path_pattern: path.into(),
                permissions,
            },
            status: None,
        }
    }
}
