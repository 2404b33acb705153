//! Request and response bodies of the Nexus and keeper HTTP APIs (`/v1`).
//!
//! Wire names are camelCase; every request type rejects unknown fields so a typo is an error,
//! not a silently ignored option. Paths travel in the URL, so the bodies here never carry
//! routing information. See `docs/api.md` for the routes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crypto::Share;
use crate::policy::Permission;
use crate::secret::SecretMap;

/// Path prefix of every versioned route.
pub const V1: &str = "/v1";

/// `PUT /v1/secrets/data/{path}`: write a new version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutSecretRequest {
    /// The key/value pairs of the new version.
    pub data: SecretMap,
    /// Compare-and-set: the write succeeds only if the current version is this one
    /// (`0` = the secret must not exist or have no live version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cas: Option<u64>,
}

/// Answer to a put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutSecretResponse {
    /// The version now current.
    pub version: u64,
    /// True when the content equalled the current version, so no version was minted.
    pub unchanged: bool,
}

/// `GET /v1/secrets/data/{path}[?version=N]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetSecretResponse {
    /// The secret's path.
    pub path: String,
    /// The version returned.
    pub version: u64,
    /// The key/value pairs.
    pub data: SecretMap,
    /// When this version was written (RFC 3339).
    pub created_at: String,
}

/// Query of `GET /v1/secrets/data/{path}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    /// A specific version; absent means the current one.
    pub version: Option<u64>,
}

/// Query of `GET /v1/secrets/list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only paths equal to or under this prefix.
    pub prefix: Option<String>,
    /// Continue after this path (the `next` of the previous page).
    pub after: Option<String>,
    /// Page size; the server caps it.
    pub limit: Option<usize>,
}

/// One entry of a secret listing: names and metadata only, never values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretListEntry {
    /// The secret's path.
    pub path: String,
    /// Its current version (0 when every version is deleted or destroyed).
    pub current_version: u64,
    /// When it was last written (RFC 3339).
    pub updated_at: String,
}

/// A page of a secret listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListSecretsResponse {
    /// The secrets on this page that the caller may list.
    pub secrets: Vec<SecretListEntry>,
    /// Pass as `after` to fetch the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The state of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionMetadata {
    /// The version number.
    pub version: u64,
    /// When it was written (RFC 3339).
    pub created_at: String,
    /// When it was soft-deleted, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// True once destroyed: the value is gone for good.
    #[serde(default)]
    pub destroyed: bool,
}

/// `GET /v1/secrets/metadata/{path}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretMetadata {
    /// The secret's path.
    pub path: String,
    /// The current version (0 when none is live).
    pub current_version: u64,
    /// The highest version ever written; new versions are numbered above it.
    pub latest_version: u64,
    /// How many versions are kept before the oldest are dropped.
    pub max_versions: u32,
    /// When the secret was first written (RFC 3339).
    pub created_at: String,
    /// When it was last changed (RFC 3339).
    pub updated_at: String,
    /// The kept versions, oldest first.
    pub versions: Vec<VersionMetadata>,
}

/// Body of `POST /v1/secrets/delete/{path}`, `POST /v1/secrets/undelete/{path}` and
/// `POST /v1/secrets/destroy/{path}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionsRequest {
    /// The versions to act on; empty means the current version (for undelete: the newest
    /// deleted one).
    #[serde(default)]
    pub versions: Vec<u64>,
}

/// Answer to delete, undelete and destroy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionsResponse {
    /// The versions whose state changed.
    pub changed: Vec<u64>,
    /// The version now current (0 when none is live).
    pub current_version: u64,
}

/// `PUT /v1/policies/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutPolicyRequest {
    /// Which callers the policy applies to, e.g. `spiffe://spike.dev/ns/web/**`.
    pub spiffe_id_pattern: String,
    /// Which secret paths it covers, e.g. `apps/web/**`.
    pub path_pattern: String,
    /// What it allows.
    pub permissions: Vec<Permission>,
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyResponse {
    /// The policy's name.
    pub name: String,
    /// Which callers it applies to.
    pub spiffe_id_pattern: String,
    /// Which paths it covers.
    pub path_pattern: String,
    /// What it allows.
    pub permissions: Vec<Permission>,
    /// When it was first written (RFC 3339).
    pub created_at: String,
    /// When it was last changed (RFC 3339).
    pub updated_at: String,
}

/// Answer to a policy put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutPolicyResponse {
    /// True when the policy was new.
    pub created: bool,
    /// True when an identical policy already existed, so nothing changed.
    pub unchanged: bool,
}

/// `GET /v1/policies`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListPoliciesResponse {
    /// Every policy, by name.
    pub policies: Vec<PolicyResponse>,
}

/// `POST /v1/bootstrap/init`: create the root key once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitRequest {
    /// Number of keeper shares; must equal the number of keepers Nexus is configured with.
    pub shares: u8,
    /// How many shares rebuild the key.
    pub threshold: u8,
}

/// Answer to init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitResponse {
    /// True when this call initialized the system; false when it already was.
    pub initialized: bool,
    /// Keepers that acknowledged their share during this call.
    pub keepers_acknowledged: u8,
}

/// Answer to `POST /v1/bootstrap/verify`: Nexus rebuilt the key from the keepers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyResponse {
    /// True when `threshold` keeper shares rebuild the key Nexus holds.
    pub verified: bool,
    /// Keepers that currently hold a valid share.
    pub keepers_with_share: u8,
    /// The threshold.
    pub threshold: u8,
}

/// `GET /v1/status`: what any authenticated caller may learn about Nexus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusResponse {
    /// True once bootstrap has run.
    pub initialized: bool,
    /// True while Nexus holds no root key.
    pub sealed: bool,
    /// Why Nexus is sealed, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The caller's SPIFFE ID as Nexus sees it.
    pub caller: String,
}

/// `POST /v1/audit/verify`: Nexus checks its own audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditVerifyResponse {
    /// True when the whole chain verifies up to the last checkpoint.
    pub ok: bool,
    /// Lines checked.
    pub lines: u64,
    /// The first bad line (1-based), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad_line: Option<u64>,
    /// Why it is bad.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Keeper `PUT /v1/share` (Nexus only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShareBody {
    /// The share; its index must be the keeper's own.
    pub share: Share,
    /// The split's epoch, so a share from an old split is recognised.
    pub epoch: u32,
}

/// Query of policy listing filters (reserved for later use).
pub type Labels = BTreeMap<String, String>;
