//! Request and response bodies of the Nexus and keeper HTTP APIs (`/v1`).
//!
//! Wire names are camelCase; every request type rejects unknown fields so a typo is an error,
//! not a silently ignored option. Paths travel in the URL, so the bodies here never carry
//! routing information. See `docs/api.md` for the routes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crypto::Share;
use crate::policy::Permission;
use crate::secret::{SecretMap, SecretString};
use crate::token::{TokenAction, TokenLocation};

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
    /// Changes to the secret's scope (TTL, allowed SPIFFE IDs, allowed destinations); what it
    /// leaves out stays as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeUpdate>,
}

/// Changes to a secret's scope, carried by a put. Each field left out keeps its current
/// setting; a scope is kept across versions until a put changes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScopeUpdate {
    /// Each version expires this many seconds after it is written (a new version starts the
    /// TTL again, like a lease); `0` removes the TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// SPIFFE-ID patterns that may read the secret directly and that its tokens may be bound
    /// to (they narrow what policies grant); `[]` removes the restriction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_spiffe_ids: Option<Vec<String>>,
    /// Hosts (`host` or `host:port`) that tokens for the secret may be sent to; `[]` removes
    /// them (and then every token needs its own destinations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_destinations: Option<Vec<String>>,
}

impl ScopeUpdate {
    /// True when it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ttl_seconds.is_none()
            && self.allowed_spiffe_ids.is_none()
            && self.allowed_destinations.is_none()
    }
}

/// `POST /v1/secrets/scope/{path}`: a new version with the current version's values, which
/// stay in Nexus (the caller needs only `write`), and this scope.
///
/// It does what a put of the current values with this scope would do (the TTL starts again
/// with the new version), so a writer that may not read can still change a secret's scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateScopeRequest {
    /// Compare-and-set, as in [`PutSecretRequest::cas`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cas: Option<u64>,
    /// The scope changes; what it leaves out stays as it was.
    pub scope: ScopeUpdate,
}

/// Answer to a put (and to a scope update, [`UpdateScopeRequest`]).
///
/// What it tells depends on what the caller may otherwise see of the secret (see
/// `docs/api.md`): without `read` a put never compares content, so `unchanged` is always false,
/// and without `read` or `list` the version number is left out, so a writer learns nothing
/// about other writers' versions. A scope update compares only the scope, which metadata
/// shows: `unchanged` for a caller holding `read` or `list`, never for one holding neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutSecretResponse {
    /// The version now current; absent for a caller that holds neither `read` nor `list` on
    /// the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// True when the content equalled the current version, so no version was minted (for a
    /// put, only ever for a caller that holds `read`).
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
    /// When it expires (its write time plus the secret's TTL then), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
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
    /// The TTL each new version gets, in seconds, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// SPIFFE-ID patterns allowed to read it and to be bound by its tokens (empty: any that a
    /// policy allows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_spiffe_ids: Vec<String>,
    /// Destinations its tokens may be sent to, normalized (`host:port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_destinations: Vec<String>,
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
    /// The versions whose state changed. To a caller without `read` or `list` on the path,
    /// only those among the versions it named.
    pub changed: Vec<u64>,
    /// The version now current (0 when none is live); absent for a caller without `read` or
    /// `list` on the path, which is not shown version numbers it did not send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
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
    /// Refuse with `409 already_exists` when a policy of this name exists (even an identical
    /// one), instead of replacing it: `spike policy create` without `--replace`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_only: bool,
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

/// `GET /v1/status`: what any authenticated caller may learn about Nexus. Administrators (the
/// superuser role, or a workload granted `super` on `**`) also learn why it is sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusResponse {
    /// True once bootstrap has run; administrators only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialized: Option<bool>,
    /// True while Nexus holds no root key.
    pub sealed: bool,
    /// Why Nexus is sealed, when it is; administrators only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The caller's SPIFFE ID as Nexus sees it.
    pub caller: String,
    /// Nexus's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Re-encryption after a rotation, while Nexus is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reencryption: Option<ReencryptionStatus>,
}

/// Where the background re-encryption after a rotation stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReencryptionStatus {
    /// The id of the current data key: every new write uses it.
    pub generation: String,
    /// Older data keys still held, because stored records may still use them. 0 once
    /// re-encryption is done and they are destroyed.
    pub older_generations: u32,
    /// Records still to check in the current pass (0 when done).
    pub remaining: u64,
    /// Records moved to the current data key since it became current.
    pub done: u64,
    /// What finishing waits for, if anything besides the work itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
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
    /// The verified chain's head (its last line's seq and mac), to keep elsewhere and compare
    /// later: a log cut back to before it is then noticed even if the store is rolled back too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<crate::audit::Checkpoint>,
    /// The checkpoint stored with the data that the live log was checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<crate::audit::Checkpoint>,
    /// The gateway whose chain a copy is (verified under that gateway's key); absent for
    /// Nexus's own log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Shipped checkpoints given (`checkpoints`), each verified under the chain's key; the
    /// chain passes through every one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shipped: u64,
    /// The latest of them: the log reaches at least this far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_shipped: Option<crate::audit::Checkpoint>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Most shipped checkpoints one `POST /v1/audit/verify` takes (`spike audit verify
/// --checkpoints` sends the newest this many of its file).
pub const MAX_SHIPPED_CHECKPOINTS: usize = 512;

/// `POST /v1/audit/chain-key` (gateway identities only): the calling gateway's audit-chain
/// key, derived by Nexus for that gateway's SPIFFE ID alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditChainKeyResponse {
    /// The gateway the key is for (the caller).
    pub gateway: String,
    /// The key, 64 hex digits.
    pub key: SecretString,
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

/// Room for a share body's JSON (about 110 bytes), reserved up front so the buffer never
/// grows: growing would leave an unwiped copy of the share in the freed allocation.
const SHARE_JSON_CAPACITY: usize = 512;

impl ShareBody {
    /// The JSON wire form, in a buffer wiped when dropped: it holds the share in clear.
    pub fn to_json(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, serde_json::Error> {
        let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(SHARE_JSON_CAPACITY));
        serde_json::to_writer(&mut *buf, self)?;
        Ok(buf)
    }

    /// Parses the JSON wire form from `raw`, which is wiped afterwards, parsed or not.
    pub fn from_json(raw: Vec<u8>) -> Result<Self, serde_json::Error> {
        let raw = zeroize::Zeroizing::new(raw);
        serde_json::from_slice(&raw)
    }
}

/// Keeper `PUT /v1/witness` and `GET /v1/witness` (Nexus only): the store's freshness
/// witness, which keepers hold outside the data directory so Nexus can tell an older copy of
/// its store on the next unseal. Not secret: a generation and two hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WitnessBody {
    /// Changing write transactions since the store first kept a witness.
    pub generation: u64,
    /// Digest of the store's contents at that generation, 64 hex digits.
    #[serde(with = "hex32")]
    pub digest: [u8; 32],
    /// Nexus's tag over the two, 64 hex digits.
    #[serde(with = "hex32")]
    pub tag: [u8; 32],
}

/// 32 bytes as 64 hex digits.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out)
            .map_err(|_| serde::de::Error::custom("expected 64 hex digits"))?;
        Ok(out)
    }
}

/// Query of policy listing filters (reserved for later use).
pub type Labels = BTreeMap<String, String>;

/// Most items one `POST /v1/secrets/batch` may carry by default (Nexus's `max_batch_items`).
pub const DEFAULT_MAX_BATCH_ITEMS: usize = 500;

/// `POST /v1/secrets/batch`: write (or, with `dryRun`, compare) many secrets in one request.
///
/// Each item is authorized and audited like a single put (`write` on its path) and succeeds or
/// fails on its own; the answer lists one [`BatchItemResult`] per item, in order. Paths must be
/// distinct within one batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchPutRequest {
    /// The secrets to write.
    pub items: Vec<BatchPutItem>,
    /// Only report what would change: nothing is written and no version is minted.
    #[serde(default)]
    pub dry_run: bool,
}

/// One secret of a [`BatchPutRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchPutItem {
    /// The secret's path.
    pub path: String,
    /// The key/value pairs of the new version.
    pub data: SecretMap,
    /// Compare-and-set, as in [`PutSecretRequest::cas`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cas: Option<u64>,
    /// Scope changes, as in [`PutSecretRequest::scope`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeUpdate>,
}

/// What happened (or, in a dry run, would happen) to one item of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BatchItemStatus {
    /// The secret did not exist; version 1 was (would be) written.
    Created,
    /// The content differed from the current version; a new version was (would be) written.
    Updated,
    /// The content equals the current version; nothing was (would be) written. Only a caller
    /// holding `read` on the path ever gets it.
    Unchanged,
    /// The item was refused; see its `error`. Other items are unaffected.
    Failed,
    /// A new version was written. A caller holding neither `read` nor `list` on the path gets
    /// this instead of `created` or `updated` (and no version number): telling those apart
    /// would reveal whether a secret it may not see exists.
    Written,
}

impl BatchItemStatus {
    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::Failed => "failed",
            Self::Written => "written",
        }
    }
}

/// The outcome of one batch item. Never carries a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchItemResult {
    /// The item's path, as sent.
    pub path: String,
    /// What happened.
    pub status: BatchItemStatus,
    /// The version now current (for a dry run: the version that would be), absent on failure
    /// and for a caller that holds neither `read` nor `list` on the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Why the item failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::ApiError>,
}

/// Answer to `POST /v1/secrets/batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchPutResponse {
    /// True when nothing was written.
    pub dry_run: bool,
    /// One result per item, in request order.
    pub results: Vec<BatchItemResult>,
}

/// `POST /v1/access/explain`: which policies apply to a SPIFFE ID on a path, and why (admin).
/// The answer is a [`crate::policy::Explanation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExplainRequest {
    /// The caller to ask about.
    pub spiffe_id: String,
    /// The secret path to ask about.
    pub path: String,
}

/// Largest plaintext one cipher call takes, in bytes (1 MiB), in JSON and raw bodies alike.
/// Larger data: encrypt it locally under a key of your own and keep that key encrypted through
/// the cipher API (envelope encryption; see `docs/cipher.md`).
pub const CIPHER_MAX_PLAINTEXT: usize = 1 << 20;

/// `POST /v1/cipher/encrypt` with a JSON body. The answer is an [`EncryptResponse`].
///
/// The caller needs the `cipher` permission on `context`. The same bytes can be sent raw
/// (`Content-Type: application/octet-stream`, context in the query; see [`CipherQuery`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptRequest {
    /// The context: a secret-path-shaped name (e.g. `apps/billing/cards`) that the ciphertext
    /// is bound to and that Nexus authorizes `cipher` on.
    pub context: String,
    /// The data, standard base64; at most [`CIPHER_MAX_PLAINTEXT`] bytes once decoded.
    pub plaintext: crate::secret::SecretBytes,
    /// Also bind the ciphertext to the caller's SPIFFE ID, so only the same identity can
    /// decrypt it (with `cipher` on the same context).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bind_caller: bool,
}

/// Answer to a JSON encrypt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptResponse {
    /// The ciphertext, standard base64 of the binary format of `docs/cipher.md` (the same
    /// bytes a raw encrypt answers).
    pub ciphertext: String,
}

/// `POST /v1/cipher/decrypt` with a JSON body. The answer is a [`DecryptResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecryptRequest {
    /// The context the ciphertext was made under.
    pub context: String,
    /// The ciphertext, standard base64, as [`EncryptResponse::ciphertext`].
    pub ciphertext: String,
}

/// Answer to a JSON decrypt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecryptResponse {
    /// The data, standard base64.
    pub plaintext: crate::secret::SecretBytes,
}

/// Query of a raw (`application/octet-stream`) cipher call: the body is the plaintext
/// (encrypt) or the binary ciphertext (decrypt), and so is the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CipherQuery {
    /// The context (required for raw calls; JSON calls carry it in the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Encrypt only: bind to the caller's SPIFFE ID, as [`EncryptRequest::bind_caller`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_caller: Option<bool>,
}

/// A break-glass custodian: a name (also the share file's name) and the custodian's age X25519
/// public key (`age1…`), to which their share is encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Custodian {
    /// `[A-Za-z0-9._-]`, 1 to 64 characters, not starting with `.`; unique in one export.
    pub name: String,
    /// An age X25519 recipient, `age1…`.
    pub recipient: String,
}

/// `POST /v1/operator/recover` (role `recover`): export a new break-glass split of the root
/// key, one share per custodian, each encrypted to that custodian. Every earlier export stops
/// working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecoverRequest {
    /// The custodians, at least two; share `i` goes to the `i`-th.
    pub custodians: Vec<Custodian>,
    /// How many custodians' shares rebuild the root key (at least 2).
    pub threshold: u8,
}

/// One custodian's share file: an ASCII-armored age file only that custodian can decrypt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustodianFile {
    /// The custodian's name.
    pub name: String,
    /// The share's index.
    pub index: u8,
    /// The age file (`-----BEGIN AGE ENCRYPTED FILE-----…`); it decrypts to a
    /// [`BreakGlassShare`] in JSON.
    pub file: String,
}

/// Answer to recover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecoverResponse {
    /// The break-glass epoch of this export; files of any other epoch are refused.
    pub epoch: u32,
    /// Shares needed to restore.
    pub threshold: u8,
    /// One file per custodian, in request order.
    pub files: Vec<CustodianFile>,
}

/// The plaintext inside a custodian's file. It holds a share of the root key: it must never be
/// written anywhere unencrypted. `Debug` redacts the share.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BreakGlassShare {
    /// Format of this document (1).
    pub format: u32,
    /// The trust domain of the SPIKE installation it belongs to.
    pub trust_domain: String,
    /// The custodian it was made for.
    pub custodian: String,
    /// The break-glass epoch.
    pub epoch: u32,
    /// How many shares the export has.
    pub shares: u8,
    /// How many rebuild the root key.
    pub threshold: u8,
    /// The share.
    pub share: Share,
    /// When it was exported (RFC 3339).
    pub created_at: String,
}

/// `POST /v1/operator/restore` (role `restore`, only while Nexus is sealed): one decrypted
/// break-glass share. `Debug` redacts the share.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreRequest {
    /// The break-glass epoch the share belongs to.
    pub epoch: u32,
    /// The share.
    pub share: Share,
}

/// Answer to restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreResponse {
    /// True when this share completed the threshold and Nexus is open.
    pub opened: bool,
    /// Distinct shares received so far (of this export).
    pub received: u8,
    /// Shares needed.
    pub threshold: u8,
    /// Shares still needed (0 once open).
    pub remaining: u8,
    /// Seconds until the shares received so far are discarded unless another arrives.
    pub expires_in_secs: u64,
    /// Once open: keepers that acknowledged a fresh share.
    pub keepers_acknowledged: u8,
}

/// `POST /v1/operator/rekey` (superuser): a new keeper split, with a new root key and data key
/// as a rotation makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RekeyRequest {
    /// Number of keeper shares; must equal the number of keepers Nexus is configured with.
    pub shares: u8,
    /// How many shares rebuild the key.
    pub threshold: u8,
}

/// Answer to `POST /v1/operator/rotate` and `POST /v1/operator/rekey`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyChangeResponse {
    /// Always true: both rotation and rekey make a new root key (and a new data key, which
    /// stored records are re-encrypted under in the background; see `StatusResponse`).
    pub new_root_key: bool,
    /// The new keeper epoch.
    pub epoch: u32,
    /// Keeper shares.
    pub shares: u8,
    /// Keeper threshold.
    pub threshold: u8,
    /// Keepers that acknowledged their new share.
    pub keepers_acknowledged: u8,
    /// True once at least `threshold` keepers hold the new shares. Until then Nexus keeps the
    /// previous split too, so a restart still unseals, and finishes when keepers return.
    pub complete: bool,
    /// True when a break-glass export existed: it no longer works; run recover again.
    pub break_glass_invalidated: bool,
}

#[cfg(test)]
// Tests may unwrap: a panic is the failure report.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_share_body_is_encoded_without_growing_its_wiped_buffer() {
        let body = ShareBody {
            share: Share::new(255, &[0xab; crate::crypto::KEY_LEN]).unwrap(),
            epoch: u32::MAX,
        };
        let json = body.to_json().unwrap();
        // Still the first allocation: no unwiped copy was left behind by a reallocation.
        assert_eq!(json.capacity(), SHARE_JSON_CAPACITY);
        let back = ShareBody::from_json(json.to_vec()).unwrap();
        assert_eq!((back.share.index(), back.epoch), (255, u32::MAX));
        assert_eq!(back.to_json().unwrap(), json);
        assert!(ShareBody::from_json(b"{\"share\":1}".to_vec()).is_err());
    }

    #[test]
    fn witness_body_is_hex_and_strict() {
        let body = WitnessBody {
            generation: 9,
            digest: [0xab; 32],
            tag: [1; 32],
        };
        let json = serde_json::to_string(&body).unwrap();
        assert!(json.contains(&"ab".repeat(32)), "{json}");
        assert_eq!(serde_json::from_str::<WitnessBody>(&json).unwrap(), body);
        let short = json.replace(&"ab".repeat(32), "abab");
        assert!(serde_json::from_str::<WitnessBody>(&short).is_err());
    }
}

/// `POST /v1/tokens`: mint a reference token for one key of a secret (needs `token` on the
/// secret's path). A token is never wider than its secret's scope.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// The secret's path.
    pub secret: String,
    /// The key whose value the token stands for; without it the secret must have one key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The agent's SPIFFE ID, or a pattern of IDs (one of the secret's own patterns).
    pub spiffe_id: String,
    /// Where the token may be sent (`host` or `host:port`); empty: the secret's allowed
    /// destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
    /// How long the token lives, in seconds.
    pub ttl_seconds: u64,
    /// The one action it allows.
    pub action: TokenAction,
    /// Request paths it is limited to (segment-wise prefixes such as `/openai/v1/chat`);
    /// empty: any path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_prefixes: Vec<String>,
    /// Where the gateway may substitute it; empty: the `Authorization` header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<TokenLocation>,
    /// Most resolutions it allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u64>,
}

/// What a token is bound to: everything about it but the reference (which Nexus does not
/// keep).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenInfo {
    /// The token's id: a prefix of its keyed hash (not secret; `token inspect` and `token
    /// revoke` take it, or a prefix of it).
    pub id: String,
    /// The secret's path.
    pub secret: String,
    /// The key of the secret the token stands for.
    pub key: String,
    /// The agent ID or pattern it is bound to.
    pub spiffe_id: String,
    /// The destinations it may be sent to, normalized (`host:port`).
    pub destinations: Vec<String>,
    /// The action it allows.
    pub action: TokenAction,
    /// Request path prefixes it is limited to (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_prefixes: Vec<String>,
    /// Where it may be substituted.
    pub locations: Vec<TokenLocation>,
    /// Most resolutions, if limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u64>,
    /// Resolutions so far.
    pub uses: u64,
    /// Who minted it.
    pub created_by: String,
    /// When it was minted (RFC 3339).
    pub created_at: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// `active`, `expired`, `revoked` or `exhausted`, as of the answer.
    pub state: TokenState,
}

/// Whether a token can still resolve, as of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    /// It can resolve.
    Active,
    /// Past its TTL.
    Expired,
    /// Revoked.
    Revoked,
    /// Its maximum uses are spent.
    Exhausted,
}

impl TokenState {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Exhausted => "exhausted",
        }
    }
}

/// Answer to `POST /v1/tokens`: the token, shown this once (Nexus keeps only its hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTokenResponse {
    /// The token, `$SPIKE{ref:<32 hex>}`.
    pub token: SecretString,
    /// Its binding.
    pub binding: TokenInfo,
}

/// `GET /v1/tokens[?secret=PATH]`: the bindings of the tokens the caller may mint for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListTokensResponse {
    /// The tokens, by id.
    pub tokens: Vec<TokenInfo>,
}

/// `POST /v1/tokens/lookup`: a token given by its reference (one that leaked, say) rather
/// than its id. Nexus hashes it to find the binding and keeps nothing of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenLookupRequest {
    /// The token, `$SPIKE{ref:…}`.
    pub token: SecretString,
}

/// `POST /v1/tokens/resolve` (gateways only): the value a token stands for, if every check of
/// the request against the token's binding passes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolveRequest {
    /// The token as the agent sent it.
    pub token: SecretString,
    /// The agent's SPIFFE ID, from its connection to the gateway.
    pub agent_spiffe_id: String,
    /// The host (and port) the gateway will connect to.
    pub destination: String,
    /// The request's action, by the gateway's route rules.
    pub action: TokenAction,
    /// The request's path (without the query).
    pub path: String,
    /// Where the gateway found the token.
    pub location: TokenLocation,
}

/// Answer to a resolution. Holds the value: never log it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolveResponse {
    /// The value to substitute.
    pub value: SecretString,
    /// The token's id (for the gateway's audit line).
    pub token_id: String,
    /// When the token expires (RFC 3339); a gateway never caches past it.
    pub expires_at: String,
    /// True when the gateway may cache this answer briefly: false for tokens with a use
    /// limit, whose every use must reach Nexus.
    pub cacheable: bool,
}
