//! SPIRE `ClusterSPIFFEID` objects for the cluster's own components
//! (`spec.clusterSpiffeIds.enabled`): one per component, each matching only that component's
//! pods in the cluster's namespace (and its ServiceAccount), with exactly SPIKE's ID for it.
//!
//! A `ClusterSPIFFEID` is cluster-scoped, so it cannot have an owner reference to the
//! namespaced `SpikeCluster` (Kubernetes refuses it): each carries
//! `spike.spiffe.io/cluster-namespace` and `spike.spiffe.io/cluster-name` labels
//! ([`super::meta::cluster_scoped_selector`]), and the controller deletes them by those labels
//! when the cluster goes.
//!
//! The templates are Go `text/template`s rendered by SPIRE's controller manager with
//! `.TrustDomain`, `.PodMeta` and `.PodSpec`. A keeper's ID takes its pod's
//! `apps.kubernetes.io/pod-index` label, which the StatefulSet controller sets to the ordinal
//! (1-based here, so it is the keeper id) with the built-in `index` function; no string
//! function of the template is needed.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::names;

use super::Ctx;
use super::meta::{Component, cluster_scoped_labels, match_labels, selector_labels};

/// The spec of SPIRE's `ClusterSPIFFEID` (`spire.spiffe.io/v1alpha1`), the fields SPIKE sets.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "spire.spiffe.io",
    version = "v1alpha1",
    kind = "ClusterSPIFFEID",
    root = "ClusterSpiffeId",
    schema = "disabled",
    doc = "SPIRE's registration of the pods a selector matches under one SPIFFE-ID template."
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpiffeIdSpec {
    /// The controller manager's class, when it filters by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// The SPIFFE ID, a Go template.
    #[serde(rename = "spiffeIDTemplate")]
    pub spiffe_id_template: String,
    /// The namespaces whose pods it registers.
    pub namespace_selector: LabelSelector,
    /// The pods it registers.
    pub pod_selector: LabelSelector,
    /// Selectors every registered workload must also match (Go templates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workload_selector_templates: Vec<String>,
    /// DNS names the SVID also carries (Go templates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_name_templates: Vec<String>,
}

/// One per component: Nexus, keepers, bootstrap, and the gateway when it runs.
#[derive(Debug, Clone)]
pub struct SpiffeIds {
    /// `spiffe://<td>/spike/nexus`.
    pub nexus: ClusterSpiffeId,
    /// `spiffe://<td>/spike/keeper/<i>`.
    pub keeper: ClusterSpiffeId,
    /// `spiffe://<td>/spike/bootstrap`.
    pub bootstrap: ClusterSpiffeId,
    /// `spiffe://<td>/spike/gateway/<name>`.
    pub gateway: Option<ClusterSpiffeId>,
}

/// The names of the gateway's Service, short and fully qualified.
fn gateway_dns_names(ctx: &Ctx<'_>) -> Vec<String> {
    let service = format!("{}.{}.svc", names::gateway(ctx.name), ctx.namespace);
    vec![service.clone(), format!("{service}.cluster.local")]
}

/// The template of a keeper's ID.
pub const KEEPER_ID_TEMPLATE: &str = "spiffe://{{ .TrustDomain }}/spike/keeper/{{ index .PodMeta.Labels \"apps.kubernetes.io/pod-index\" }}";

fn entry(
    ctx: &Ctx<'_>,
    component: Component,
    service_account: String,
    template: String,
) -> ClusterSpiffeId {
    let mut object = ClusterSpiffeId::new(
        // Cluster-scoped: the namespace keeps two clusters of one name apart.
        &format!("{}-{}-{}", ctx.namespace, ctx.name, component.as_str()),
        ClusterSpiffeIdSpec {
            class_name: ctx.spec.cluster_spiffe_ids.class_name.clone(),
            spiffe_id_template: template,
            namespace_selector: match_labels(
                [(
                    "kubernetes.io/metadata.name".to_owned(),
                    ctx.namespace.to_owned(),
                )]
                .into(),
            ),
            pod_selector: match_labels(selector_labels(ctx.name, component)),
            // A pod with the right labels but another ServiceAccount gets no ID.
            workload_selector_templates: vec![format!("k8s:sa:{service_account}")],
            dns_name_templates: Vec::new(),
        },
    );
    object.metadata = ObjectMeta {
        labels: Some(cluster_scoped_labels(ctx.namespace, ctx.name, component)),
        ..object.metadata
    };
    object
}

/// The objects, or `None` unless `spec.clusterSpiffeIds.enabled`.
pub fn spiffe_ids(ctx: &Ctx<'_>) -> Option<SpiffeIds> {
    if !ctx.spec.cluster_spiffe_ids.enabled {
        return None;
    }
    let fixed = |path: &str| format!("spiffe://{{{{ .TrustDomain }}}}/spike/{path}");
    Some(SpiffeIds {
        nexus: entry(
            ctx,
            Component::Nexus,
            names::nexus(ctx.name),
            fixed("nexus"),
        ),
        keeper: entry(
            ctx,
            Component::Keeper,
            names::keeper(ctx.name),
            KEEPER_ID_TEMPLATE.to_owned(),
        ),
        bootstrap: entry(
            ctx,
            Component::Bootstrap,
            names::bootstrap(ctx.name),
            fixed("bootstrap"),
        ),
        gateway: ctx.spec.gateway.as_ref().map(|g| {
            let mut e = entry(
                ctx,
                Component::Gateway,
                names::gateway(ctx.name),
                fixed(&format!("gateway/{}", g.name)),
            );
            // Agents reach the gateway by its Service's name; with these in its SVID an agent's
            // ordinary TLS client (curl with the trust bundle) verifies it as it would any
            // server, without a SPIFFE-aware library.
            e.spec.dns_name_templates = gateway_dns_names(ctx);
            e
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests_support::{sample, valid};
    use kube::Resource;

    #[test]
    fn off_by_default() {
        let c = sample();
        let v = valid(&c);
        assert!(spiffe_ids(&Ctx::new(&c, &v).unwrap()).is_none());
    }

    #[test]
    fn each_component_gets_exactly_its_id_and_only_its_pods() {
        let mut c = sample();
        c.spec.cluster_spiffe_ids.enabled = true;
        c.spec.cluster_spiffe_ids.class_name = Some("spire".into());
        c.spec.gateway = Some(serde_json::from_value(serde_json::json!({"name": "edge"})).unwrap());
        let v = valid(&c);
        let ctx = Ctx::new(&c, &v).unwrap();
        let ids = spiffe_ids(&ctx).unwrap();
        let gateway = ids.gateway.unwrap();
        for (obj, component, template) in [
            (
                &ids.nexus,
                Component::Nexus,
                "spiffe://{{ .TrustDomain }}/spike/nexus",
            ),
            (&ids.keeper, Component::Keeper, KEEPER_ID_TEMPLATE),
            (
                &ids.bootstrap,
                Component::Bootstrap,
                "spiffe://{{ .TrustDomain }}/spike/bootstrap",
            ),
            (
                &gateway,
                Component::Gateway,
                "spiffe://{{ .TrustDomain }}/spike/gateway/edge",
            ),
        ] {
            assert_eq!(obj.spec.spiffe_id_template, template);
            assert_eq!(obj.spec.class_name.as_deref(), Some("spire"));
            assert_eq!(
                obj.spec.pod_selector,
                match_labels(selector_labels("spike", component))
            );
            assert_eq!(
                obj.spec.namespace_selector.match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
                "spike-system"
            );
            assert_eq!(
                obj.spec.workload_selector_templates,
                vec![format!("k8s:sa:spike-{}", component.as_str())]
            );
            // Cluster-scoped: no namespace, no owner reference, the cluster in labels.
            assert!(obj.meta().namespace.is_none());
            assert!(obj.meta().owner_references.is_none());
            let labels = obj.meta().labels.as_ref().unwrap();
            assert_eq!(labels["spike.spiffe.io/cluster-namespace"], "spike-system");
            assert_eq!(labels["spike.spiffe.io/cluster-name"], "spike");
            assert_eq!(
                obj.meta().name.as_deref(),
                Some(format!("spike-system-spike-{}", component.as_str()).as_str())
            );
        }
        // Only the gateway, which agents reach by name, carries DNS names.
        assert_eq!(
            gateway.spec.dns_name_templates,
            [
                "spike-gateway.spike-system.svc",
                "spike-gateway.spike-system.svc.cluster.local"
            ]
        );
        assert!(ids.nexus.spec.dns_name_templates.is_empty());
        let json = serde_json::to_value(&gateway).unwrap();
        assert_eq!(
            json["spec"]["dnsNameTemplates"][0],
            "spike-gateway.spike-system.svc"
        );
        let json = serde_json::to_value(&ids.keeper).unwrap();
        assert_eq!(json["apiVersion"], "spire.spiffe.io/v1alpha1");
        assert_eq!(json["kind"], "ClusterSPIFFEID");
        assert_eq!(json["spec"]["spiffeIDTemplate"], KEEPER_ID_TEMPLATE);
    }

    #[test]
    fn the_keeper_template_takes_the_pod_index() {
        assert!(KEEPER_ID_TEMPLATE.ends_with(
            "/spike/keeper/{{ index .PodMeta.Labels \"apps.kubernetes.io/pod-index\" }}"
        ));
    }
}
