//! The custom resources of `spike.spiffe.io/v1alpha1`: [`SpikeCluster`], [`SpikeSecret`] and
//! [`SpikePolicy`], all namespaced, with a status subresource, short names and the `spike`
//! category.
//!
//! The Rust types are the source of the CRD schemas (`crdgen` writes them to `crds/` and the
//! chart). CEL rules (`x-kubernetes-validations`) catch what the API server can check on the
//! spec alone: syntax, bounds, "exactly one source". CEL cannot see `metadata.namespace`, so
//! the tenancy rules (a namespace touches only its own prefixes) are the controller's
//! ([`crate::validate`]) and Nexus's job.

// `KubeSchema` derives a private copy of each struct (to build its schema), which this lint
// reports at the original's span; the public types themselves are re-exported below.
#![allow(unreachable_pub)]
// Several `printcolumn(…)`s each have a `type_ = "string"`: clippy reads them as one attribute
// repeated.
#![allow(clippy::duplicated_attributes)]

mod cluster;
mod gateway;
pub mod manifests;
mod policy;
mod secret;
mod status;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

pub use cluster::{
    CERT_MANAGER_REFUSED, CertManagerCsi, ClusterSpiffeIds, ComputeResources, HostPathSocket,
    IdentitySpec, ImagePullPolicy, ImagesSpec, KeepersSpec, NexusSpec, ResourceList, SpikeCluster,
    SpikeClusterSpec, SpikeClusterStatus, SpireCsi, StorageSpec, TenancySpec,
};
pub use gateway::{ConfigMapKey, GatewayRoute, GatewaySpec, RouteRule};
pub use policy::{PermissionName, SpikePolicy, SpikePolicySpec, SpikePolicyStatus};
pub use secret::{
    Alphabet, DataEntry, DeletionPolicy, Generate, SecretKeySelector, SpikeSecret, SpikeSecretSpec,
    SpikeSecretStatus, TokenAction, TokenSpec, TokenStatus, WritePolicy,
};
pub use status::{AppliedPart, ClusterPhase, Condition, ConditionStatus};

/// The API group of every SPIKE resource.
pub const GROUP: &str = "spike.spiffe.io";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// CEL: a secret path (`db/prod/password`): `[A-Za-z0-9._-]` segments, no `.` or `..`.
/// The same rules as `spike_core::path`, which the controller applies again.
pub(crate) const CEL_PATH: &str = "self.matches('^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$') && !('/' + self + '/').contains('/./') && !('/' + self + '/').contains('/../')";
/// CEL: a duration of one unit, at least 1: `90s`, `15m`, `24h`, `7d`.
pub(crate) const CEL_DURATION: &str = "self.matches('^[1-9][0-9]{0,8}[smhd]$')";
/// CEL: a SPIFFE ID pattern with a literal trust domain (`spiffe://td/ns/a/**`).
pub(crate) const CEL_ID_PATTERN: &str = "self.matches('^spiffe://[a-z0-9._-]+/[A-Za-z0-9._*-]+(/[A-Za-z0-9._*-]+)*$') && !self.matches('[^/]\\\\*\\\\*|\\\\*\\\\*[^/]')";
/// CEL: a Kubernetes object name (an RFC 1123 subdomain).
pub(crate) const CEL_DNS_SUBDOMAIN: &str =
    "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')";
/// CEL: a Kubernetes namespace name (an RFC 1123 label).
pub(crate) const CEL_DNS_LABEL: &str = "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')";

/// A rule over one string applied to every item of a list of strings: `rule` names its
/// subject `self`, as a rule on a single field does.
pub(crate) fn every_item(rule: &str) -> String {
    format!("self.all(x, {})", rule.replace("self", "x"))
}

/// Which `SpikeCluster` a `SpikeSecret` or `SpikePolicy` belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterRef {
    /// The `SpikeCluster`'s name.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(CEL_DNS_SUBDOMAIN).message("clusterRef.name must be a Kubernetes object name"))]
    pub name: String,
    /// The `SpikeCluster`'s namespace; absent: this resource's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(CEL_DNS_LABEL).message("clusterRef.namespace must be a Kubernetes namespace name"))]
    pub namespace: Option<String>,
}

impl ClusterRef {
    /// The cluster's namespace, given the namespace of the resource that refers to it.
    pub fn namespace_or<'a>(&'a self, own: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(own)
    }
}
