//! The reference-token gateway (`spec.gateway`): a Deployment and its Service.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EmptyDirVolumeSource, KeyToPath, Service, Volume, VolumeMount,
};

use crate::crd::GatewaySpec;
use crate::names::{self, GATEWAY_HEALTH_PORT, GATEWAY_PORT};

use super::Ctx;
use super::meta::{Component, labels, match_labels, selector_labels};
use super::pod::{self, PodInput, http_probe, writable_mount};
use super::service::{self, Publish};
use super::settings::{GATEWAY_AUDIT_DIR, GATEWAY_CA_DIR, GATEWAY_CA_FILE, GATEWAY_FILE};

const AUDIT_VOLUME: &str = "audit";

/// The volumes and mounts of the routes' upstream CA bundles: each route with a `ca` gets its
/// ConfigMap key mounted read-only as `<GATEWAY_CA_DIR>/<route>/ca.pem`, where its settings
/// point (`settings::upstream_ca_file`).
fn upstream_cas(gateway: &GatewaySpec) -> (Vec<Volume>, Vec<VolumeMount>) {
    gateway
        .routes
        .iter()
        .filter_map(|r| r.ca.as_ref().map(|ca| (r, ca)))
        .enumerate()
        .map(|(i, (route, ca))| {
            let name = format!("upstream-ca-{i}");
            let volume = Volume {
                name: name.clone(),
                config_map: Some(ConfigMapVolumeSource {
                    name: ca.name.clone(),
                    items: Some(vec![KeyToPath {
                        key: ca.key.clone(),
                        path: GATEWAY_CA_FILE.into(),
                        mode: None,
                    }]),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            };
            let mount = VolumeMount {
                name,
                mount_path: format!("{GATEWAY_CA_DIR}/{}", route.name),
                read_only: Some(true),
                ..VolumeMount::default()
            };
            (volume, mount)
        })
        .unzip()
}

/// The gateway Deployment. Its audit log is on an emptyDir: it lives as long as the pod, so
/// ship it (a log collector reading the volume) if it must outlive one.
pub fn deployment(ctx: &Ctx<'_>, gateway: &GatewaySpec) -> Deployment {
    let (mut volumes, mut mounts) = upstream_cas(gateway);
    volumes.push(Volume {
        name: AUDIT_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    mounts.push(writable_mount(AUDIT_VOLUME, GATEWAY_AUDIT_DIR));
    let template = pod::template(
        PodInput {
            labels: labels(ctx.name, Component::Gateway),
            service_account: names::gateway(ctx.name),
            container: "gateway",
            binary: "spike-gateway",
            settings_file: GATEWAY_FILE,
            args: Vec::new(),
            ports: vec![
                pod::port("agents", GATEWAY_PORT),
                pod::port("health", GATEWAY_HEALTH_PORT),
            ],
            readiness: Some(http_probe("/readyz", "health", 5)),
            liveness: Some(http_probe("/healthz", "health", 10)),
            resources: gateway.resources.as_ref(),
            volumes,
            mounts,
            restart_policy: None,
        },
        ctx,
    );
    Deployment {
        metadata: ctx.meta(names::gateway(ctx.name), Component::Gateway),
        spec: Some(DeploymentSpec {
            replicas: Some(gateway.replicas),
            selector: match_labels(selector_labels(ctx.name, Component::Gateway)),
            template,
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The Service agents reach the gateway by.
pub fn service(ctx: &Ctx<'_>) -> Service {
    service::service(
        ctx,
        names::gateway(ctx.name),
        Component::Gateway,
        ("agents", GATEWAY_PORT),
        Publish::Ready,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests_support::{sample, valid};

    #[test]
    fn the_gateway_runs_its_replicas_with_a_writable_audit_directory() {
        let mut c = sample();
        let gw: GatewaySpec =
            serde_json::from_value(serde_json::json!({"name": "edge", "replicas": 2})).unwrap();
        c.spec.gateway = Some(gw.clone());
        let v = valid(&c);
        let ctx = Ctx::new(&c, &v).unwrap();
        let d = deployment(&ctx, &gw).spec.unwrap();
        assert_eq!(d.replicas, Some(2));
        let pod = d.template.spec.unwrap();
        let mounts = pod.containers[0].volume_mounts.as_ref().unwrap();
        let audit = mounts.iter().find(|m| m.name == AUDIT_VOLUME).unwrap();
        assert_eq!(audit.mount_path, GATEWAY_AUDIT_DIR);
        assert_eq!(audit.read_only, None);
        let s = service(&ctx).spec.unwrap();
        assert_eq!(s.ports.unwrap()[0].port, 8480);
    }

    #[test]
    fn each_route_ca_is_mounted_where_the_settings_point() {
        let mut c = sample();
        let gw: GatewaySpec = serde_json::from_value(serde_json::json!({"routes": [
            {"name": "public", "upstream": "https://api.example.com"},
            {"name": "internal", "upstream": "https://llm.ai.svc",
             "ca": {"name": "internal-ca", "key": "bundle.pem"}}
        ]}))
        .unwrap();
        c.spec.gateway = Some(gw.clone());
        let v = valid(&c);
        let ctx = Ctx::new(&c, &v).unwrap();
        let pod = deployment(&ctx, &gw).spec.unwrap().template.spec.unwrap();
        let volumes = pod.volumes.unwrap();
        let ca = volumes.iter().find(|v| v.name == "upstream-ca-0").unwrap();
        let cm = ca.config_map.as_ref().unwrap();
        assert_eq!(cm.name, "internal-ca");
        assert_eq!(cm.items.as_ref().unwrap()[0].key, "bundle.pem");
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        let m = mounts.iter().find(|m| m.name == "upstream-ca-0").unwrap();
        assert_eq!(m.read_only, Some(true));
        assert_eq!(
            format!("{}/{GATEWAY_CA_FILE}", m.mount_path),
            crate::build::settings::upstream_ca_file("internal")
        );
        assert!(!volumes.iter().any(|v| v.name == "upstream-ca-1"));
    }
}
