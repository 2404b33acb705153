//! The pure "build" step of the `SpikeCluster` controller: from a validated cluster, every
//! object the controller server-side applies, typed, named after the cluster, in its
//! namespace, labelled `app.kubernetes.io/*` and owned by it (controller owner reference with
//! `blockOwnerDeletion`). No Kubernetes or Nexus call happens here.
//!
//! The objects are:
//!
//! - ServiceAccounts for the keepers, Nexus, bootstrap and the gateway, whose tokens are never
//!   mounted (no SPIKE pod calls the API server; SPIRE attests pods by their ServiceAccount);
//! - one ConfigMap with every component's settings file ([`settings`]), which holds no
//!   secret;
//! - the keepers ([`keeper`]): a headless Service, a StatefulSet with ordinals from 1 (pod
//!   `<cluster>-keeper-<i>` is keeper `/spike/keeper/<i>`), a PodDisruptionBudget;
//! - Nexus ([`nexus`]): a Service and a StatefulSet whose claim is retained;
//! - the bootstrap Job ([`bootstrap`]);
//! - NetworkPolicies ([`network`]);
//! - the gateway Deployment and Service when `spec.gateway` is set ([`gateway`]);
//! - SPIRE `ClusterSPIFFEID`s when `spec.clusterSpiffeIds.enabled` ([`spiffe_ids`]), which are
//!   cluster-scoped and so carry the cluster in labels instead of an owner reference.
//!
//! Every pod runs under the restricted Pod Security Standard ([`pod`]), except that a
//! `hostPath` identity socket ([`identity`]) needs a namespace that allows hostPath volumes.

pub mod bootstrap;
pub mod gateway;
pub mod identity;
pub mod keeper;
pub mod meta;
pub mod network;
pub mod nexus;
pub mod pod;
pub mod service;
pub mod settings;
pub mod spiffe_ids;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::{SpikeCluster, SpikeClusterSpec};
use crate::names;
use crate::validate::ValidCluster;

use identity::Delivery;
use meta::Component;
pub use meta::{cluster_scoped_selector, cluster_selector, selector_labels};
pub use spiffe_ids::{ClusterSpiffeId, ClusterSpiffeIdSpec};

/// Why the objects cannot be built. The validate step rules out everything else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The cluster has no `metadata.uid` yet (it was never stored by the API server), so
    /// nothing can name it as owner.
    #[error("the SpikeCluster has no metadata.uid, so its objects cannot name it as their owner")]
    NoUid,
    /// The `ValidCluster` is of another cluster than the one given.
    #[error("the validated cluster {valid:?} is not the SpikeCluster {given:?}")]
    Mismatch {
        /// `<namespace>/<name>` of the `ValidCluster`.
        valid: String,
        /// `<namespace>/<name>` of the `SpikeCluster`.
        given: String,
    },
    /// `spec.identity` sets no socket delivery (validation refuses this).
    #[error(
        "spec.identity must set exactly one of spireCsi and hostPath (certManagerCsi is refused)"
    )]
    Identity,
}

/// Every object of a cluster, one field each, in the order the controller applies them:
/// identities and settings before the pods that use them, keepers before Nexus before
/// bootstrap.
#[derive(Debug, Clone)]
pub struct ClusterObjects {
    /// The keepers' ServiceAccount.
    pub keeper_account: ServiceAccount,
    /// Nexus's.
    pub nexus_account: ServiceAccount,
    /// Bootstrap's.
    pub bootstrap_account: ServiceAccount,
    /// The gateway's, when it runs.
    pub gateway_account: Option<ServiceAccount>,
    /// Every component's settings file.
    pub config: ConfigMap,
    /// SPIRE registrations, when enabled (cluster-scoped, no owner reference).
    pub spiffe_ids: Option<spiffe_ids::SpiffeIds>,
    /// Denies all traffic of the cluster's pods that the others do not allow.
    pub default_deny: NetworkPolicy,
    /// The keepers' traffic.
    pub keeper_policy: NetworkPolicy,
    /// Nexus's.
    pub nexus_policy: NetworkPolicy,
    /// Bootstrap's.
    pub bootstrap_policy: NetworkPolicy,
    /// The gateway's.
    pub gateway_policy: Option<NetworkPolicy>,
    /// The keepers' headless Service.
    pub keeper_service: Service,
    /// The keepers.
    pub keepers: StatefulSet,
    /// Their disruption budget.
    pub keeper_budget: PodDisruptionBudget,
    /// Nexus's Service.
    pub nexus_service: Service,
    /// Nexus.
    pub nexus: StatefulSet,
    /// The bootstrap Job.
    pub bootstrap: Job,
    /// The gateway's Service.
    pub gateway_service: Option<Service>,
    /// The gateway.
    pub gateway: Option<Deployment>,
}

/// What every builder reads.
pub struct Ctx<'a> {
    /// The cluster's name.
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its spec.
    pub spec: &'a SpikeClusterSpec,
    /// What validation found.
    pub valid: &'a ValidCluster,
    /// The owner reference every namespaced object carries.
    pub owner: OwnerReference,
    /// How its pods get their identity.
    pub identity: Delivery,
    /// Every component's settings file by its name in the ConfigMap.
    pub settings: BTreeMap<String, String>,
}

impl<'a> Ctx<'a> {
    /// The context of `cluster`, which `valid` is the validation of.
    pub fn new(cluster: &'a SpikeCluster, valid: &'a ValidCluster) -> Result<Self, BuildError> {
        let given = format!(
            "{}/{}",
            cluster.metadata.namespace.as_deref().unwrap_or_default(),
            cluster.metadata.name.as_deref().unwrap_or_default()
        );
        let expected = format!("{}/{}", valid.namespace, valid.name);
        if given != expected {
            return Err(BuildError::Mismatch {
                valid: expected,
                given,
            });
        }
        // `controller: true`; None without a uid. `blockOwnerDeletion` too, so a foreground
        // deletion of the cluster waits for its objects.
        let owner = OwnerReference {
            block_owner_deletion: Some(true),
            ..cluster.controller_owner_ref(&()).ok_or(BuildError::NoUid)?
        };
        let mut ctx = Self {
            name: &valid.name,
            namespace: &valid.namespace,
            spec: &cluster.spec,
            valid,
            owner,
            identity: identity::delivery(&cluster.spec.identity)?,
            settings: BTreeMap::new(),
        };
        ctx.settings = ctx.settings_files();
        Ok(ctx)
    }

    /// The metadata of an owned object.
    pub fn meta(&self, name: String, component: Component) -> ObjectMeta {
        meta::owned(name, self.namespace, self.name, component, &self.owner)
    }

    fn service_account(&self, name: String, component: Component) -> ServiceAccount {
        ServiceAccount {
            metadata: self.meta(name, component),
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        }
    }

    /// The operator's scopes in Nexus: every tenant's paths and IDs, `<pathRoot>/**` and
    /// `spiffe://<td>/<idRoot>/**` (never `/spike/*`: the idRoot cannot be `spike`).
    fn operator_scopes(&self) -> (String, String) {
        let roots = &self.valid.roots;
        (
            format!("{}/**", roots.path_root()),
            format!(
                "spiffe://{}/{}/**",
                self.valid.trust_domain.as_str(),
                roots.id_root()
            ),
        )
    }

    fn settings_files(&self) -> BTreeMap<String, String> {
        let keepers = keeper::addresses(self);
        let nexus = names::nexus_addr(self.name, self.namespace);
        let (path_scope, id_scope) = self.operator_scopes();
        let input = settings::SettingsInput {
            trust_domain: self.valid.trust_domain.as_str(),
            identity_socket: &self.identity.socket,
            keepers: &keepers,
            nexus: &nexus,
            operator_path_scope: &path_scope,
            operator_id_scope: &id_scope,
        };
        let mut data = BTreeMap::from([
            (settings::NEXUS_FILE.to_owned(), settings::nexus(&input)),
            (settings::KEEPER_FILE.to_owned(), settings::keeper(&input)),
            (
                settings::BOOTSTRAP_FILE.to_owned(),
                settings::bootstrap(&input),
            ),
        ]);
        if let Some(g) = &self.spec.gateway {
            data.insert(
                settings::GATEWAY_FILE.to_owned(),
                settings::gateway(&input, g),
            );
        }
        data
    }

    fn config_map(&self) -> ConfigMap {
        ConfigMap {
            metadata: self.meta(names::config(self.name), Component::Config),
            data: Some(self.settings.clone()),
            ..ConfigMap::default()
        }
    }
}

/// Every object of `cluster`, which `valid` is the validation of
/// ([`crate::validate::validate_cluster`]).
pub fn cluster_objects(
    cluster: &SpikeCluster,
    valid: &ValidCluster,
) -> Result<ClusterObjects, BuildError> {
    let ctx = Ctx::new(cluster, valid)?;
    let policies = network::policies(&ctx);
    let gateway = ctx.spec.gateway.as_ref();
    Ok(ClusterObjects {
        keeper_account: ctx.service_account(names::keeper(ctx.name), Component::Keeper),
        nexus_account: ctx.service_account(names::nexus(ctx.name), Component::Nexus),
        bootstrap_account: ctx.service_account(names::bootstrap(ctx.name), Component::Bootstrap),
        gateway_account: gateway
            .map(|_| ctx.service_account(names::gateway(ctx.name), Component::Gateway)),
        config: ctx.config_map(),
        spiffe_ids: spiffe_ids::spiffe_ids(&ctx),
        default_deny: policies.default_deny,
        keeper_policy: policies.keeper,
        nexus_policy: policies.nexus,
        bootstrap_policy: policies.bootstrap,
        gateway_policy: policies.gateway,
        keeper_service: keeper::service(&ctx),
        keepers: keeper::stateful_set(&ctx),
        keeper_budget: keeper::disruption_budget(&ctx),
        nexus_service: nexus::service(&ctx),
        nexus: nexus::stateful_set(&ctx),
        bootstrap: bootstrap::job(&ctx),
        gateway_service: gateway.map(|_| gateway::service(&ctx)),
        gateway: gateway.map(|g| gateway::deployment(&ctx, g)),
    })
}

impl ClusterObjects {
    /// Every object as JSON (each with its `apiVersion` and `kind`), in apply order, for
    /// rendering and for checks of the whole set.
    pub fn to_json(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        use serde_json::to_value as v;
        let mut out = vec![
            v(&self.keeper_account)?,
            v(&self.nexus_account)?,
            v(&self.bootstrap_account)?,
        ];
        if let Some(a) = &self.gateway_account {
            out.push(v(a)?);
        }
        out.push(v(&self.config)?);
        if let Some(ids) = &self.spiffe_ids {
            out.extend([v(&ids.nexus)?, v(&ids.keeper)?, v(&ids.bootstrap)?]);
            if let Some(g) = &ids.gateway {
                out.push(v(g)?);
            }
        }
        for p in [
            &self.default_deny,
            &self.keeper_policy,
            &self.nexus_policy,
            &self.bootstrap_policy,
        ] {
            out.push(v(p)?);
        }
        if let Some(p) = &self.gateway_policy {
            out.push(v(p)?);
        }
        out.extend([
            v(&self.keeper_service)?,
            v(&self.keepers)?,
            v(&self.keeper_budget)?,
            v(&self.nexus_service)?,
            v(&self.nexus)?,
            v(&self.bootstrap)?,
        ]);
        if let Some(s) = &self.gateway_service {
            out.push(v(s)?);
        }
        if let Some(d) = &self.gateway {
            out.push(v(d)?);
        }
        Ok(out)
    }
}

/// A sample cluster and its validation, for the builders' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use crate::crd::SpikeCluster;
    use crate::validate::{ValidCluster, validate_cluster};

    /// The default cluster `spike` in `spike-system`, as the API server stored it (a uid).
    pub(crate) fn sample() -> SpikeCluster {
        let mut c = crate::validate::tests_support::cluster("spike-system");
        c.metadata.uid = Some("6a1d1c7e-3f59-4c1b-9d43-1b1f0c6c2a10".into());
        c
    }

    /// Its validation; panics on an invalid sample.
    pub(crate) fn valid(c: &SpikeCluster) -> ValidCluster {
        validate_cluster(c).unwrap()
    }
}

#[cfg(test)]
mod tests;
