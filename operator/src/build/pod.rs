//! The parts every SPIKE pod shares: the restricted Pod Security Standard, the image, the
//! settings and identity volumes, resources and probes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::{ComputeResources, ImagePullPolicy, ResourceList};
use crate::names;

use super::Ctx;
use super::settings::SETTINGS_DIR;

/// The image's non-root user (distroless `nonroot`).
pub const UID: i64 = 65532;
/// Its group, also the pods' `fsGroup` so volumes are writable (Nexus's data).
pub const GID: i64 = 65532;
/// The settings volume's name.
const SETTINGS_VOLUME: &str = "settings";
/// Where the binaries are in the image.
const BIN_DIR: &str = "/usr/local/bin";

/// A read-only mount of `volume` at `path`.
pub fn volume_mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// A writable mount.
pub fn writable_mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        read_only: None,
        ..volume_mount(volume, path)
    }
}

/// The pod-level security context of the restricted Pod Security Standard.
fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(UID),
        run_as_group: Some(GID),
        fs_group: Some(GID),
        seccomp_profile: Some(runtime_default()),
        ..PodSecurityContext::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

/// The container-level security context of the restricted Pod Security Standard, with a
/// read-only root filesystem.
fn container_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(UID),
        run_as_group: Some(GID),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

fn pull_policy(p: ImagePullPolicy) -> String {
    match p {
        ImagePullPolicy::IfNotPresent => "IfNotPresent",
        ImagePullPolicy::Always => "Always",
        ImagePullPolicy::Never => "Never",
    }
    .into()
}

fn quantities(list: &ResourceList) -> Option<BTreeMap<String, Quantity>> {
    let mut map = BTreeMap::new();
    if let Some(cpu) = &list.cpu {
        map.insert("cpu".to_owned(), Quantity(cpu.clone()));
    }
    if let Some(memory) = &list.memory {
        map.insert("memory".to_owned(), Quantity(memory.clone()));
    }
    (!map.is_empty()).then_some(map)
}

/// The container's requests and limits from the spec.
fn resources(r: Option<&ComputeResources>) -> Option<ResourceRequirements> {
    let r = r?;
    Some(ResourceRequirements {
        requests: r.requests.as_ref().and_then(quantities),
        limits: r.limits.as_ref().and_then(quantities),
        ..ResourceRequirements::default()
    })
}

/// An HTTP probe of `path` on the named port.
pub fn http_probe(path: &str, port: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// A TCP container port.
pub fn port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// One SPIKE component's pod.
pub struct PodInput<'a> {
    /// The pod template's labels (the selector's and more).
    pub labels: BTreeMap<String, String>,
    /// Its ServiceAccount.
    pub service_account: String,
    /// The container's name.
    pub container: &'a str,
    /// The binary in the image.
    pub binary: &'a str,
    /// Its settings file in the ConfigMap.
    pub settings_file: &'a str,
    /// Arguments after `--config FILE`.
    pub args: Vec<String>,
    /// Its ports.
    pub ports: Vec<ContainerPort>,
    /// Readiness and liveness probes.
    pub readiness: Option<Probe>,
    /// Liveness.
    pub liveness: Option<Probe>,
    /// Requests and limits.
    pub resources: Option<&'a ComputeResources>,
    /// Pod volumes besides settings and identity.
    pub volumes: Vec<Volume>,
    /// Mounts besides settings and identity (of `volumes`, or of a StatefulSet's claims).
    pub mounts: Vec<VolumeMount>,
    /// `Always` (the default) or, for a Job, `OnFailure`.
    pub restart_policy: Option<&'a str>,
}

/// The pod template annotation with a hash of the component's settings file: a change of the
/// file changes the template, so the pods roll and read it (a mounted ConfigMap is updated in
/// place, but no component re-reads its settings).
pub const SETTINGS_HASH: &str = "spike.spiffe.io/settings-hash";

/// FNV-1a (64 bits): stable across Rust and operator versions (unlike `DefaultHasher`), so an
/// operator upgrade alone rolls no pod. Change detection only, never security.
fn fnv1a(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The pod template: one container running `binary --config /etc/spike/<file> args...`, the
/// settings ConfigMap and the identity volume mounted read-only, under the restricted Pod
/// Security Standard, without a service account token (no SPIKE pod calls the API server).
pub fn template(input: PodInput<'_>, ctx: &Ctx<'_>) -> PodTemplateSpec {
    let images = &ctx.spec.images;
    let config_map = names::config(ctx.name);
    let identity = &ctx.identity;
    let settings_text = ctx
        .settings
        .get(input.settings_file)
        .map(String::as_str)
        .unwrap_or_default();
    let settings_volume = Volume {
        name: SETTINGS_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map,
            // Only the component's own file, so one component never reads another's.
            items: Some(vec![KeyToPath {
                key: input.settings_file.into(),
                path: input.settings_file.into(),
                ..KeyToPath::default()
            }]),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mut volumes = vec![settings_volume, identity.volume.clone()];
    let mut mounts = vec![
        volume_mount(SETTINGS_VOLUME, SETTINGS_DIR),
        identity.mount.clone(),
    ];
    volumes.extend(input.volumes);
    mounts.extend(input.mounts);
    let mut args = vec![
        "--config".to_owned(),
        format!("{SETTINGS_DIR}/{}", input.settings_file),
    ];
    args.extend(input.args);
    let container = Container {
        name: input.container.into(),
        image: Some(images.spike.clone()),
        image_pull_policy: Some(pull_policy(images.pull_policy)),
        command: Some(vec![format!("{BIN_DIR}/{}", input.binary)]),
        args: Some(args),
        ports: (!input.ports.is_empty()).then_some(input.ports),
        readiness_probe: input.readiness,
        liveness_probe: input.liveness,
        resources: resources(input.resources),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(input.labels),
            annotations: Some(BTreeMap::from([(
                SETTINGS_HASH.to_owned(),
                fnv1a(settings_text),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(input.service_account),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(pod_security()),
            containers: vec![container],
            volumes: Some(volumes),
            restart_policy: input.restart_policy.map(Into::into),
            ..PodSpec::default()
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Asserts that `pod` meets the restricted Pod Security Standard as SPIKE runs it.
    pub(crate) fn assert_restricted(pod: &PodTemplateSpec) {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        let psc = spec.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(UID));
        assert_eq!(psc.run_as_group, Some(GID));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert!(spec.host_network.is_none() && spec.host_pid.is_none());
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
            assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop,
                Some(vec!["ALL".to_owned()])
            );
            assert!(sc.capabilities.as_ref().unwrap().add.is_none());
            assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
            assert!(c.image.as_deref().unwrap().starts_with("ghcr.io/"));
            assert_eq!(c.command.as_ref().unwrap().len(), 1);
            assert!(c.command.as_ref().unwrap()[0].starts_with("/usr/local/bin/spike"));
        }
    }

    #[test]
    fn resources_come_from_the_spec() {
        let r = ComputeResources {
            requests: Some(ResourceList {
                cpu: Some("100m".into()),
                memory: None,
            }),
            limits: Some(ResourceList {
                cpu: None,
                memory: Some("256Mi".into()),
            }),
        };
        let rr = resources(Some(&r)).unwrap();
        assert_eq!(rr.requests.unwrap()["cpu"], Quantity("100m".into()));
        let limits = rr.limits.unwrap();
        assert_eq!(limits["memory"], Quantity("256Mi".into()));
        assert!(!limits.contains_key("cpu"));
        assert!(resources(None).is_none());
        assert!(
            resources(Some(&ComputeResources::default()))
                .unwrap()
                .requests
                .is_none()
        );
    }

    #[test]
    fn the_settings_hash_is_fnv1a() {
        assert_eq!(fnv1a(""), "cbf29ce484222325");
        assert_eq!(fnv1a("a"), "af63dc4c8601ec8c");
        assert_ne!(fnv1a("keepers = [1]"), fnv1a("keepers = [2]"));
    }

    #[test]
    fn pull_policies_are_kubernetes_words() {
        assert_eq!(pull_policy(ImagePullPolicy::Always), "Always");
        assert_eq!(pull_policy(ImagePullPolicy::IfNotPresent), "IfNotPresent");
        assert_eq!(pull_policy(ImagePullPolicy::Never), "Never");
    }
}
