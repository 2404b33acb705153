//! Secrets: decided from metadata and the last applied state, never from the values.
//!
//! The operator may `list` and `write` within its scope but never `read` (see Nexus's
//! `operator.path_scope`), so a reconcile cannot compare the declared values with the stored
//! ones. It compares revisions instead: the controller passes the *source revision* of the
//! declared values ([`DesiredSecret::source_revision`], an opaque string that changes whenever
//! they may have changed) and the [`Applied`] state it recorded in the resource's status after
//! the last write. From the metadata (current version and scope) and those two, a plan is one
//! of: nothing; a put of the declared values; or a scope-only update
//! (`POST /v1/secrets/scope`), for which Nexus carries the current values into the new version
//! itself. Every write carries compare-and-set on the version the metadata showed: a writer
//! that slipped in between makes Nexus answer `409 cas_mismatch`, which is
//! [`SyncError::Conflict`], and nothing is overwritten.
//!
//! | stored          | write policy  | decision                                                   |
//! |-----------------|---------------|------------------------------------------------------------|
//! | no live version | either        | put the values                                             |
//! | live            | `IfNotExists` | never the values; a scope-only update if the scope differs |
//! | live            | `Replace`     | put the values if the source revision changed or someone else wrote a version since [`Applied`]; else as `IfNotExists` |
//!
//! Generated values are never regenerated while a version is live: under `Replace` a live
//! version the operator did not write is adopted as it is, and a changed generator
//! declaration (a key added or removed, other settings) cannot be applied without reading the
//! current values, so it is refused with [`SyncError::Unsupported`] and nothing is written.

use std::collections::BTreeMap;
use std::time::Duration;

use http::Method;
use serde::{Deserialize, Serialize};
use spike_core::api::{
    PutSecretRequest, PutSecretResponse, ScopeUpdate, SecretMetadata, UpdateScopeRequest,
    VersionsRequest, VersionsResponse,
};
use spike_core::path::SecretPath;
use spike_core::secret::SecretMap;
use spike_core::token::Destination;

use super::client::NexusSync;
use super::error::SyncError;
use super::generate::Generator;
use super::{DeleteOutcome, DeletionPolicy};

/// When a secret that exists is written again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePolicy {
    /// Only when it has no live version: a value changed in Nexus (a rotation) is kept, and
    /// so are its keys. A scope change is still applied, by a scope-only update.
    IfNotExists,
    /// Whenever the declared values may differ from the current version: their source
    /// revision changed, or someone else wrote a version, since the operator's last write.
    Replace,
}

/// Where the values come from. The operator never takes literal values from a custom resource.
pub enum SecretValues {
    /// Copied from keys of a Kubernetes Secret (the controller reads them).
    Given(SecretMap),
    /// Generated, one generator per key, when the secret has no live version; never
    /// regenerated while one is live, whatever the write policy: a reconcile must not rotate a
    /// password behind its users' backs.
    Generated(BTreeMap<String, Generator>),
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // SecretMap's Debug shows key names only.
            Self::Given(m) => f.debug_tuple("Given").field(m).finish(),
            Self::Generated(g) => f.debug_tuple("Generated").field(g).finish(),
        }
    }
}

/// A secret's scope as declared; every field is set on each write, so the stored scope is
/// exactly this.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredScope {
    /// Each version's lifetime; `None`: no TTL.
    pub ttl: Option<Duration>,
    /// SPIFFE-ID patterns that may read it and be bound by its tokens (empty: no restriction).
    pub allowed_spiffe_ids: Vec<String>,
    /// Destinations (`host` or `host:port`) its tokens may be sent to.
    pub allowed_destinations: Vec<String>,
}

/// A secret as a `SpikeSecret` declares it.
#[derive(Debug)]
pub struct DesiredSecret {
    /// The path in Nexus.
    pub path: String,
    /// The values.
    pub values: SecretValues,
    /// Its scope.
    pub scope: DesiredScope,
    /// When an existing secret is written.
    pub write_policy: WritePolicy,
    /// An opaque string that changes whenever the declared values may have changed: for a
    /// Kubernetes Secret its `uid`, `resourceVersion` and the selected key names; for
    /// generated values the key names and generator settings. Never a value or a hash of one
    /// (it is stored in the resource's status).
    pub source_revision: String,
}

/// What the resource's status records after an apply, for the next reconcile to compare with
/// (the `SpikeSecret` status embeds it as `applied`, hence the schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// The version current after the apply.
    pub version: u64,
    /// The source revision whose values that version holds; absent when it holds values the
    /// operator did not write (kept under `IfNotExists`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub source_revision: Option<String>,
}

/// What applying a secret did, with the version now current (for the resource's status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOutcome {
    /// It had no live version; this one was written.
    Created {
        /// The version written.
        version: u64,
    },
    /// A new version was written (values or scope changed).
    Updated {
        /// The version written.
        version: u64,
    },
    /// It was already as declared: nothing was written.
    Unchanged {
        /// The current version.
        version: u64,
    },
}

impl SecretOutcome {
    /// The version now current.
    pub fn version(self) -> u64 {
        match self {
            Self::Created { version } | Self::Updated { version } | Self::Unchanged { version } => {
                version
            }
        }
    }
}

/// An apply's result: what it did, and what the status records for the next reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSync {
    /// What was written, if anything.
    pub outcome: SecretOutcome,
    /// The status's new `applied` state.
    pub applied: Applied,
}

/// The scope in the form Nexus stores it, for comparison with the metadata.
#[derive(Debug, PartialEq, Eq)]
struct NormalScope {
    ttl_seconds: Option<u64>,
    ids: Vec<String>,
    destinations: Vec<String>,
}

/// What a reconcile will write, if anything, and the version the write is conditional on.
/// Its Debug output shows key names, never values.
#[derive(Debug)]
pub struct SecretPlan {
    path: SecretPath,
    cas: u64,
    write: PlannedWrite,
    /// The source revision whose values the version current after the write holds.
    holds: Option<String>,
}

/// The one write of a plan.
#[derive(Debug)]
enum PlannedWrite {
    /// The secret is as declared.
    Nothing,
    /// A put of these values (wiped when dropped) with this scope.
    Values(SecretMap, NormalScope),
    /// A scope-only update: Nexus carries the current values into the new version.
    Scope(NormalScope),
}

impl SecretPlan {
    /// True when nothing will be written.
    pub fn is_unchanged(&self) -> bool {
        matches!(self.write, PlannedWrite::Nothing)
    }

    /// True when the plan writes the declared values (not only a scope change).
    pub fn writes_values(&self) -> bool {
        matches!(self.write, PlannedWrite::Values(..))
    }
}

impl NormalScope {
    fn of_desired(s: &DesiredScope) -> Result<Self, SyncError> {
        let ttl_seconds = match s.ttl {
            Some(d) if d.as_secs() == 0 || d.subsec_nanos() != 0 => {
                return Err(SyncError::BadInput(
                    "a secret's TTL is a whole number of seconds, at least 1".into(),
                ));
            }
            t => t.map(|d| d.as_secs()),
        };
        let destinations = s
            .allowed_destinations
            .iter()
            .map(|d| {
                Destination::parse(d)
                    .map(|d| d.to_string())
                    .map_err(|e| SyncError::BadInput(format!("destination `{d}`: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            ttl_seconds,
            ids: set(s.allowed_spiffe_ids.clone()),
            destinations: set(destinations),
        })
    }

    fn of_stored(m: &SecretMetadata) -> Self {
        Self {
            ttl_seconds: m.ttl_seconds.filter(|&t| t > 0),
            ids: set(m.allowed_spiffe_ids.clone()),
            destinations: set(m.allowed_destinations.clone()),
        }
    }

    fn update(&self) -> ScopeUpdate {
        ScopeUpdate {
            ttl_seconds: Some(self.ttl_seconds.unwrap_or(0)),
            allowed_spiffe_ids: Some(self.ids.clone()),
            allowed_destinations: Some(self.destinations.clone()),
        }
    }
}

fn set(mut v: Vec<String>) -> Vec<String> {
    v.sort_unstable();
    v.dedup();
    v
}

impl DesiredSecret {
    /// Checks everything that can be checked without Nexus; returns the path and the scope.
    fn validate(&self) -> Result<(SecretPath, NormalScope), SyncError> {
        let path = SecretPath::parse(&self.path)
            .map_err(|e| SyncError::BadInput(format!("secret path `{}`: {e}", self.path)))?;
        match &self.values {
            SecretValues::Given(m) if m.is_empty() => {
                return Err(SyncError::BadInput(format!(
                    "secret {path}: no values to write"
                )));
            }
            SecretValues::Generated(g) if g.is_empty() => {
                return Err(SyncError::BadInput(format!(
                    "secret {path}: no values to generate"
                )));
            }
            SecretValues::Generated(g) => {
                for (key, gen_) in g {
                    gen_.validate().map_err(|e| {
                        SyncError::BadInput(format!("secret {path}, key {key}: {e}"))
                    })?;
                }
            }
            SecretValues::Given(_) => {}
        }
        Ok((path, NormalScope::of_desired(&self.scope)?))
    }

    /// The values of a version written from this declaration (generated ones are new).
    fn values_to_write(&self) -> Result<SecretMap, SyncError> {
        match &self.values {
            SecretValues::Given(m) => Ok(m.clone()),
            SecretValues::Generated(gens) => {
                let mut next = SecretMap::new();
                for (key, gen_) in gens {
                    next.insert(key.clone(), gen_.generate()?);
                }
                Ok(next)
            }
        }
    }

    /// The plan against the stored metadata (`None`: no such secret) and the status's last
    /// applied state; see the module docs.
    fn plan(
        &self,
        meta: Option<&SecretMetadata>,
        applied: Option<&Applied>,
    ) -> Result<SecretPlan, SyncError> {
        let (path, scope) = self.validate()?;
        let live = meta.map_or(0, |m| m.current_version);
        let revision = Some(self.source_revision.clone());
        if live == 0 {
            return Ok(SecretPlan {
                path,
                cas: 0,
                write: PlannedWrite::Values(self.values_to_write()?, scope),
                holds: revision,
            });
        }
        // The status describes the current version only if no one wrote another since.
        let ours = applied.filter(|a| a.version == live);
        let ours_holds = ours.and_then(|a| a.source_revision.clone());
        let in_sync = ours_holds == revision;
        let (rewrite, holds) = match (self.write_policy, &self.values) {
            (WritePolicy::IfNotExists, _) => (false, ours_holds),
            (WritePolicy::Replace, SecretValues::Given(_)) => (!in_sync, revision),
            (WritePolicy::Replace, SecretValues::Generated(_)) => {
                if ours_holds.is_some() && !in_sync {
                    return Err(SyncError::Unsupported(format!(
                        "secret {path}: its generated keys or their settings changed since version {live} was written, \
                         and the operator can neither add nor remove a key without reading the secret (which it may \
                         not), nor regenerate a live value; nothing was written. Restore the previous declaration, or \
                         delete the secret's versions in Nexus to have it generated anew"
                    )));
                }
                // In sync, or a version the operator did not write: adopted as it is.
                (false, revision)
            }
        };
        let stored_scope = meta.map(NormalScope::of_stored);
        let write = if rewrite {
            PlannedWrite::Values(self.values_to_write()?, scope)
        } else if stored_scope.as_ref() == Some(&scope) {
            PlannedWrite::Nothing
        } else {
            PlannedWrite::Scope(scope)
        };
        Ok(SecretPlan {
            path,
            cas: live,
            write,
            holds,
        })
    }
}

impl NexusSync {
    /// Makes the secret in Nexus what `desired` declares, given the `applied` state the
    /// resource's status recorded after the last apply (`None` before the first); see the
    /// module docs. The operator needs `list` and `write` on the path, never `read`.
    pub async fn apply_secret(
        &self,
        desired: &DesiredSecret,
        applied: Option<&Applied>,
    ) -> Result<SecretSync, SyncError> {
        let plan = self.plan_secret(desired, applied).await?;
        self.write_plan(plan).await
    }

    /// The planning half of [`NexusSync::apply_secret`]: reads the metadata (never values)
    /// and decides what to write, if anything, and the version the write is conditional on.
    /// Nothing is written.
    pub async fn plan_secret(
        &self,
        desired: &DesiredSecret,
        applied: Option<&Applied>,
    ) -> Result<SecretPlan, SyncError> {
        // Refuse a bad declaration before anything is sent.
        let (path, _) = desired.validate()?;
        let meta: Option<SecretMetadata> = self
            .get_optional(
                &format!("/v1/secrets/metadata/{path}"),
                &format!("secret {path}"),
            )
            .await?;
        desired.plan(meta.as_ref(), applied)
    }

    /// The write half of [`NexusSync::apply_secret`]: writes the planned version only if the
    /// version planned against is still current (`cas`), else [`SyncError::Conflict`].
    pub async fn write_plan(&self, plan: SecretPlan) -> Result<SecretSync, SyncError> {
        let what = format!("secret {}", plan.path);
        let resp: PutSecretResponse = match plan.write {
            PlannedWrite::Nothing => {
                return Ok(SecretSync {
                    outcome: SecretOutcome::Unchanged { version: plan.cas },
                    applied: Applied {
                        version: plan.cas,
                        source_revision: plan.holds,
                    },
                });
            }
            PlannedWrite::Values(data, scope) => {
                let body = PutSecretRequest {
                    data,
                    cas: Some(plan.cas),
                    scope: Some(scope.update()),
                };
                let route = format!("/v1/secrets/data/{}", plan.path);
                self.call(Method::PUT, &route, Some(&body), &what).await?
            }
            PlannedWrite::Scope(scope) => {
                let body = UpdateScopeRequest {
                    cas: Some(plan.cas),
                    scope: scope.update(),
                };
                let route = format!("/v1/secrets/scope/{}", plan.path);
                self.call(Method::POST, &route, Some(&body), &what).await?
            }
        };
        let version = resp.version.ok_or_else(|| {
            SyncError::Unexpected(format!(
                "{what}: Nexus did not say which version it wrote (the operator needs `list` on the path)"
            ))
        })?;
        let outcome = if resp.unchanged {
            SecretOutcome::Unchanged { version }
        } else if plan.cas == 0 {
            SecretOutcome::Created { version }
        } else {
            SecretOutcome::Updated { version }
        };
        Ok(SecretSync {
            outcome,
            applied: Applied {
                version,
                source_revision: plan.holds,
            },
        })
    }

    /// Soft-deletes every version still live under [`DeletionPolicy::Delete`] (an
    /// administrator can undelete them); `Retain` touches nothing.
    pub async fn delete_secret(
        &self,
        path: &str,
        policy: DeletionPolicy,
    ) -> Result<DeleteOutcome, SyncError> {
        let path = SecretPath::parse(path)
            .map_err(|e| SyncError::BadInput(format!("secret path `{path}`: {e}")))?;
        if policy == DeletionPolicy::Retain {
            return Ok(DeleteOutcome::Retained);
        }
        let what = format!("secret {path}");
        let Some(meta) = self
            .get_optional::<SecretMetadata>(&format!("/v1/secrets/metadata/{path}"), &what)
            .await?
        else {
            return Ok(DeleteOutcome::AlreadyGone);
        };
        let versions: Vec<u64> = meta
            .versions
            .iter()
            .filter(|v| v.deleted_at.is_none() && !v.destroyed)
            .map(|v| v.version)
            .collect();
        if versions.is_empty() {
            return Ok(DeleteOutcome::AlreadyGone);
        }
        let _: VersionsResponse = self
            .call(
                Method::POST,
                &format!("/v1/secrets/delete/{path}"),
                Some(&VersionsRequest { versions }),
                &what,
            )
            .await?;
        Ok(DeleteOutcome::Deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nexus::Alphabet;

    fn map(pairs: &[(&str, &str)]) -> SecretMap {
        let mut m = SecretMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.to_string());
        }
        m
    }

    fn desired(values: SecretValues) -> DesiredSecret {
        DesiredSecret {
            path: "k8s/web/db".into(),
            values,
            scope: DesiredScope::default(),
            write_policy: WritePolicy::Replace,
            source_revision: "uid-1/rv-1/pass".into(),
        }
    }

    /// Metadata of a secret whose current version is `current` (0: none live), unscoped.
    fn meta(current: u64) -> SecretMetadata {
        SecretMetadata {
            path: "k8s/web/db".into(),
            current_version: current,
            latest_version: current.max(1),
            max_versions: 10,
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
            versions: Vec::new(),
            ttl_seconds: None,
            allowed_spiffe_ids: Vec::new(),
            allowed_destinations: Vec::new(),
        }
    }

    fn applied(version: u64, revision: Option<&str>) -> Applied {
        Applied {
            version,
            source_revision: revision.map(str::to_owned),
        }
    }

    /// What a plan does, in a word.
    fn kind(p: &SecretPlan) -> &'static str {
        match p.write {
            PlannedWrite::Nothing => "nothing",
            PlannedWrite::Values(..) => "values",
            PlannedWrite::Scope(_) => "scope",
        }
    }

    fn gens(keys: &[&str]) -> SecretValues {
        SecretValues::Generated(
            keys.iter()
                .map(|k| {
                    (
                        (*k).to_owned(),
                        Generator {
                            length: 16,
                            alphabet: Alphabet::alphanumeric(),
                        },
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn no_live_version_writes_the_values_under_either_policy() {
        for policy in [WritePolicy::Replace, WritePolicy::IfNotExists] {
            for stored in [None, Some(meta(0))] {
                let mut d = desired(SecretValues::Given(map(&[("pass", "one")])));
                d.write_policy = policy;
                let p = d
                    .plan(stored.as_ref(), Some(&applied(3, Some("old"))))
                    .unwrap();
                assert_eq!((kind(&p), p.cas), ("values", 0), "{policy:?}");
                assert_eq!(p.holds.as_deref(), Some("uid-1/rv-1/pass"));
            }
        }
        let p = desired(gens(&["a", "b"])).plan(None, None).unwrap();
        let PlannedWrite::Values(values, _) = &p.write else {
            panic!("{p:?}")
        };
        assert_eq!(values.len(), 2);
        assert_eq!(values.get("a").unwrap().expose_secret().len(), 16);
    }

    #[test]
    fn replace_writes_only_when_the_source_or_the_version_moved() {
        let d = desired(SecretValues::Given(map(&[("pass", "one")])));
        let rev = Some("uid-1/rv-1/pass");
        // As applied: nothing.
        let p = d.plan(Some(&meta(4)), Some(&applied(4, rev))).unwrap();
        assert_eq!((kind(&p), p.cas), ("nothing", 4));
        // The source changed; someone else wrote version 5; no status; values not ours.
        for last in [
            applied(4, Some("uid-1/rv-0/pass")),
            applied(4, None),
            applied(3, rev),
        ] {
            let p = d.plan(Some(&meta(4)), Some(&last)).unwrap();
            assert_eq!((kind(&p), p.cas), ("values", 4), "{last:?}");
            assert_eq!(p.holds.as_deref(), rev);
        }
        let p = d.plan(Some(&meta(4)), None).unwrap();
        assert_eq!(kind(&p), "values");
        // As applied, but the scope differs: a scope-only update.
        let mut scoped = desired(SecretValues::Given(map(&[("pass", "one")])));
        scoped.scope.ttl = Some(Duration::from_secs(60));
        let p = scoped.plan(Some(&meta(4)), Some(&applied(4, rev))).unwrap();
        assert_eq!((kind(&p), p.cas), ("scope", 4));
    }

    #[test]
    fn if_not_exists_never_writes_values_over_a_live_version() {
        let mut d = desired(SecretValues::Given(map(&[("pass", "one")])));
        d.write_policy = WritePolicy::IfNotExists;
        for last in [None, Some(applied(4, Some("old"))), Some(applied(2, None))] {
            let p = d.plan(Some(&meta(4)), last.as_ref()).unwrap();
            assert_eq!(kind(&p), "nothing", "{last:?}");
        }
        // What the status says the version holds is kept as it is: a later switch to
        // Replace then writes the declared values.
        let p = d
            .plan(Some(&meta(4)), Some(&applied(4, Some("old"))))
            .unwrap();
        assert_eq!(p.holds.as_deref(), Some("old"));
        let p = d
            .plan(Some(&meta(4)), Some(&applied(2, Some("old"))))
            .unwrap();
        assert_eq!(
            p.holds, None,
            "a version someone else wrote holds no source of ours"
        );
        d.scope.allowed_destinations = vec!["api.example.com".into()];
        let p = d.plan(Some(&meta(4)), None).unwrap();
        assert_eq!((kind(&p), p.cas), ("scope", 4));
    }

    #[test]
    fn generated_values_are_never_regenerated_while_live() {
        let d = desired(gens(&["a", "b"]));
        let rev = Some("uid-1/rv-1/pass");
        // In sync, written by someone else, or never recorded: adopted, nothing written.
        for last in [
            Some(applied(4, rev)),
            Some(applied(3, rev)),
            Some(applied(4, None)),
            None,
        ] {
            let p = d.plan(Some(&meta(4)), last.as_ref()).unwrap();
            assert_eq!(kind(&p), "nothing", "{last:?}");
            assert_eq!(p.holds.as_deref(), rev);
        }
        // The declaration changed since the operator wrote the version: refused, nothing
        // planned (adding a key would need the other values).
        let e = d
            .plan(Some(&meta(4)), Some(&applied(4, Some("a,b,c"))))
            .unwrap_err();
        assert!(matches!(e, SyncError::Unsupported(_)), "{e:?}");
        assert!(!e.is_transient());
        assert!(e.to_string().contains("k8s/web/db"), "{e}");
        // A scope change still applies, without the values.
        let mut scoped = desired(gens(&["a", "b"]));
        scoped.scope.ttl = Some(Duration::from_secs(60));
        let p = scoped.plan(Some(&meta(4)), None).unwrap();
        assert_eq!(kind(&p), "scope");
    }

    #[test]
    fn scopes_compare_in_the_form_nexus_stores() {
        let s = DesiredScope {
            ttl: Some(Duration::from_secs(60)),
            allowed_spiffe_ids: vec![
                "spiffe://td/ns/web/**".into(),
                "spiffe://td/ns/web/**".into(),
            ],
            allowed_destinations: vec!["API.example.com".into()],
        };
        let n = NormalScope::of_desired(&s).unwrap();
        assert_eq!(n.ids, vec!["spiffe://td/ns/web/**".to_owned()]);
        assert_eq!(n.destinations, vec!["api.example.com:443".to_owned()]);
        let u = n.update();
        assert_eq!(u.ttl_seconds, Some(60));
        assert_eq!(
            NormalScope::of_desired(&DesiredScope::default())
                .unwrap()
                .update()
                .ttl_seconds,
            Some(0)
        );
    }

    #[test]
    fn bad_secrets_are_refused_before_anything_is_sent() {
        let mut d = desired(SecretValues::Given(map(&[("k", "v")])));
        d.path = "../etc".into();
        assert!(matches!(d.validate(), Err(SyncError::BadInput(_))));
        let d = desired(SecretValues::Given(SecretMap::new()));
        assert!(d.validate().unwrap_err().to_string().contains("no values"));
        let mut d = desired(gens(&["k"]));
        d.scope.ttl = Some(Duration::from_millis(1500));
        assert!(
            d.validate()
                .unwrap_err()
                .to_string()
                .contains("whole number")
        );
        let mut d = desired(gens(&["k"]));
        d.scope.allowed_destinations = vec!["http://x/y".into()];
        assert!(
            d.validate()
                .unwrap_err()
                .to_string()
                .contains("destination")
        );
    }

    #[test]
    fn applied_is_stored_in_camel_case_without_an_unknown_revision() {
        let a = applied(3, Some("uid-1/rv-1/pass"));
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"version": 3, "sourceRevision": "uid-1/rv-1/pass"})
        );
        assert_eq!(serde_json::from_value::<Applied>(json).unwrap(), a);
        let kept = serde_json::to_value(applied(3, None)).unwrap();
        assert_eq!(kept, serde_json::json!({"version": 3}));
    }

    #[test]
    fn debug_output_shows_no_value() {
        let d = desired(SecretValues::Given(map(&[("pass", "hunter2-very-secret")])));
        let text = format!("{d:?}");
        assert!(text.contains("pass"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let plan = d.plan(None, None).unwrap();
        let text = format!("{plan:?}");
        assert!(text.contains("pass") && !text.contains("hunter2"), "{text}");
    }
}
