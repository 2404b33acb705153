//! Nexus: a Service and a one-replica StatefulSet whose data volume outlives the cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, Service, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names::{self, NEXUS_API_PORT, NEXUS_HEALTH_PORT};

use super::Ctx;
use super::meta::{Component, labels, match_labels, selector_labels};
use super::pod::{self, PodInput, http_probe, writable_mount};
use super::service::{self, Publish};
use super::settings::{NEXUS_DATA_DIR, NEXUS_FILE};

/// The volume claim template's name: the claim of pod 0 is `data-<cluster>-nexus-0`.
pub const DATA_VOLUME: &str = "data";

/// The Service every workload, the gateway, bootstrap and the operator reach Nexus's API by
/// ([`names::nexus_addr`]). It publishes Nexus while it is not ready: a sealed Nexus is not
/// ready, and bootstrap must reach it to unseal it (it then answers what it can: sealed).
pub fn service(ctx: &Ctx<'_>) -> Service {
    service::service(
        ctx,
        names::nexus(ctx.name),
        Component::Nexus,
        ("api", NEXUS_API_PORT),
        Publish::NotReadyToo,
    )
}

/// The Nexus StatefulSet: one replica (Nexus is the one writer of its redb file), its data on a
/// claim that is retained when the cluster is deleted or scaled (losing it loses every
/// secret), ready only while unsealed.
pub fn stateful_set(ctx: &Ctx<'_>) -> StatefulSet {
    let nexus = &ctx.spec.nexus;
    let template = pod::template(
        PodInput {
            labels: labels(ctx.name, Component::Nexus),
            service_account: names::nexus(ctx.name),
            container: "nexus",
            binary: "spike-nexus",
            settings_file: NEXUS_FILE,
            args: Vec::new(),
            ports: vec![
                pod::port("api", NEXUS_API_PORT),
                pod::port("health", NEXUS_HEALTH_PORT),
            ],
            // `/readyz` is 200 only while unsealed; `/healthz` while the process serves.
            readiness: Some(http_probe("/readyz", "health", 5)),
            liveness: Some(http_probe("/healthz", "health", 10)),
            resources: nexus.resources.as_ref(),
            // The data volume is the claim template's, not a pod volume.
            volumes: Vec::new(),
            mounts: vec![writable_mount(DATA_VOLUME, NEXUS_DATA_DIR)],
            restart_policy: None,
        },
        ctx,
    );
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(labels(ctx.name, Component::Nexus)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: nexus.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(nexus.storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: ctx.meta(names::nexus(ctx.name), Component::Nexus),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(names::nexus(ctx.name)),
            selector: match_labels(selector_labels(ctx.name, Component::Nexus)),
            template,
            volume_claim_templates: Some(vec![claim]),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests_support::{sample, valid};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn the_volume_is_retained_and_sized_from_the_spec() {
        let mut c = sample();
        c.spec.nexus.storage.size = "5Gi".into();
        c.spec.nexus.storage.storage_class_name = Some("fast".into());
        let v = valid(&c);
        let ctx = Ctx::new(&c, &v).unwrap();
        let sts = stateful_set(&ctx).spec.unwrap();
        assert_eq!(sts.replicas, Some(1));
        let retain = sts.persistent_volume_claim_retention_policy.unwrap();
        assert_eq!(retain.when_deleted.as_deref(), Some("Retain"));
        assert_eq!(retain.when_scaled.as_deref(), Some("Retain"));
        let claim = &sts.volume_claim_templates.unwrap()[0];
        let cs = claim.spec.as_ref().unwrap();
        assert_eq!(cs.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            cs.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"],
            Quantity("5Gi".into())
        );
        let pod = sts.template.spec.unwrap();
        // Mounted from the claim, not a pod volume of the same name.
        assert!(pod.volumes.unwrap().iter().all(|v| v.name != DATA_VOLUME));
        let mount = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == DATA_VOLUME)
            .unwrap()
            .clone();
        assert_eq!(mount.mount_path, NEXUS_DATA_DIR);
        assert_eq!(mount.read_only, None);
    }

    #[test]
    fn probes_use_the_health_port_and_the_service_reaches_a_sealed_nexus() {
        let c = sample();
        let v = valid(&c);
        let ctx = Ctx::new(&c, &v).unwrap();
        let sts = stateful_set(&ctx).spec.unwrap();
        let container = &sts.template.spec.as_ref().unwrap().containers[0];
        let ready = container.readiness_probe.clone().unwrap().http_get.unwrap();
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        assert_eq!(ready.port, IntOrString::String("health".into()));
        let live = container.liveness_probe.clone().unwrap().http_get.unwrap();
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        let ports = container.ports.as_ref().unwrap();
        assert_eq!(ports[0].container_port, 8553);
        assert_eq!(ports[1].container_port, 8554);
        let s = service(&ctx).spec.unwrap();
        assert_eq!(s.publish_not_ready_addresses, Some(true));
        assert_eq!(s.ports.unwrap()[0].port, 8553);
        assert_eq!(
            s.selector.unwrap(),
            sts.template
                .metadata
                .unwrap()
                .labels
                .unwrap()
                .into_iter()
                .filter(|(k, _)| sts.selector.match_labels.as_ref().unwrap().contains_key(k))
                .collect()
        );
    }
}
