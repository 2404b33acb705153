//! Secrets: compare-and-set against the version read, and no write when nothing changes.
//!
//! A reconcile reads the metadata (the current version and the scope), reads the current
//! values only when the comparison needs them (`Replace`, or a scope change that must carry
//! the values into a new version), and writes with `cas` set to the version it read: a writer
//! that slipped in between makes Nexus answer `409 cas_mismatch`, which is
//! [`SyncError::Conflict`], and nothing is overwritten.

use std::collections::BTreeMap;
use std::time::Duration;

use http::Method;
use spike_core::api::{
    GetSecretResponse, PutSecretRequest, PutSecretResponse, ScopeUpdate, SecretMetadata,
    VersionsRequest, VersionsResponse,
};
use spike_core::error::ErrorCode;
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
    /// so are its keys (a generated key added to the spec later is not generated). A scope
    /// change is still applied, by a new version carrying the current values.
    IfNotExists,
    /// Whenever the declared values differ from the current version.
    Replace,
}

/// Where the values come from. The operator never takes literal values from a custom resource.
pub enum SecretValues {
    /// Copied from keys of a Kubernetes Secret (the controller reads them).
    Given(SecretMap),
    /// Generated, one generator per key. A value is generated once, when its key is first
    /// written, and never regenerated while it can be read, whatever the write policy: a
    /// reconcile must not rotate a password behind its users' backs.
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

/// The scope in the form Nexus stores it, for comparison with the metadata.
#[derive(Debug, PartialEq, Eq)]
struct NormalScope {
    ttl_seconds: Option<u64>,
    ids: Vec<String>,
    destinations: Vec<String>,
}

/// What a reconcile will write: the values (wiped when dropped; Debug shows key names only)
/// and scope of the next version, or nothing, and the version it is conditional on.
#[derive(Debug)]
pub struct SecretPlan {
    path: SecretPath,
    cas: u64,
    write: Option<(SecretMap, NormalScope)>,
}

impl SecretPlan {
    /// True when nothing will be written.
    pub fn is_unchanged(&self) -> bool {
        self.write.is_none()
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

    /// The values to write, given what is stored now (`None`: nothing readable), or `None` when
    /// the stored values are already as declared.
    fn next_values(&self, stored: Option<&SecretMap>) -> Result<Option<SecretMap>, SyncError> {
        match (&self.values, stored) {
            (SecretValues::Given(want), Some(have)) if want == have => Ok(None),
            (SecretValues::Given(want), _) => Ok(Some(want.clone())),
            (SecretValues::Generated(gens), have) => {
                let keep = |k: &str| have.and_then(|h| h.get(k));
                let same_keys = have.is_some_and(|h| {
                    h.len() == gens.len() && gens.keys().all(|k| h.contains_key(k))
                });
                if same_keys {
                    return Ok(None);
                }
                let mut next = SecretMap::new();
                for (key, gen_) in gens {
                    let value = match keep(key) {
                        Some(v) => v.clone(),
                        None => gen_.generate()?,
                    };
                    next.insert(key.clone(), value);
                }
                Ok(Some(next))
            }
        }
    }
}

impl NexusSync {
    /// Makes the secret in Nexus what `desired` declares, with compare-and-set on the version
    /// read; see the module docs. The operator must hold `read` and `write` on the path.
    pub async fn apply_secret(&self, desired: &DesiredSecret) -> Result<SecretOutcome, SyncError> {
        let plan = self.plan_secret(desired).await?;
        self.write_plan(plan).await
    }

    /// The read half of [`NexusSync::apply_secret`]: what to write, if anything, and the
    /// version the write is conditional on. Nothing is written.
    pub async fn plan_secret(&self, desired: &DesiredSecret) -> Result<SecretPlan, SyncError> {
        let (path, scope) = desired.validate()?;
        let what = format!("secret {path}");
        let meta: Option<SecretMetadata> = self
            .get_optional(&format!("/v1/secrets/metadata/{path}"), &what)
            .await?;
        let live = meta.as_ref().map_or(0, |m| m.current_version);
        let scope_same = meta
            .as_ref()
            .is_some_and(|m| NormalScope::of_stored(m) == scope);
        let data = if live == 0 {
            desired.next_values(None)?
        } else {
            match desired.write_policy {
                WritePolicy::IfNotExists if scope_same => None,
                // The scope travels with a put: the current values go into the new version as
                // they are.
                WritePolicy::IfNotExists => Some(
                    self.read_version(&path, live, &what)
                        .await?
                        .ok_or_else(|| SyncError::Refused {
                            code: ErrorCode::Expired,
                            message: format!(
                                "{what}: its scope cannot change while its current version cannot be read"
                            ),
                        })?,
                ),
                WritePolicy::Replace => {
                    let stored = self.read_version(&path, live, &what).await?;
                    match desired.next_values(stored.as_ref())? {
                        Some(next) => Some(next),
                        None if scope_same => None,
                        None => stored,
                    }
                }
            }
        };
        Ok(SecretPlan {
            path,
            cas: live,
            write: data.map(|d| (d, scope)),
        })
    }

    /// The write half of [`NexusSync::apply_secret`]: writes the planned version only if the
    /// version read is still current (`cas`), else [`SyncError::Conflict`].
    pub async fn write_plan(&self, plan: SecretPlan) -> Result<SecretOutcome, SyncError> {
        let Some((data, scope)) = plan.write else {
            return Ok(SecretOutcome::Unchanged { version: plan.cas });
        };
        let what = format!("secret {}", plan.path);
        let body = PutSecretRequest {
            data,
            cas: Some(plan.cas),
            scope: Some(scope.update()),
        };
        let resp: PutSecretResponse = self
            .call(
                Method::PUT,
                &format!("/v1/secrets/data/{}", plan.path),
                Some(&body),
                &what,
            )
            .await?;
        let version = resp.version.ok_or_else(|| {
            SyncError::Unexpected(format!(
                "{what}: Nexus did not say which version it wrote (the operator needs `read` or `list` on the path)"
            ))
        })?;
        Ok(if plan.cas == 0 {
            SecretOutcome::Created { version }
        } else {
            SecretOutcome::Updated { version }
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

    /// The values of `version`, or `None` when it cannot be read any more (expired, deleted or
    /// destroyed since the metadata was read), which counts as "differs".
    async fn read_version(
        &self,
        path: &SecretPath,
        version: u64,
        what: &str,
    ) -> Result<Option<SecretMap>, SyncError> {
        let route = format!("/v1/secrets/data/{path}?version={version}");
        match self
            .call_raw::<GetSecretResponse>(Method::GET, &route, None::<&()>)
            .await
        {
            Ok(r) => Ok(Some(r.data)),
            Err(spike::client::CliError::Api {
                code: ErrorCode::Expired | ErrorCode::Deleted | ErrorCode::Destroyed,
                ..
            }) => Ok(None),
            Err(e) => Err(SyncError::from_client(e, what)),
        }
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
    fn given_values_are_written_only_when_they_differ() {
        let d = desired(SecretValues::Given(map(&[("pass", "one")])));
        assert!(
            d.next_values(Some(&map(&[("pass", "one")])))
                .unwrap()
                .is_none()
        );
        let next = d
            .next_values(Some(&map(&[("pass", "two")])))
            .unwrap()
            .unwrap();
        assert_eq!(next, map(&[("pass", "one")]));
        assert!(d.next_values(None).unwrap().is_some());
    }

    #[test]
    fn generated_values_are_kept_and_only_missing_keys_are_generated() {
        let d = desired(gens(&["a", "b"]));
        let stored = map(&[("a", "kept-value-0001"), ("b", "kept-value-0002")]);
        assert!(d.next_values(Some(&stored)).unwrap().is_none());
        let next = d
            .next_values(Some(&map(&[("a", "kept-value-0001"), ("old", "x")])))
            .unwrap()
            .unwrap();
        assert_eq!(next.get("a").unwrap().expose_secret(), "kept-value-0001");
        assert_eq!(next.get("b").unwrap().expose_secret().len(), 16);
        assert!(!next.contains_key("old"));
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
    fn debug_output_shows_no_value() {
        let d = desired(SecretValues::Given(map(&[("pass", "hunter2-very-secret")])));
        let text = format!("{d:?}");
        assert!(text.contains("pass"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
