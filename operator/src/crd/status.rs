//! What every status carries: conditions in Kubernetes' own `Condition` shape.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Whether a condition holds, as Kubernetes spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ConditionStatus {
    /// It holds.
    True,
    /// It does not hold.
    False,
    /// The controller cannot tell yet.
    Unknown,
}

/// One condition, in the shape of `meta/v1` `Condition` (so `kubectl wait --for=condition=…`
/// and Argo CD read it as they read any other).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Progressing`, `Degraded`, and for clusters `Bootstrapped` and `Sealed`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// When `status` last flipped (RFC 3339); unchanged while it stays the same.
    #[schemars(length(max = 64))]
    pub last_transition_time: String,
    /// A CamelCase reason, for machines.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// A sentence for humans. Never a secret value.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub message: String,
}

/// Where a `SpikeCluster` is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ClusterPhase {
    /// Objects are being created.
    Pending,
    /// Keepers and Nexus run; the bootstrap Job has not finished.
    Bootstrapping,
    /// Bootstrapped and unsealed: serving.
    Ready,
    /// Nexus holds no root key (for example after every keeper restarted).
    Sealed,
    /// Something is wrong; the conditions say what.
    Degraded,
    /// Deleted, waiting for the break-glass export to be acknowledged.
    Deleting,
    /// `spec.paused`: the operator changes nothing.
    Paused,
}

/// An optional part of a `SpikeCluster` whose objects the operator applied, remembered in the
/// status so that it deletes them once the spec drops the part (and only then: no list or
/// delete of a part that never ran, for which the operator may not even hold the grant).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum AppliedPart {
    /// `spec.gateway`: its Deployment, Service, NetworkPolicy and ServiceAccount.
    Gateway,
    /// `spec.clusterSpiffeIds.enabled`: SPIRE `ClusterSPIFFEID`s (cluster-scoped, found by
    /// label).
    ClusterSpiffeIds,
}
