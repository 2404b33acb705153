//! `SpikePolicy`: a Nexus policy declared in Kubernetes.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use spike_core::policy::Permission;

use super::status::Condition;
use super::{CEL_ID_PATTERN, ClusterRef};

/// CEL: a path pattern (`k8s/team-a/db/*`): path segments plus `*`, `**` only alone.
const CEL_PATH_PATTERN: &str = "self.matches('^[A-Za-z0-9._*-]+(/[A-Za-z0-9._*-]+)*$') && !('/' + self + '/').contains('/./') && !('/' + self + '/').contains('/../') && !self.matches('[^/]\\\\*\\\\*|\\\\*\\\\*[^/]')";

/// A policy in Nexus: callers matching `spiffeIdPattern` get `permissions` on paths matching
/// `pathPattern`.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "spike.spiffe.io",
    version = "v1alpha1",
    kind = "SpikePolicy",
    plural = "spikepolicies",
    shortname = "spkp",
    category = "spike",
    namespaced,
    doc = "A Nexus policy: SPIFFE-ID pattern, path pattern and permissions, within the namespace's tenancy.",
    status = "SpikePolicyStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Version",
        type_ = "integer",
        json_path = ".status.storedVersion"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpikePolicySpec {
    /// The `SpikeCluster` whose Nexus holds it.
    pub cluster_ref: ClusterRef,
    /// Which callers it applies to, under this namespace's ID prefix.
    #[schemars(length(min = 10, max = 512))]
    #[x_kube(validation = Rule::new(CEL_ID_PATTERN).message("spiffeIdPattern must be spiffe://<trust-domain>/<glob>, such as spiffe://example.org/ns/team-a/**; '**' only as a whole segment"))]
    pub spiffe_id_pattern: String,
    /// Which paths it covers, under this namespace's path prefix.
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(CEL_PATH_PATTERN).message("pathPattern must be '/'-separated segments of A-Z, a-z, 0-9, '.', '_', '-' and '*', such as k8s/team-a/db/*; '**' only as a whole segment"))]
    pub path_pattern: String,
    /// What it grants; never `resolve`, which only a Nexus administrator grants.
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new("!self.exists(p, p == 'resolve')").message("permissions: 'resolve' is never granted through the operator (gateway policies are a Nexus administrator's, granted with spike policy create)"))]
    pub permissions: Vec<PermissionName>,
}

/// A permission, as `spike_core::policy::Permission` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PermissionName {
    /// Read secret values.
    Read,
    /// Write new versions.
    Write,
    /// See paths in listings.
    List,
    /// Delete, undelete and destroy versions.
    Delete,
    /// Mint reference tokens.
    Token,
    /// Resolve reference tokens: refused, gateway policies are a Nexus administrator's.
    Resolve,
    /// Use the cipher API.
    Cipher,
    /// Every permission on the matched paths (only from the SpikeCluster's own namespace).
    Super,
}

impl From<PermissionName> for Permission {
    fn from(p: PermissionName) -> Self {
        match p {
            PermissionName::Read => Self::Read,
            PermissionName::Write => Self::Write,
            PermissionName::List => Self::List,
            PermissionName::Delete => Self::Delete,
            PermissionName::Token => Self::Token,
            PermissionName::Resolve => Self::Resolve,
            PermissionName::Cipher => Self::Cipher,
            PermissionName::Super => Self::Super,
        }
    }
}

/// What the operator last wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpikePolicyStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The policy's name in Nexus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub policy_name: Option<String>,
    /// The version of the policy Nexus stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_version: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
