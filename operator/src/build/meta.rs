//! What every object a `SpikeCluster` owns carries: its namespace, the
//! `app.kubernetes.io/*` labels, and the controller owner reference to the cluster; and the
//! label selectors the builders and the controller's watches find them by.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

/// `app.kubernetes.io/name` of everything SPIKE's operator creates.
pub const APP_NAME: &str = "spike";
/// `app.kubernetes.io/part-of`.
pub const PART_OF: &str = "spike";
/// `app.kubernetes.io/managed-by`, also the server-side apply field manager.
pub const MANAGED_BY: &str = "spike-operator";

/// The label keys.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// The cluster's name.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// Which part of the cluster: [`Component::as_str`].
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Always [`PART_OF`].
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// Always [`MANAGED_BY`].
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// On cluster-scoped objects (which cannot have an owner reference to the namespaced
/// `SpikeCluster`): the owning cluster's namespace.
pub const LABEL_CLUSTER_NAMESPACE: &str = "spike.spiffe.io/cluster-namespace";
/// On cluster-scoped objects: the owning cluster's name.
pub const LABEL_CLUSTER_NAME: &str = "spike.spiffe.io/cluster-name";

/// The part of a cluster an object belongs to, its `app.kubernetes.io/component` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The keeper StatefulSet and what serves it.
    Keeper,
    /// Nexus.
    Nexus,
    /// The bootstrap Job.
    Bootstrap,
    /// The reference-token gateway.
    Gateway,
    /// The settings ConfigMap, which every component reads.
    Config,
    /// The default-deny NetworkPolicy, which covers every component.
    Network,
}

impl Component {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keeper => "keeper",
            Self::Nexus => "nexus",
            Self::Bootstrap => "bootstrap",
            Self::Gateway => "gateway",
            Self::Config => "config",
            Self::Network => "network",
        }
    }
}

/// The labels that select a component's pods (and that its pod template carries): the
/// cluster's instance, the manager and the component. Never changed once an object exists,
/// since a StatefulSet's or Deployment's selector is immutable.
pub fn selector_labels(cluster: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = cluster_labels(cluster);
    labels.insert(LABEL_COMPONENT.into(), component.as_str().into());
    labels
}

/// The labels every object and pod of one cluster carries, and nothing else does: the
/// instance (the cluster's name) with SPIKE's manager. The operator's own pods are managed by
/// Helm, so they never match.
pub fn cluster_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_INSTANCE.into(), cluster.into()),
        (LABEL_MANAGED_BY.into(), MANAGED_BY.into()),
    ])
}

/// Every label of an object of `component`.
pub fn labels(cluster: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster, component);
    labels.insert(LABEL_NAME.into(), APP_NAME.into());
    labels.insert(LABEL_PART_OF.into(), PART_OF.into());
    labels
}

/// The label selector (`key=value,...`) of everything one cluster owns, for the controller's
/// watches and lists.
pub fn cluster_selector(cluster: &str) -> String {
    cluster_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels of a cluster-scoped object (a `ClusterSPIFFEID`) of the cluster `namespace/name`,
/// which the controller deletes by them when the cluster goes, since no owner reference can.
pub fn cluster_scoped_labels(
    namespace: &str,
    cluster: &str,
    component: Component,
) -> BTreeMap<String, String> {
    let mut l = labels(cluster, component);
    l.insert(LABEL_CLUSTER_NAMESPACE.into(), namespace.into());
    l.insert(LABEL_CLUSTER_NAME.into(), cluster.into());
    l
}

/// The selector (`key=value,...`) of the cluster-scoped objects of `namespace/name`.
pub fn cluster_scoped_selector(namespace: &str, cluster: &str) -> String {
    format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_CLUSTER_NAMESPACE}={namespace},{LABEL_CLUSTER_NAME}={cluster}"
    )
}

/// A `LabelSelector` matching exactly `labels`.
pub fn match_labels(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

/// The metadata of a namespaced object the cluster owns.
pub fn owned(
    name: String,
    namespace: &str,
    cluster: &str,
    component: Component,
    owner: &OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.into()),
        labels: Some(labels(cluster, component)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_extend_the_selector_which_extends_the_cluster_labels() {
        let all = labels("prod", Component::Keeper);
        assert_eq!(all[LABEL_NAME], "spike");
        assert_eq!(all[LABEL_INSTANCE], "prod");
        assert_eq!(all[LABEL_COMPONENT], "keeper");
        assert_eq!(all[LABEL_PART_OF], "spike");
        assert_eq!(all[LABEL_MANAGED_BY], "spike-operator");
        for (k, v) in selector_labels("prod", Component::Keeper) {
            assert_eq!(all[&k], v);
        }
        for (k, v) in cluster_labels("prod") {
            assert_eq!(selector_labels("prod", Component::Nexus)[&k], v);
        }
        assert_eq!(
            cluster_selector("prod"),
            "app.kubernetes.io/instance=prod,app.kubernetes.io/managed-by=spike-operator"
        );
    }

    #[test]
    fn cluster_scoped_objects_name_their_cluster_in_labels() {
        let l = cluster_scoped_labels("spike-system", "prod", Component::Nexus);
        assert_eq!(l[LABEL_CLUSTER_NAMESPACE], "spike-system");
        assert_eq!(l[LABEL_CLUSTER_NAME], "prod");
        let sel = cluster_scoped_selector("spike-system", "prod");
        for term in sel.split(',') {
            let (k, v) = term.split_once('=').unwrap();
            assert_eq!(l[k], v, "{term}");
        }
    }
}
