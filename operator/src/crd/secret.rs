//! `SpikeSecret`: a secret declared in Kubernetes and written to Nexus, with its values taken
//! from a Kubernetes Secret or generated, never written in the resource itself.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::status::Condition;
use super::{
    CEL_DNS_LABEL, CEL_DNS_SUBDOMAIN, CEL_DURATION, CEL_ID_PATTERN, CEL_PATH, ClusterRef,
    every_item,
};

/// CEL: a key of a secret's data (the same alphabet as a Kubernetes Secret's keys).
const CEL_DATA_KEY: &str = "self.matches('^[A-Za-z0-9._-]+$')";
/// CEL: a destination, `host` or `host:port` (no scheme, path or user).
const CEL_DESTINATION: &str =
    "self.matches('^([A-Za-z0-9.-]+|\\\\[[0-9A-Fa-f:.]+\\\\])(:[0-9]{1,5})?$')";
/// CEL: a request path prefix of a token, `/v1/chat`.
const CEL_REQUEST_PREFIX: &str = "self.matches('^(/[A-Za-z0-9._~-]+)+$')";

/// A secret at `path` in Nexus, kept in step with its sources.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "spike.spiffe.io",
    version = "v1alpha1",
    kind = "SpikeSecret",
    plural = "spikesecrets",
    shortname = "spks",
    category = "spike",
    namespaced,
    doc = "A secret written to Nexus from a Kubernetes Secret or generated values, with optional reference tokens for agents.",
    status = "SpikeSecretStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Path", type_ = "string", json_path = ".spec.path"),
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
pub struct SpikeSecretSpec {
    /// The `SpikeCluster` whose Nexus stores it.
    pub cluster_ref: ClusterRef,
    /// The secret's path in Nexus, under this namespace's prefix (`k8s/<namespace>/…`).
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(CEL_PATH).message("path must be '/'-separated segments of A-Z, a-z, 0-9, '.', '_' and '-', without a leading '/' or '.'/'..' segments"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("path is immutable: create a new SpikeSecret instead"))]
    pub path: String,
    /// The keys of the secret and where each value comes from: all from Kubernetes Secrets or
    /// all generated (the operator never reads values back, so it cannot keep generated values
    /// while it rewrites copied ones).
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["key".into()]))]
    #[x_kube(validation = Rule::new("self.all(d, has(d.fromSecret)) || self.all(d, has(d.generate))").message("data entries must all use fromSecret or all use generate: put generated keys in a SpikeSecret of their own"))]
    pub data: Vec<DataEntry>,
    /// What to do when Nexus already holds a version.
    #[serde(default)]
    pub write_policy: WritePolicy,
    /// What happens in Nexus when this resource is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// How long each version lives (`24h`); absent: forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 10))]
    #[x_kube(validation = Rule::new(CEL_DURATION).message("ttl must be a positive number and one unit of s, m, h or d, such as 24h"))]
    pub ttl: Option<String>,
    /// SPIFFE-ID patterns allowed to read it and to be bound by its tokens; empty: any that a
    /// policy grants. Each must lie under this namespace's ID prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 10, max = 512)))]
    #[x_kube(validation = Rule::new(every_item(CEL_ID_PATTERN)).message("allowedSpiffeIds must be SPIFFE ID patterns such as spiffe://example.org/ns/team-a/**"))]
    pub allowed_spiffe_ids: Vec<String>,
    /// Where its tokens may be sent (`host` or `host:port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 261)))]
    #[x_kube(validation = Rule::new(every_item(CEL_DESTINATION)).message("allowedDestinations must be host or host:port, such as api.example.com:443"))]
    pub allowed_destinations: Vec<String>,
    /// Reference tokens minted for named agents and kept fresh in Kubernetes Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["secretName".into()]))]
    pub tokens: Vec<TokenSpec>,
}

/// One key of the secret: its value comes from exactly one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.fromSecret) != has(self.generate)").message("each data entry needs exactly one of fromSecret and generate"))]
pub struct DataEntry {
    /// The key in Nexus.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(CEL_DATA_KEY).message("data key must be A-Z, a-z, 0-9, '.', '_' and '-'"))]
    pub key: String,
    /// Copy the value from a key of a Kubernetes Secret in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_secret: Option<SecretKeySelector>,
    /// Generate a random value once (and keep it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<Generate>,
}

/// A key of a Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeySelector {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(CEL_DNS_SUBDOMAIN).message("fromSecret.name must be a Kubernetes object name"))]
    pub name: String,
    /// The key in its data.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(CEL_DATA_KEY).message("fromSecret.key must be A-Z, a-z, 0-9, '.', '_' and '-'"))]
    pub key: String,
    /// Only this resource's own namespace is accepted; the field exists so that a reference
    /// elsewhere is refused with a clear message rather than silently resolved here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(CEL_DNS_LABEL).message("fromSecret.namespace must be a Kubernetes namespace name"))]
    pub namespace: Option<String>,
}

/// A random value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Generate {
    /// Its length in characters.
    #[serde(default = "default_length")]
    #[schemars(range(min = 16, max = 4096))]
    pub length: u32,
    /// The characters it is drawn from.
    #[serde(default)]
    pub alphabet: Alphabet,
}

fn default_length() -> u32 {
    32
}

/// The characters of a generated value.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Alphabet {
    /// `A-Z a-z 0-9`.
    #[default]
    Alphanumeric,
    /// `0-9 a-f`.
    Hex,
    /// `A-Z a-z 0-9 - _`.
    Base64Url,
    /// Printable ASCII without space.
    Printable,
}

/// What a reconcile does when Nexus already holds a version of the secret.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum WritePolicy {
    /// Leave it alone: write only when the secret does not exist.
    #[default]
    IfNotExists,
    /// Write a new version whenever the declared content differs.
    Replace,
}

/// What happens in Nexus when the resource is deleted.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum DeletionPolicy {
    /// Keep the secret.
    #[default]
    Retain,
    /// Delete it (a finalizer holds the resource until Nexus confirms).
    Delete,
}

/// A reference token for one agent, written into a Kubernetes Secret (key `token`) for the
/// agent's pod and re-minted before it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenSpec {
    /// The agent's SPIFFE ID, under this namespace's ID prefix.
    #[schemars(length(min = 10, max = 512))]
    #[x_kube(validation = Rule::new("self.matches('^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)+$')").message("agent must be a SPIFFE ID such as spiffe://example.org/ns/team-a/sa/agent"))]
    pub agent: String,
    /// The data key the token stands for; absent: the secret must have one key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(CEL_DATA_KEY).message("key must be A-Z, a-z, 0-9, '.', '_' and '-'"))]
    pub key: Option<String>,
    /// The Kubernetes Secret (in this namespace) the token is written to.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(CEL_DNS_SUBDOMAIN).message("secretName must be a Kubernetes object name"))]
    pub secret_name: String,
    /// How long each token lives; it is re-minted before then.
    #[serde(default = "default_token_ttl")]
    #[schemars(length(min = 2, max = 10))]
    #[x_kube(validation = Rule::new(CEL_DURATION).message("token ttl must be a positive number and one unit of s, m, h or d, such as 1h"))]
    pub ttl: String,
    /// The one action it allows.
    #[serde(default)]
    pub action: TokenAction,
    /// Where it may be sent; empty: the secret's allowed destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 261)))]
    #[x_kube(validation = Rule::new(every_item(CEL_DESTINATION)).message("destinations must be host or host:port, such as api.example.com:443"))]
    pub destinations: Vec<String>,
    /// Request paths it is limited to (`/v1/chat`); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 2, max = 512)))]
    #[x_kube(validation = Rule::new(every_item(CEL_REQUEST_PREFIX)).message("pathPrefixes must be request paths such as /v1/chat"))]
    pub path_prefixes: Vec<String>,
}

fn default_token_ttl() -> String {
    "1h".into()
}

/// The action of a token, as `spike_core::token::TokenAction` names it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TokenAction {
    /// Read requests.
    #[default]
    Read,
    /// Write requests.
    Write,
    /// Administrative requests.
    Admin,
}

impl From<TokenAction> for spike_core::token::TokenAction {
    fn from(a: TokenAction) -> Self {
        match a {
            TokenAction::Read => Self::Read,
            TokenAction::Write => Self::Write,
            TokenAction::Admin => Self::Admin,
        }
    }
}

/// What the operator last wrote. Never a secret value or a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpikeSecretStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The version Nexus stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_version: Option<i64>,
    /// What the last apply wrote, for the next reconcile to compare with (the operator never
    /// reads values back from Nexus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<crate::nexus::Applied>,
    /// The tokens minted (without their values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub tokens: Vec<TokenStatus>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One minted token, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenStatus {
    /// The Kubernetes Secret holding it.
    #[schemars(length(max = 253))]
    pub secret_name: String,
    /// The token's id (a prefix of its keyed hash; not the token).
    #[schemars(length(max = 64))]
    pub token_id: String,
    /// When it expires (RFC 3339).
    #[schemars(length(max = 64))]
    pub expires_at: String,
    /// When Nexus minted it (RFC 3339): with `expiresAt`, when it is re-minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub issued_at: Option<String>,
    /// A digest of the token's declaration (agent, key, TTL, action, destinations, path
    /// prefixes) when it was minted: a changed declaration mints a new token at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 71))]
    pub declaration: Option<String>,
}
