//! The `SpikeSecret` controller: each resource becomes one secret in its cluster's Nexus, with
//! its values copied from keys of Kubernetes Secrets in its namespace or generated once, and
//! optionally reference tokens for named agents, kept fresh in Kubernetes Secrets.
//!
//! The pipeline of a reconcile: fetch the `SpikeCluster` and every referenced Kubernetes
//! Secret → validate (pure: the cluster, the namespace's tenancy) → build the desired secret
//! (pure: [`desired_secret`], with its [`source_revision`]) → apply to Nexus (metadata only,
//! compare-and-set; never a read of values) → tokens (mint, write, revoke) → status (only when
//! it changed).
//!
//! - **Finalizer** only where Nexus needs cleaning up: `deletionPolicy: Delete` (its versions
//!   are soft-deleted) or tokens to revoke; added and removed as the spec changes.
//! - **Sources**: only Secrets in the resource's own namespace are ever fetched (validation
//!   refuses any other, and the fetch never takes a namespace from the spec). A missing Secret
//!   or key is `Ready=False` with reason `SourceMissing`, naming both, and a modest requeue (the
//!   Secret watch usually brings the fix sooner).
//! - **Values** go from the fetched Secret into a zeroizing [`SecretMap`] and to Nexus; none
//!   appears in a status, event, log, metric or error.
//! - **Paused cluster**, **refusals** and **Nexus unreachable** as the `SpikePolicy`
//!   controller handles them (`Paused`; `Degraded` and a long requeue; `Degraded` and backoff).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use spike_core::error::ErrorCode;
use spike_core::secret::{SecretBytes, SecretMap, SecretString};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroize;

use super::conditions::{self, DEGRADED, Outcome, READY, bounded};
use super::context::{Context, MANAGER};
use super::error::Error;
use super::finalizers;
use crate::build::meta::{
    APP_NAME, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, LABEL_PART_OF,
    MANAGED_BY, PART_OF,
};
use crate::crd::{
    Alphabet as CrdAlphabet, DeletionPolicy as CrdDeletionPolicy, SpikeCluster, SpikeSecret,
    SpikeSecretStatus, TokenStatus, WritePolicy as CrdWritePolicy,
};
use crate::metrics::ControllerName;
use crate::nexus::{
    Alphabet, DeleteOutcome, DeletionPolicy, DesiredScope, DesiredSecret, DesiredToken, Generator,
    NexusSync, SecretOutcome, SecretSync, SecretValues, SyncError, WritePolicy, needs_remint,
};
use crate::validate::{
    InvalidSpec, ValidData, ValidSecret, ValidToken, validate_cluster, validate_secret,
};

/// The finalizer that keeps a deleted `SpikeSecret` until Nexus is cleaned up (the one the
/// `SpikePolicy` controller uses).
pub const FINALIZER: &str = super::policy::FINALIZER;

/// When a synced secret's metadata is read from Nexus again (a version written there by
/// someone else is then noticed).
pub const RESYNC: Duration = Duration::from_secs(5 * 60);
/// When a refused resource is looked at again without any change (changes come sooner).
pub const REFUSED_REQUEUE: Duration = Duration::from_secs(60 * 60);
/// When a resource waiting for a missing source Secret or key is looked at again (the
/// Secret watch usually brings the change first).
pub const SOURCE_REQUEUE: Duration = Duration::from_secs(2 * 60);

/// The reason of a condition that waits for a missing source Secret or key.
pub const SOURCE_MISSING: &str = "SourceMissing";
/// The key of a token Secret's data that holds the token.
pub const TOKEN_KEY: &str = "token";
/// `app.kubernetes.io/component` of a token Secret.
pub const TOKEN_COMPONENT: &str = "reference-token";

/// Runs the `SpikeSecret` controller until `shutdown` completes, also watching
/// `SpikeCluster`s (an unpause reconciles the secrets on the cluster) and the metadata of
/// Kubernetes Secrets (a change of a source, or of a token Secret, reconciles the
/// `SpikeSecret`s that use it; only names are needed, so no value is held by the watch).
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    // `controller::run` has checked that the CRD is installed.
    let secrets = Api::<SpikeSecret>::all(ctx.client.clone());
    let clusters = Api::<SpikeCluster>::all(ctx.client.clone());
    // `Api<PartialObjectMeta<_>>` lists and watches metadata only: no value crosses the wire.
    let sources = watcher(
        Api::<PartialObjectMeta<Secret>>::all(ctx.client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .touched_objects();
    let controller = Controller::new(secrets, watcher::Config::default().any_semantic());
    let store = controller.store();
    let by_cluster = store.clone();
    controller
        .watches(
            clusters,
            watcher::Config::default().any_semantic(),
            move |cluster| secrets_of(&by_cluster.state(), &cluster),
        )
        .watches_stream(sources, move |meta| users_of(&store.state(), &meta))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(%obj, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    Ok(())
}

/// The `SpikeSecret`s among `all` whose `clusterRef` names `cluster`.
pub fn secrets_of(all: &[Arc<SpikeSecret>], cluster: &SpikeCluster) -> Vec<ObjectRef<SpikeSecret>> {
    let (Some(cluster_ns), name) = (cluster.namespace(), cluster.name_any()) else {
        return Vec::new();
    };
    all.iter()
        .filter(|s| {
            let own = s.namespace().unwrap_or_default();
            s.spec.cluster_ref.name == name && s.spec.cluster_ref.namespace_or(&own) == cluster_ns
        })
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

/// The `SpikeSecret`s among `all` that use the Kubernetes Secret `meta` describes: as a
/// source, as a token's Secret, or as its owner. Only same-namespace uses count (no other
/// is ever fetched).
pub fn users_of(
    all: &[Arc<SpikeSecret>],
    meta: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<SpikeSecret>> {
    let (Some(ns), name) = (meta.namespace(), meta.name_any()) else {
        return Vec::new();
    };
    let owners: BTreeSet<&str> = meta
        .owner_references()
        .iter()
        .filter(|o| o.kind == SpikeSecret::kind(&()))
        .map(|o| o.uid.as_str())
        .collect();
    all.iter()
        .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
        .filter(|s| {
            let sources = s.spec.data.iter().filter_map(|d| d.from_secret.as_ref());
            let mut names = sources
                .filter(|f| f.namespace.as_deref().is_none_or(|n| n == ns))
                .map(|f| f.name.as_str())
                .chain(s.spec.tokens.iter().map(|t| t.secret_name.as_str()));
            names.any(|n| n == name) || s.uid().is_some_and(|uid| owners.contains(uid.as_str()))
        })
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

/// One reconcile of a `SpikeSecret`: cleanup when it is being deleted (if it carries the
/// finalizer), else the finalizer when one is needed, then the apply.
pub async fn reconcile(secret: Arc<SpikeSecret>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(ControllerName::spikesecret);
    let key = ObjectRef::from_obj(&*secret).erase();
    let api: Api<SpikeSecret> = Api::namespaced(ctx.client.clone(), &secret.ns()?);
    let action = if secret.metadata.deletion_timestamp.is_some() {
        if finalizers::has(&*secret, FINALIZER) {
            secret.cleanup(&ctx).await?;
            finalizers::remove(&api, &*secret, FINALIZER).await?;
        }
        Action::await_change()
    } else {
        if secret.needs_finalizer() && !finalizers::has(&*secret, FINALIZER) {
            finalizers::add(&api, &*secret, FINALIZER).await?;
        }
        secret.apply(&ctx, &api).await?
    };
    ctx.backoff.succeeded(&key);
    Ok(action)
}

/// What happens after a failed reconcile: counted by reason, retried after the object's
/// backoff.
pub fn error_policy(secret: Arc<SpikeSecret>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.failed(ControllerName::spikesecret, &*secret, error)
}

/// A referenced Kubernetes Secret as fetched: what identifies its revision, and its data
/// (wiped when dropped; Debug shows key names only).
#[derive(Debug)]
pub struct Source {
    /// Its `metadata.uid`.
    pub uid: String,
    /// Its `metadata.resourceVersion`.
    pub resource_version: String,
    /// Its `data`.
    pub data: BTreeMap<String, SecretBytes>,
}

impl Source {
    /// Takes `secret`'s data out of it, moving each buffer (no copy) into one wiped on drop.
    pub fn take(mut secret: Secret) -> Self {
        let data = secret
            .data
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, ByteString(v))| (k, SecretBytes::new(v)))
            .collect();
        if let Some(mut strings) = secret.string_data.take() {
            // Never set on a read, but wiped if it were.
            strings.values_mut().for_each(Zeroize::zeroize);
        }
        Self {
            uid: secret.metadata.uid.unwrap_or_default(),
            resource_version: secret.metadata.resource_version.unwrap_or_default(),
            data,
        }
    }
}

/// The fetched sources, by Secret name (all in the resource's namespace).
pub type Sources = BTreeMap<String, Source>;

/// What `valid` asks of Nexus, given its fetched `sources`: the pure build step. A missing
/// source Secret or key is [`SOURCE_MISSING`]; a declaration the sync cannot carry out is a
/// refusal naming the field.
pub fn desired_secret(
    ns: &str,
    valid: &ValidSecret,
    write_policy: CrdWritePolicy,
    sources: &Sources,
) -> Result<DesiredSecret, Outcome> {
    let from_secret = valid
        .data
        .iter()
        .filter(|(_, d)| matches!(d, ValidData::FromSecret { .. }))
        .count();
    if from_secret != 0 && from_secret != valid.data.len() {
        return Err(Outcome::Failed {
            reason: "UnsupportedSpec",
            message: "spec.data mixes fromSecret and generate entries: the operator may not read the secret back, so it cannot keep generated values across writes of copied ones; use one SpikeSecret for each".into(),
        });
    }
    let values = if from_secret == 0 {
        let gens = valid
            .data
            .iter()
            .filter_map(|(key, d)| match d {
                ValidData::Generate { length, alphabet } => Some((
                    key.clone(),
                    Generator {
                        length: usize::try_from(*length).unwrap_or(usize::MAX),
                        alphabet: alphabet_of(*alphabet),
                    },
                )),
                ValidData::FromSecret { .. } => None,
            })
            .collect();
        SecretValues::Generated(gens)
    } else {
        let mut map = SecretMap::new();
        for (key, d) in &valid.data {
            let ValidData::FromSecret { name, key: from } = d else {
                continue;
            };
            let missing = |what: String| Outcome::Failed {
                reason: SOURCE_MISSING,
                message: bounded(what),
            };
            let source = sources.get(name).ok_or_else(|| {
                missing(format!("Secret {ns}/{name} (for key {key}) does not exist"))
            })?;
            let bytes = source.data.get(from).ok_or_else(|| {
                missing(format!(
                    "Secret {ns}/{name} has no key {from} (for key {key})"
                ))
            })?;
            let text = std::str::from_utf8(bytes.expose_secret()).map_err(|_| Outcome::Failed {
                reason: "SourceNotText",
                message: format!(
                    "Secret {ns}/{name} key {from} (for key {key}) is not UTF-8 text, which SPIKE stores"
                ),
            })?;
            map.insert(key.clone(), SecretString::from(text));
        }
        SecretValues::Given(map)
    };
    Ok(DesiredSecret {
        path: valid.path.as_str().to_owned(),
        values,
        scope: DesiredScope {
            ttl: valid.ttl,
            allowed_spiffe_ids: valid
                .allowed_spiffe_ids
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            allowed_destinations: valid
                .allowed_destinations
                .iter()
                .map(ToString::to_string)
                .collect(),
        },
        write_policy: match write_policy {
            CrdWritePolicy::IfNotExists => WritePolicy::IfNotExists,
            CrdWritePolicy::Replace => WritePolicy::Replace,
        },
        source_revision: source_revision(valid, sources),
    })
}

/// The generator alphabet of a declared one.
fn alphabet_of(a: CrdAlphabet) -> Alphabet {
    let chars: String = match a {
        CrdAlphabet::Alphanumeric => return Alphabet::alphanumeric(),
        CrdAlphabet::Hex => "0123456789abcdef".into(),
        CrdAlphabet::Base64Url => ('A'..='Z')
            .chain('a'..='z')
            .chain('0'..='9')
            .chain(['-', '_'])
            .collect(),
        CrdAlphabet::Printable => ('!'..='~').collect(),
    };
    // Each set above is distinct printable ASCII, which `new` accepts.
    Alphabet::new(&chars).unwrap_or_else(|_| Alphabet::alphanumeric())
}

/// The source revision of `valid`'s values: `sha256:` and the hex SHA-256 of a canonical
/// description of where each key's value comes from (for a Kubernetes Secret its name, `uid`,
/// `resourceVersion` and the selected key; for a generated value its settings), one line per
/// key in key order. No value enters it; any change of a source changes it.
pub fn source_revision(valid: &ValidSecret, sources: &Sources) -> String {
    let lines: BTreeMap<&str, String> = valid
        .data
        .iter()
        .map(|(key, d)| {
            let line = match d {
                ValidData::FromSecret { name, key: from } => {
                    let (uid, rv) = sources
                        .get(name)
                        .map_or(("", ""), |s| (s.uid.as_str(), s.resource_version.as_str()));
                    format!("from secret={name} uid={uid} rv={rv} key={from}")
                }
                ValidData::Generate { length, alphabet } => {
                    format!("generate length={length} alphabet={alphabet:?}")
                }
            };
            (key.as_str(), line)
        })
        .collect();
    let mut h = Sha256::new();
    for (key, line) in lines {
        // Keys and names are restricted to [A-Za-z0-9._-], so the lines cannot run together.
        h.update(format!("{key}: {line}\n").as_bytes());
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// A digest of a token's declaration: a change of any of it mints a new token at once.
pub fn token_declaration(t: &ValidToken) -> String {
    let mut h = Sha256::new();
    h.update(
        format!(
            "agent={}\nkey={}\nttl={}\naction={:?}\ndestinations={}\nprefixes={}\n",
            t.agent.as_str(),
            t.key,
            t.ttl.as_secs(),
            t.action,
            t.destinations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            t.path_prefixes.join(","),
        )
        .as_bytes(),
    );
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Why a token is minted now, or `None` when the one in status is still good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintReason {
    /// None was minted yet.
    New,
    /// Its Kubernetes Secret is missing or holds no token.
    SecretMissing,
    /// Its declaration changed since it was minted.
    Changed,
    /// It is two thirds through its life (or its recorded times make no sense).
    Expiring,
}

/// Whether to mint the token declared as `t` (digest `declaration`), given what status
/// records of it and whether its Kubernetes Secret holds a token. A status without an issued
/// time (older operators) is taken to have been issued one TTL before it expires.
pub fn mint_reason(
    t: &ValidToken,
    declaration: &str,
    recorded: Option<&TokenStatus>,
    secret_holds_token: bool,
    now: SystemTime,
) -> Option<MintReason> {
    let Some(r) = recorded else {
        return Some(MintReason::New);
    };
    if !secret_holds_token {
        return Some(MintReason::SecretMissing);
    }
    if r.declaration.as_deref() != Some(declaration) {
        return Some(MintReason::Changed);
    }
    let Some((issued, expires)) = lifetime(r, t.ttl) else {
        return Some(MintReason::Expiring);
    };
    needs_remint(issued, expires, now).then_some(MintReason::Expiring)
}

/// When the token `r` records is due to be re-minted, from `now` (zero when overdue).
pub fn remint_in(r: &TokenStatus, ttl: Duration, now: SystemTime) -> Duration {
    let Some((issued, expires)) = lifetime(r, ttl) else {
        return Duration::ZERO;
    };
    let life = expires.duration_since(issued).unwrap_or_default();
    (issued + life * 2 / 3)
        .duration_since(now)
        .unwrap_or_default()
}

/// The issued and expiry times status records (issued derived from the TTL if absent).
fn lifetime(r: &TokenStatus, ttl: Duration) -> Option<(SystemTime, SystemTime)> {
    let expires = parse_time(&r.expires_at)?;
    let issued = match &r.issued_at {
        Some(t) => parse_time(t)?,
        None => expires.checked_sub(ttl)?,
    };
    Some((issued, expires))
}

fn parse_time(s: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

fn format_time(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// True when `refs` hold the `SpikeSecret` of uid `uid` as controller.
fn owned_by(refs: &[OwnerReference], uid: &str) -> bool {
    refs.iter()
        .any(|o| o.uid == uid && o.kind == SpikeSecret::kind(&()) && o.controller == Some(true))
}

/// What every token of one reconcile shares.
#[derive(Clone, Copy)]
struct TokenRun<'a> {
    /// The cluster's Nexus.
    sync: &'a NexusSync,
    /// The namespace's Kubernetes Secrets.
    secrets: &'a Api<Secret>,
    /// The validated spec.
    valid: &'a ValidSecret,
    /// The time the re-mint decisions are taken at.
    now: SystemTime,
}

/// What a reconcile did besides its outcome, for the status and the events.
#[derive(Debug, Default)]
struct Progress {
    /// The secret's apply, if it happened.
    secret: Option<SecretSync>,
    /// The tokens now minted, if the token step ran.
    tokens: Option<Vec<TokenStatus>>,
    /// Normal events to publish: reason and note.
    notes: Vec<(&'static str, String)>,
    /// When the next token is due to be re-minted.
    token_due: Option<Duration>,
}

impl SpikeSecret {
    /// The namespace (every `SpikeSecret` has one; the API server guarantees it).
    fn ns(&self) -> Result<String, Error> {
        crate::validate::namespace_of(self.meta())
            .map(str::to_owned)
            .map_err(Error::InvalidSpec)
    }

    /// True when deleting it needs Nexus: its versions are to be soft-deleted, or it has or
    /// had tokens to revoke.
    pub fn needs_finalizer(&self) -> bool {
        self.spec.deletion_policy == CrdDeletionPolicy::Delete
            || !self.spec.tokens.is_empty()
            || self.status.as_ref().is_some_and(|s| !s.tokens.is_empty())
    }

    /// The `SpikeCluster` of `spec.clusterRef`, if it exists, with its `namespace/name`.
    async fn cluster(&self, ctx: &Context) -> Result<(Option<SpikeCluster>, String), Error> {
        let own = self.ns()?;
        let r = &self.spec.cluster_ref;
        let ns = r.namespace_or(&own);
        let api: Api<SpikeCluster> = Api::namespaced(ctx.client.clone(), ns);
        Ok((api.get_opt(&r.name).await?, format!("{ns}/{}", r.name)))
    }

    /// The spec checked against `cluster`, or the refusal.
    fn validated(&self, cluster: &SpikeCluster) -> Result<ValidSecret, Outcome> {
        let cluster_name = format!(
            "{}/{}",
            cluster.namespace().unwrap_or_default(),
            cluster.name_any()
        );
        let valid_cluster = validate_cluster(cluster).map_err(|e| Outcome::Failed {
            reason: "ClusterInvalid",
            message: bounded(format!("SpikeCluster {cluster_name} is invalid: {e}")),
        })?;
        validate_secret(self, &valid_cluster).map_err(|e| Outcome::Failed {
            reason: match e {
                InvalidSpec::Tenancy { .. } => "TenancyViolation",
                _ => "InvalidSpec",
            },
            message: bounded(e.to_string()),
        })
    }

    /// Every Kubernetes Secret `valid` copies from, fetched from this resource's namespace
    /// only (absent ones are left out; [`desired_secret`] reports them).
    async fn fetch_sources(&self, ctx: &Context, valid: &ValidSecret) -> Result<Sources, Error> {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &self.ns()?);
        let names: BTreeSet<&str> = valid
            .data
            .iter()
            .filter_map(|(_, d)| match d {
                ValidData::FromSecret { name, .. } => Some(name.as_str()),
                ValidData::Generate { .. } => None,
            })
            .collect();
        let mut sources = Sources::new();
        for name in names {
            if let Some(s) = api.get_opt(name).await? {
                sources.insert(name.to_owned(), Source::take(s));
            }
        }
        Ok(sources)
    }

    /// Makes the Nexus secret and the tokens what the spec declares.
    async fn apply(&self, ctx: &Context, api: &Api<Self>) -> Result<Action, Error> {
        let (cluster, cluster_name) = self.cluster(ctx).await?;
        let Some(cluster) = cluster else {
            let outcome = Outcome::Failed {
                reason: "ClusterNotFound",
                message: format!("SpikeCluster {cluster_name} does not exist"),
            };
            return self.finish(ctx, api, outcome, Progress::default()).await;
        };
        if cluster.spec.paused {
            return self.paused(ctx, &cluster_name).await;
        }
        let valid = match self.validated(&cluster) {
            Ok(v) => v,
            Err(outcome) => return self.finish(ctx, api, outcome, Progress::default()).await,
        };
        let desired = {
            let sources = self.fetch_sources(ctx, &valid).await?;
            match desired_secret(&self.ns()?, &valid, self.spec.write_policy, &sources) {
                Ok(d) => d,
                Err(outcome) => {
                    return self.finish(ctx, api, outcome, Progress::default()).await;
                }
            }
            // The fetched values are wiped here; only `desired` holds them now.
        };
        let applied = self.status.as_ref().and_then(|s| s.applied.as_ref());
        let written = async {
            let sync = ctx.nexus_of(&cluster)?;
            let done = sync.apply_secret(&desired, applied).await?;
            Ok::<_, SyncError>((sync, done))
        }
        .await;
        drop(desired);
        let (sync, done) = match written {
            Ok(w) => w,
            Err(e) => return self.failed(ctx, api, e, Progress::default()).await,
        };
        let path = valid.path.as_str();
        let mut progress = Progress::default();
        match done.outcome {
            SecretOutcome::Created { version } => progress.notes.push((
                "Created",
                format!("secret {path} created in Nexus at version {version}"),
            )),
            SecretOutcome::Updated { version } => progress.notes.push((
                "Updated",
                format!("secret {path} written to Nexus as version {version}"),
            )),
            SecretOutcome::Unchanged { .. } => {}
        }
        progress.secret = Some(done);
        match self.sync_tokens(ctx, &sync, &valid, &mut progress).await {
            Ok(()) => {
                let outcome = Outcome::Ready {
                    reason: "Synced",
                    message: format!(
                        "secret {path} is in the Nexus of SpikeCluster {cluster_name}"
                    ),
                };
                self.finish(ctx, api, outcome, progress).await
            }
            Err(Error::Sync(e)) => self.failed(ctx, api, e, progress).await,
            Err(e) => {
                // A Kubernetes call failed midway: record the tokens that did reach their
                // Secrets (else they would be minted again), then retry with backoff.
                let outcome = Outcome::Retrying {
                    reason: e.reason(),
                    message: bounded(e.to_string()),
                };
                self.finish(ctx, api, outcome, progress).await?;
                Err(e)
            }
        }
    }

    /// Reports a failed Nexus call: a refusal in the conditions; a transient failure there
    /// and to the error policy, for backoff.
    async fn failed(
        &self,
        ctx: &Context,
        api: &Api<Self>,
        e: SyncError,
        progress: Progress,
    ) -> Result<Action, Error> {
        let action = self
            .finish(ctx, api, Outcome::of_sync_error(&e), progress)
            .await?;
        if e.is_transient() {
            // The status says so; the error policy retries with backoff.
            Err(e.into())
        } else {
            Ok(action)
        }
    }

    /// Mints the tokens that are due, writes each into its Kubernetes Secret and revokes the
    /// one it replaced; revokes the tokens no longer declared and deletes their Secrets. The
    /// tokens minted so far are recorded in `progress` even when a later one fails.
    async fn sync_tokens(
        &self,
        ctx: &Context,
        sync: &NexusSync,
        valid: &ValidSecret,
        progress: &mut Progress,
    ) -> Result<(), Error> {
        let ns = self.ns()?;
        let recorded: Vec<TokenStatus> = self
            .status
            .as_ref()
            .map(|s| s.tokens.clone())
            .unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        let now = SystemTime::now();
        // Tokens no longer declared keep their place until revoked.
        let declared: BTreeSet<&str> = valid
            .tokens
            .iter()
            .map(|t| t.secret_name.as_str())
            .collect();
        let mut next: Vec<TokenStatus> = recorded
            .iter()
            .filter(|r| !declared.contains(r.secret_name.as_str()))
            .cloned()
            .collect();
        let mut result = Ok(());
        for t in &valid.tokens {
            let old = recorded.iter().find(|r| r.secret_name == t.secret_name);
            let run = TokenRun {
                sync,
                secrets: &secrets,
                valid,
                now,
            };
            let step = self.sync_token(ctx, &run, t, old).await;
            match step {
                Ok((status, note)) => {
                    if let Some(note) = note {
                        progress.notes.push(("TokenMinted", note));
                    }
                    let due = remint_in(&status, t.ttl, now);
                    progress.token_due = Some(progress.token_due.map_or(due, |d| d.min(due)));
                    next.push(status);
                }
                Err(e) => {
                    // Keep what status had, so the token is retried (and still revoked later).
                    next.extend(old.cloned());
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        // Revoke and remove what the spec no longer declares.
        let mut kept = Vec::with_capacity(next.len());
        for r in next {
            if declared.contains(r.secret_name.as_str()) {
                kept.push(r);
                continue;
            }
            match self.retire_token(sync, &secrets, &r).await {
                Ok(()) => progress.notes.push((
                    "TokenRevoked",
                    format!(
                        "token {} revoked and Secret {ns}/{} deleted: no longer declared",
                        r.token_id, r.secret_name
                    ),
                )),
                Err(e) => {
                    kept.push(r);
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        // Keep the spec's order, then what is left to retire.
        kept.sort_by_key(|r| {
            valid
                .tokens
                .iter()
                .position(|t| t.secret_name == r.secret_name)
                .unwrap_or(usize::MAX)
        });
        progress.tokens = Some(kept);
        result
    }

    /// One declared token: its status after this reconcile and, if minted, an event note.
    async fn sync_token(
        &self,
        ctx: &Context,
        run: &TokenRun<'_>,
        t: &ValidToken,
        old: Option<&TokenStatus>,
    ) -> Result<(TokenStatus, Option<String>), Error> {
        let TokenRun {
            sync,
            secrets,
            valid,
            now,
        } = *run;
        let declaration = token_declaration(t);
        let uid = self.uid().unwrap_or_default();
        let holds_token = match secrets.get_opt(&t.secret_name).await? {
            // Someone else's Secret: writing into it would take it over, and the garbage
            // collector would delete it with this resource.
            Some(s) if !owned_by(s.owner_references(), &uid) => {
                return Err(Error::Sync(SyncError::BadInput(format!(
                    "spec.tokens: Secret {}/{} exists and is not owned by this SpikeSecret; the operator writes tokens only into Secrets it creates (choose another secretName)",
                    self.ns()?,
                    t.secret_name
                ))));
            }
            Some(mut s) => {
                let ok = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get(TOKEN_KEY))
                    .is_some_and(|v| !v.0.is_empty());
                // The token was only looked at; wipe the copy.
                if let Some(d) = s.data.as_mut() {
                    d.values_mut().for_each(|v| v.0.zeroize());
                }
                ok
            }
            None => false,
        };
        let Some(why) = mint_reason(t, &declaration, old, holds_token, now) else {
            let kept = old.cloned().ok_or_else(|| {
                Error::Sync(SyncError::Unexpected("a kept token has no status".into()))
            })?;
            return Ok((kept, None));
        };
        let desired = DesiredToken {
            secret: valid.path.as_str().to_owned(),
            key: Some(t.key.clone()),
            agent_id: t.agent.as_str().to_owned(),
            ttl: t.ttl,
            action: t.action,
            destinations: t.destinations.iter().map(ToString::to_string).collect(),
            path_prefixes: t.path_prefixes.clone(),
            locations: Vec::new(),
        };
        let minted = sync.mint_token(&desired).await?;
        if let Err(e) = self
            .write_token_secret(ctx, &t.secret_name, &minted.reference)
            .await
        {
            // Not delivered: a token nobody holds is revoked at once (best effort; it expires).
            if let Err(r) = sync.revoke_token(&minted.id).await {
                tracing::warn!(token = %minted.id, error = %r, "could not revoke an undelivered token");
            }
            return Err(e);
        }
        let status = TokenStatus {
            secret_name: t.secret_name.clone(),
            token_id: minted.id.clone(),
            expires_at: format_time(minted.expires_at),
            issued_at: Some(format_time(minted.issued_at)),
            declaration: Some(declaration),
        };
        // The successor is in place: the previous token goes.
        if let Some(prev) = old.filter(|o| o.token_id != minted.id)
            && let Err(e) = revoke(sync, &prev.token_id).await
        {
            tracing::warn!(token = %prev.token_id, error = %e, expires = %prev.expires_at, "could not revoke a replaced token; it stays valid until it expires");
        }
        let why = match why {
            MintReason::New => "new",
            MintReason::SecretMissing => "its Secret held no token",
            MintReason::Changed => "its declaration changed",
            MintReason::Expiring => "the previous one nears expiry",
        };
        let note = format!(
            "token {} for {} written to Secret {}/{} ({why}); expires {}",
            status.token_id,
            t.agent.as_str(),
            self.ns()?,
            t.secret_name,
            status.expires_at
        );
        Ok((status, Some(note)))
    }

    /// Writes `token` into Secret `name` (key [`TOKEN_KEY`], type `Opaque`, owned by this
    /// resource) with server-side apply.
    async fn write_token_secret(
        &self,
        ctx: &Context,
        name: &str,
        token: &SecretString,
    ) -> Result<(), Error> {
        let ns = self.ns()?;
        let owner = self.controller_owner_ref(&()).ok_or_else(|| {
            Error::Sync(SyncError::Unexpected("the SpikeSecret has no uid".into()))
        })?;
        let labels = BTreeMap::from([
            (LABEL_NAME.to_owned(), APP_NAME.to_owned()),
            (LABEL_INSTANCE.to_owned(), self.name_any()),
            (LABEL_COMPONENT.to_owned(), TOKEN_COMPONENT.to_owned()),
            (LABEL_PART_OF.to_owned(), PART_OF.to_owned()),
            (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        ]);
        let mut secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                owner_references: Some(vec![owner]),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                TOKEN_KEY.to_owned(),
                ByteString(token.expose_secret().as_bytes().to_vec()),
            )])),
            ..Secret::default()
        };
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        let written = api
            .patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await;
        if let Some(d) = secret.data.as_mut() {
            d.values_mut().for_each(|v| v.0.zeroize());
        }
        // The API server answers with the object, token included: wiped too.
        let mut back = written?;
        if let Some(d) = back.data.as_mut() {
            d.values_mut().for_each(|v| v.0.zeroize());
        }
        Ok(())
    }

    /// Revokes a token no longer declared and deletes its Secret (if this resource owns it).
    async fn retire_token(
        &self,
        sync: &NexusSync,
        secrets: &Api<Secret>,
        r: &TokenStatus,
    ) -> Result<(), Error> {
        revoke(sync, &r.token_id).await?;
        let uid = self.uid().unwrap_or_default();
        if let Some(mut s) = secrets.get_opt(&r.secret_name).await? {
            if let Some(d) = s.data.as_mut() {
                d.values_mut().for_each(|v| v.0.zeroize());
            }
            if owned_by(s.owner_references(), &uid) {
                secrets
                    .delete(&r.secret_name, &DeleteParams::default())
                    .await?;
            }
        }
        Ok(())
    }

    /// Cleans up Nexus before the finalizer goes: revokes every recorded token and, under
    /// `deletionPolicy: Delete`, soft-deletes the secret's versions.
    async fn cleanup(&self, ctx: &Context) -> Result<(), Error> {
        let (cluster, cluster_name) = self.cluster(ctx).await?;
        let path = &self.spec.path;
        let Some(cluster) = cluster else {
            // Nothing left to clean up in: holding the finalizer would block the deletion
            // forever.
            self.event(
                ctx,
                EventType::Normal,
                "ClusterGone",
                "Delete",
                format!("SpikeCluster {cluster_name} no longer exists; secret {path} was not cleaned up in its Nexus"),
            )
            .await;
            return Ok(());
        };
        if cluster.spec.paused {
            return Err(Error::ClusterPaused(cluster_name));
        }
        let sync = ctx.nexus_of(&cluster)?;
        let recorded = self
            .status
            .as_ref()
            .map(|s| s.tokens.as_slice())
            .unwrap_or_default();
        for r in recorded {
            revoke(&sync, &r.token_id).await?;
        }
        if self.spec.deletion_policy == CrdDeletionPolicy::Retain {
            if !recorded.is_empty() {
                self.event(
                    ctx,
                    EventType::Normal,
                    "Retained",
                    "Delete",
                    format!(
                        "{} token(s) revoked; secret {path} retained in Nexus",
                        recorded.len()
                    ),
                )
                .await;
            }
            return Ok(());
        }
        // Never delete outside the tenancy, even for a resource that slipped past the schema:
        // an invalid spec was never written, so there is nothing of ours to delete.
        if let Err(outcome) = self.validated(&cluster) {
            let (Outcome::Failed { message, .. }
            | Outcome::Retrying { message, .. }
            | Outcome::Ready { message, .. }) = outcome;
            self.event(
                ctx,
                EventType::Warning,
                "NotDeleted",
                "Delete",
                format!("secret {path} was not deleted from Nexus: {message}"),
            )
            .await;
            return Ok(());
        }
        let note = match sync.delete_secret(path, DeletionPolicy::Delete).await? {
            DeleteOutcome::Deleted => format!("secret {path} soft-deleted in Nexus"),
            DeleteOutcome::AlreadyGone | DeleteOutcome::Retained => {
                format!("secret {path} had no live version in Nexus")
            }
        };
        self.event(ctx, EventType::Normal, "Deleted", "Delete", note)
            .await;
        Ok(())
    }

    /// A paused cluster: only `Progressing` changes, and only on this resource.
    async fn paused(&self, ctx: &Context, cluster_name: &str) -> Result<Action, Error> {
        let old = self.status.clone().unwrap_or_default();
        // First visit while paused: every condition is written, as Unknown if need be.
        let observed = conditions::paused(
            &old.conditions,
            &[READY, DEGRADED],
            &format!(
                "SpikeCluster {cluster_name} is paused: the operator changes nothing until spec.paused is false"
            ),
        );
        let status = SpikeSecretStatus {
            conditions: conditions::set_conditions(
                &old.conditions,
                &observed,
                old.observed_generation,
                &conditions::now_rfc3339(),
            ),
            ..old
        };
        if self.status.as_ref() != Some(&status) {
            self.event(
                ctx,
                EventType::Normal,
                "Paused",
                "Reconcile",
                format!("SpikeCluster {cluster_name} is paused; nothing is changed in Nexus"),
            )
            .await;
            self.write_status(ctx, &status).await?;
        }
        Ok(Action::requeue(REFUSED_REQUEUE))
    }

    /// Writes the status `outcome` and `progress` imply (when it changed), publishes the
    /// events, drops a finalizer no longer needed, and says when to look again.
    async fn finish(
        &self,
        ctx: &Context,
        api: &Api<Self>,
        outcome: Outcome,
        progress: Progress,
    ) -> Result<Action, Error> {
        let status = self.next_status(&outcome, &progress, &conditions::now_rfc3339());
        let changed = self.status.as_ref() != Some(&status);
        for (reason, note) in &progress.notes {
            self.event(ctx, EventType::Normal, reason, "Reconcile", note.clone())
                .await;
        }
        if let Outcome::Failed { reason, message } | Outcome::Retrying { reason, message } =
            &outcome
            && changed
        {
            self.event(
                ctx,
                EventType::Warning,
                reason,
                "Reconcile",
                message.clone(),
            )
            .await;
        }
        if changed {
            self.write_status(ctx, &status).await?;
        }
        // A finalizer that no cleanup needs any more (Retain, no tokens left) goes.
        let mut now = self.clone();
        now.status = Some(status);
        if !now.needs_finalizer() && finalizers::has(self, FINALIZER) {
            finalizers::remove(api, self, FINALIZER).await?;
        }
        Ok(match &outcome {
            Outcome::Ready { .. } => Action::requeue(
                progress
                    .token_due
                    .map_or(RESYNC, |d| d.clamp(Duration::from_secs(1), RESYNC)),
            ),
            Outcome::Failed { reason, .. } if *reason == SOURCE_MISSING => {
                Action::requeue(SOURCE_REQUEUE)
            }
            Outcome::Failed { .. } => Action::requeue(REFUSED_REQUEUE),
            // Only reached with a transient error, which the error policy schedules.
            Outcome::Retrying { .. } => Action::requeue(RESYNC),
        })
    }

    /// The status after `outcome`: conditions set (times kept where nothing flipped), the
    /// generation advanced only when the reconcile finished, what was applied and minted
    /// recorded (kept as it was where this reconcile did not get that far).
    fn next_status(&self, outcome: &Outcome, progress: &Progress, now: &str) -> SpikeSecretStatus {
        let old = self.status.clone().unwrap_or_default();
        let generation = if outcome.finished() {
            self.metadata.generation
        } else {
            old.observed_generation
        };
        let applied = progress
            .secret
            .as_ref()
            .map(|s| s.applied.clone())
            .or(old.applied);
        SpikeSecretStatus {
            observed_generation: generation,
            stored_version: applied.as_ref().and_then(|a| i64::try_from(a.version).ok()),
            applied,
            tokens: progress.tokens.clone().unwrap_or(old.tokens),
            conditions: conditions::set_conditions(
                &old.conditions,
                &outcome.conditions(),
                generation,
                now,
            ),
        }
    }

    /// Writes `status` with server-side apply on the status subresource.
    async fn write_status(&self, ctx: &Context, status: &SpikeSecretStatus) -> Result<(), Error> {
        ctx.write_status(self, status).await
    }

    async fn event(
        &self,
        ctx: &Context,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        ctx.event_about(self, type_, reason, action, note).await;
    }
}

/// Revokes token `id`; one Nexus no longer knows (expired and purged) counts as revoked.
async fn revoke(sync: &NexusSync, id: &str) -> Result<(), SyncError> {
    match sync.revoke_token(id).await {
        Err(SyncError::Refused {
            code: ErrorCode::NotFound | ErrorCode::Expired,
            ..
        }) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::conditions::PROGRESSING;
    use crate::crd::ConditionStatus;
    use crate::fixtures::{self, TENANT_NS, source_secret, spike_secret, tenant_secret};
    use serde_json::json;

    fn valid(s: &SpikeSecret) -> ValidSecret {
        s.validated(&fixtures::cluster()).expect("valid")
    }

    fn sources(rv: &str, pairs: &[(&str, &str)]) -> Sources {
        Sources::from([(
            "db-creds".to_owned(),
            Source::take(source_secret(TENANT_NS, "db-creds", rv, pairs)),
        )])
    }

    fn with_token() -> SpikeSecret {
        spike_secret(
            TENANT_NS,
            "llm",
            json!({
                "path": "k8s/team-a/llm",
                "data": [{ "key": "value", "fromSecret": { "name": "db-creds", "key": "password" } }],
                "allowedDestinations": ["api.example.com"],
                "tokens": [{ "agent": "spiffe://spike.dev/ns/team-a/sa/agent", "secretName": "agent-token", "ttl": "15m" }],
            }),
        )
    }

    #[test]
    fn the_desired_secret_copies_the_selected_key_and_the_scope() {
        let mut s = tenant_secret();
        s.spec.ttl = Some("1h".into());
        let v = valid(&s);
        let d = desired_secret(
            TENANT_NS,
            &v,
            s.spec.write_policy,
            &sources("7", &[("password", "hunter2"), ("other", "x")]),
        )
        .unwrap();
        assert_eq!(d.path, "k8s/team-a/db");
        assert_eq!(d.write_policy, WritePolicy::Replace);
        assert_eq!(d.scope.ttl, Some(Duration::from_secs(3600)));
        let SecretValues::Given(m) = &d.values else {
            panic!("{d:?}")
        };
        assert_eq!(m.keys().collect::<Vec<_>>(), ["password"]);
        assert_eq!(m.get("password").unwrap().expose_secret(), "hunter2");
        assert!(!format!("{d:?}").contains("hunter2"));
    }

    #[test]
    fn a_missing_source_names_the_secret_and_key_never_a_value() {
        let s = tenant_secret();
        let v = valid(&s);
        let Err(Outcome::Failed { reason, message }) =
            desired_secret(TENANT_NS, &v, s.spec.write_policy, &Sources::new())
        else {
            panic!("a missing Secret must be refused");
        };
        assert_eq!(reason, SOURCE_MISSING);
        assert_eq!(
            message,
            "Secret team-a/db-creds (for key password) does not exist"
        );
        let Err(Outcome::Failed { reason, message }) = desired_secret(
            TENANT_NS,
            &v,
            s.spec.write_policy,
            &sources("1", &[("user", "secret-user")]),
        ) else {
            panic!("a missing key must be refused");
        };
        assert_eq!(reason, SOURCE_MISSING);
        assert_eq!(
            message,
            "Secret team-a/db-creds has no key password (for key password)"
        );
        assert!(!message.contains("secret-user"));
    }

    #[test]
    fn mixed_sources_and_binary_values_are_refused() {
        let mut s = tenant_secret();
        s.spec
            .data
            .push(serde_json::from_value(json!({"key": "salt", "generate": {}})).unwrap());
        let Err(Outcome::Failed { reason, .. }) = desired_secret(
            TENANT_NS,
            &valid(&s),
            s.spec.write_policy,
            &sources("1", &[("password", "p")]),
        ) else {
            panic!("mixed sources must be refused");
        };
        assert_eq!(reason, "UnsupportedSpec");
        let s = tenant_secret();
        let mut bin = sources("1", &[]);
        bin.get_mut("db-creds")
            .unwrap()
            .data
            .insert("password".into(), SecretBytes::new(vec![0xff, 0xfe]));
        let Err(Outcome::Failed { reason, .. }) =
            desired_secret(TENANT_NS, &valid(&s), s.spec.write_policy, &bin)
        else {
            panic!("binary values must be refused");
        };
        assert_eq!(reason, "SourceNotText");
    }

    #[test]
    fn generated_values_use_the_declared_generators() {
        let s = spike_secret(
            TENANT_NS,
            "gen",
            json!({"path": "k8s/team-a/gen", "data": [
                {"key": "a", "generate": {"length": 20, "alphabet": "Hex"}},
                {"key": "b", "generate": {}},
            ]}),
        );
        let d =
            desired_secret(TENANT_NS, &valid(&s), s.spec.write_policy, &Sources::new()).unwrap();
        let SecretValues::Generated(g) = &d.values else {
            panic!("{d:?}")
        };
        assert_eq!(g["a"].length, 20);
        assert_eq!(g["a"].alphabet, Alphabet::new("0123456789abcdef").unwrap());
        assert_eq!(g["b"].alphabet, Alphabet::alphanumeric());
        assert_eq!(d.write_policy, WritePolicy::IfNotExists);
        for a in [
            CrdAlphabet::Hex,
            CrdAlphabet::Base64Url,
            CrdAlphabet::Printable,
        ] {
            assert_ne!(alphabet_of(a), Alphabet::alphanumeric(), "{a:?}");
        }
    }

    #[test]
    fn the_source_revision_is_stable_bounded_and_moves_with_any_source() {
        let s = tenant_secret();
        let v = valid(&s);
        let base = source_revision(&v, &sources("7", &[("password", "a")]));
        assert!(base.starts_with("sha256:") && base.len() == 71, "{base}");
        // The same sources: the same revision, whatever the values (which never enter it).
        assert_eq!(
            base,
            source_revision(&v, &sources("7", &[("password", "b")]))
        );
        // A new resourceVersion, a new uid, another key selected, a generator changed.
        assert_ne!(
            base,
            source_revision(&v, &sources("8", &[("password", "a")]))
        );
        let mut other_uid = sources("7", &[("password", "a")]);
        other_uid.get_mut("db-creds").unwrap().uid = "uid-2".into();
        assert_ne!(base, source_revision(&v, &other_uid));
        let mut other_key = tenant_secret();
        other_key.spec.data[0].from_secret.as_mut().unwrap().key = "pass".into();
        assert_ne!(
            base,
            source_revision(&valid(&other_key), &sources("7", &[]))
        );
        let g = |len: u32| {
            let s = spike_secret(
                TENANT_NS,
                "g",
                json!({"path": "k8s/team-a/g", "data": [{"key": "a", "generate": {"length": len}}]}),
            );
            source_revision(&valid(&s), &Sources::new())
        };
        assert_eq!(g(32), g(32));
        assert_ne!(g(32), g(33));
    }

    fn recorded(t: &ValidToken, issued: &str, expires: &str) -> TokenStatus {
        TokenStatus {
            secret_name: t.secret_name.clone(),
            token_id: "3f1a9c00".into(),
            expires_at: expires.into(),
            issued_at: Some(issued.into()),
            declaration: Some(token_declaration(t)),
        }
    }

    #[test]
    fn tokens_are_minted_when_new_missing_changed_or_two_thirds_through() {
        let v = valid(&with_token());
        let t = &v.tokens[0];
        let d = token_declaration(t);
        let t0 = parse_time("2026-01-01T00:00:00Z").unwrap();
        let r = recorded(t, "2026-01-01T00:00:00Z", "2026-01-01T00:15:00Z");
        assert_eq!(mint_reason(t, &d, None, true, t0), Some(MintReason::New));
        assert_eq!(
            mint_reason(t, &d, Some(&r), false, t0),
            Some(MintReason::SecretMissing)
        );
        assert_eq!(mint_reason(t, &d, Some(&r), true, t0), None);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(mint_reason(t, &d, Some(&r), true, at(599)), None);
        assert_eq!(
            mint_reason(t, &d, Some(&r), true, at(600)),
            Some(MintReason::Expiring)
        );
        assert_eq!(
            mint_reason(t, "sha256:other", Some(&r), true, t0),
            Some(MintReason::Changed)
        );
        // Without an issued time, it is derived from the TTL.
        let mut old = r.clone();
        old.issued_at = None;
        assert_eq!(mint_reason(t, &d, Some(&old), true, at(599)), None);
        assert_eq!(
            mint_reason(t, &d, Some(&old), true, at(600)),
            Some(MintReason::Expiring)
        );
        let mut bad = r.clone();
        bad.expires_at = "soon".into();
        assert_eq!(
            mint_reason(t, &d, Some(&bad), true, t0),
            Some(MintReason::Expiring)
        );
        // The next re-mint is at two thirds of the life.
        assert_eq!(remint_in(&r, t.ttl, at(100)), Duration::from_secs(500));
        assert_eq!(remint_in(&r, t.ttl, at(700)), Duration::ZERO);
    }

    #[test]
    fn a_token_declaration_digest_moves_with_any_of_its_settings() {
        let v = valid(&with_token());
        let mut t = v.tokens[0].clone();
        let d = token_declaration(&t);
        t.ttl = Duration::from_secs(60);
        assert_ne!(d, token_declaration(&t));
        let mut t = v.tokens[0].clone();
        t.path_prefixes = vec!["/v1".into()];
        assert_ne!(d, token_declaration(&t));
    }

    #[test]
    fn the_finalizer_is_needed_for_delete_or_tokens_only() {
        let mut s = tenant_secret();
        assert!(!s.needs_finalizer());
        s.spec.deletion_policy = CrdDeletionPolicy::Delete;
        assert!(s.needs_finalizer());
        assert!(with_token().needs_finalizer());
        // Tokens gone from the spec but still in status: still needed, to revoke them.
        let mut s = tenant_secret();
        s.status = Some(SpikeSecretStatus {
            tokens: vec![recorded(&valid(&with_token()).tokens[0], "a", "b")],
            ..Default::default()
        });
        assert!(s.needs_finalizer());
    }

    #[test]
    fn a_recomputed_status_is_unchanged_and_failures_keep_what_was_applied() {
        let mut s = tenant_secret();
        let ready = Outcome::Ready {
            reason: "Synced",
            message: "in Nexus".into(),
        };
        let progress = Progress {
            secret: Some(SecretSync {
                outcome: SecretOutcome::Created { version: 1 },
                applied: crate::nexus::Applied {
                    version: 1,
                    source_revision: Some("sha256:x".into()),
                },
            }),
            tokens: Some(Vec::new()),
            ..Progress::default()
        };
        let first = s.next_status(&ready, &progress, "2026-01-01T00:00:00Z");
        assert_eq!(first.stored_version, Some(1));
        assert_eq!(first.observed_generation, Some(1));
        s.status = Some(first.clone());
        let again = s.next_status(&ready, &progress, "2026-01-01T01:00:00Z");
        assert_eq!(again, first);
        // Nexus down on a new generation: applied kept, generation not advanced.
        s.metadata.generation = Some(2);
        let down = Outcome::Retrying {
            reason: "NexusUnavailable",
            message: "Nexus is unavailable".into(),
        };
        let d = s.next_status(&down, &Progress::default(), "2026-01-01T02:00:00Z");
        assert_eq!(d.applied, first.applied);
        assert_eq!(d.stored_version, Some(1));
        assert_eq!(d.observed_generation, Some(1));
        let ready_c = conditions::find(&d.conditions, READY).unwrap();
        assert_eq!(ready_c.last_transition_time, "2026-01-01T02:00:00Z");
        let prog = conditions::find(&d.conditions, PROGRESSING).unwrap();
        assert_eq!(prog.status, ConditionStatus::True);
    }

    #[test]
    fn secrets_map_to_the_spike_secrets_that_use_them() {
        let db = Arc::new(tenant_secret());
        let llm = Arc::new(with_token());
        let mut elsewhere = tenant_secret();
        elsewhere.metadata.namespace = Some("team-b".into());
        elsewhere.metadata.name = Some("db-b".into());
        let all = [db, llm, Arc::new(elsewhere)];
        let meta = |ns: &str, name: &str| {
            let s = source_secret(ns, name, "1", &[]);
            PartialObjectMeta::<Secret> {
                types: None,
                metadata: s.metadata,
                _phantom: std::marker::PhantomData,
            }
        };
        let names = |m: &PartialObjectMeta<Secret>| {
            let mut n: Vec<String> = users_of(&all, m).into_iter().map(|r| r.name).collect();
            n.sort();
            n
        };
        assert_eq!(names(&meta(TENANT_NS, "db-creds")), ["db", "llm"]);
        assert_eq!(names(&meta(TENANT_NS, "agent-token")), ["llm"]);
        assert!(names(&meta(TENANT_NS, "unrelated")).is_empty());
        assert_eq!(names(&meta("team-b", "db-creds")), ["db-b"]);
        // Owned by a SpikeSecret, whatever its name.
        let mut owned = meta(TENANT_NS, "renamed");
        owned.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "spike.spiffe.io/v1alpha1".into(),
            kind: "SpikeSecret".into(),
            name: "llm".into(),
            uid: "uid-team-a-llm".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        assert_eq!(names(&owned), ["llm"]);
        let cluster = fixtures::cluster();
        assert_eq!(secrets_of(&all, &cluster).len(), 3);
    }
}
