//! `SpikeCluster`: one SPIKE deployment (keepers, Nexus, optionally a gateway) in a namespace.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::gateway::GatewaySpec;
use super::status::{AppliedPart, ClusterPhase, Condition};

/// CEL: a resource quantity as the operator accepts it (`500m`, `256Mi`, `1Gi`).
const CEL_QUANTITY: &str = "self.matches('^[0-9]+(\\\\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$')";

/// A SPIKE deployment: a keeper StatefulSet, Nexus with its volume, a bootstrap Job and,
/// optionally, a gateway. Its namespace is the one tenant that may grant `super` and reach
/// other tenants (within the tenancy roots).
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "spike.spiffe.io",
    version = "v1alpha1",
    kind = "SpikeCluster",
    plural = "spikeclusters",
    shortname = "spkc",
    category = "spike",
    namespaced,
    doc = "A SPIKE deployment: keepers, Nexus, bootstrap and optionally a gateway.",
    status = "SpikeClusterStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpikeClusterSpec {
    /// The SPIFFE trust domain every component's identity is in (`spike.example.org`).
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9._-]+$')").message("trustDomain must be lowercase letters, digits, '.', '_' and '-' (no scheme)"))]
    pub trust_domain: String,
    /// The keepers that hold the root key's Shamir shares.
    #[serde(default)]
    pub keepers: KeepersSpec,
    /// Nexus, the secret store.
    #[serde(default)]
    pub nexus: NexusSpec,
    /// The image every component runs.
    #[serde(default)]
    pub images: ImagesSpec,
    /// How pods receive their SPIFFE identity.
    #[serde(default)]
    pub identity: IdentitySpec,
    /// SPIRE `ClusterSPIFFEID` objects for SPIKE's own components.
    #[serde(default)]
    pub cluster_spiffe_ids: ClusterSpiffeIds,
    /// A reference-token gateway; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySpec>,
    /// The first segments of every tenant's path and ID prefixes.
    #[serde(default)]
    pub tenancy: TenancySpec,
    /// While true the operator changes nothing for this cluster.
    #[serde(default)]
    pub paused: bool,
}

/// The keeper StatefulSet. Its pod ordinals start at 1 (`spec.ordinals.start`, Kubernetes
/// 1.31 and later), so pod `<cluster>-keeper-<i>` is keeper `/spike/keeper/<i>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.threshold <= self.replicas").message("keepers.threshold must not exceed keepers.replicas"))]
pub struct KeepersSpec {
    /// How many keepers run (each holds one share). Keeper IDs are 1 to 255.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 255))]
    pub replicas: i32,
    /// How many shares rebuild the root key.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 255))]
    pub threshold: i32,
    /// Requests and limits for each keeper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ComputeResources>,
}

fn default_replicas() -> i32 {
    3
}

fn default_threshold() -> i32 {
    2
}

impl Default for KeepersSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            threshold: default_threshold(),
            resources: None,
        }
    }
}

/// The Nexus StatefulSet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NexusSpec {
    /// Its volume, which is retained when the cluster is deleted.
    #[serde(default)]
    pub storage: StorageSpec,
    /// Requests and limits for Nexus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ComputeResources>,
}

/// A PersistentVolumeClaim's size and class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageSpec {
    /// The requested size (`1Gi`).
    #[serde(default = "default_storage_size")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(CEL_QUANTITY).message("nexus.storage.size must be a quantity such as 1Gi"))]
    pub size: String,
    /// The StorageClass; absent: the cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

fn default_storage_size() -> String {
    "1Gi".into()
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

/// Requests and limits of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComputeResources {
    /// What the scheduler reserves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceList>,
    /// The most the container may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceList>,
}

/// CPU and memory quantities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceList {
    /// CPU (`250m`, `1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(CEL_QUANTITY).message("cpu must be a quantity such as 250m"))]
    pub cpu: Option<String>,
    /// Memory (`128Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(CEL_QUANTITY).message("memory must be a quantity such as 128Mi"))]
    pub memory: Option<String>,
}

/// The one image with every SPIKE binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImagesSpec {
    /// The image reference (`ghcr.io/spike-rs/spike:0.1.0`).
    #[serde(default = "default_image")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new("!self.contains(' ')").message("images.spike must be an image reference without spaces"))]
    pub spike: String,
    /// When the kubelet pulls it.
    #[serde(default)]
    pub pull_policy: ImagePullPolicy,
}

/// The default image: the chart's appVersion.
pub const DEFAULT_IMAGE: &str = "ghcr.io/spike-rs/spike:0.1.0";

fn default_image() -> String {
    DEFAULT_IMAGE.into()
}

impl Default for ImagesSpec {
    fn default() -> Self {
        Self {
            spike: default_image(),
            pull_policy: ImagePullPolicy::default(),
        }
    }
}

/// A container's `imagePullPolicy`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ImagePullPolicy {
    /// Pull when the node lacks it.
    #[default]
    IfNotPresent,
    /// Pull on every start.
    Always,
    /// Never pull.
    Never,
}

/// How pods receive their SPIFFE identity: exactly one of the three.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("(has(self.spireCsi) ? 1 : 0) + (has(self.certManagerCsi) ? 1 : 0) + (has(self.hostPath) ? 1 : 0) == 1").message("identity must set exactly one of spireCsi, certManagerCsi and hostPath"))]
#[x_kube(validation = Rule::new("!has(self.certManagerCsi)").message(CERT_MANAGER_REFUSED))]
pub struct IdentitySpec {
    /// The SPIFFE CSI driver mounts the SPIRE agent's Workload API socket (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spire_csi: Option<SpireCsi>,
    /// cert-manager's csi-driver-spiffe writes the SVID as PEM files. Refused for now: that
    /// driver issues only `spiffe://<td>/ns/<namespace>/sa/<serviceaccount>` IDs, and SPIKE's
    /// components are authorized by their own IDs (`/spike/nexus`, `/spike/keeper/<i>`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager_csi: Option<CertManagerCsi>,
    /// The Workload API socket from a directory on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathSocket>,
}

impl Default for IdentitySpec {
    fn default() -> Self {
        Self {
            spire_csi: Some(SpireCsi::default()),
            cert_manager_csi: None,
            host_path: None,
        }
    }
}

/// Why `certManagerCsi` is refused, at admission and by the controller.
pub const CERT_MANAGER_REFUSED: &str = "identity.certManagerCsi is not supported yet: cert-manager's csi-driver-spiffe issues only spiffe://<td>/ns/<namespace>/sa/<serviceaccount> IDs, and SPIKE's components need their own (spiffe://<td>/spike/nexus, /spike/keeper/<i>, /spike/bootstrap); use spireCsi or hostPath";

/// CEL: a file name within a mounted directory.
const CEL_FILE_NAME: &str = "self.matches('^[A-Za-z0-9._-]+$') && self != '.' && self != '..'";

/// The SPIFFE CSI driver's volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpireCsi {
    /// The CSI driver's name.
    #[serde(default = "default_spire_driver")]
    #[schemars(length(min = 1, max = 253))]
    pub driver: String,
    /// The socket's file name in the volume.
    #[serde(default = "default_socket_name")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(CEL_FILE_NAME).message("socketName must be a file name"))]
    pub socket_name: String,
}

fn default_spire_driver() -> String {
    "csi.spiffe.io".into()
}

fn default_socket_name() -> String {
    "spire-agent.sock".into()
}

impl Default for SpireCsi {
    fn default() -> Self {
        Self {
            driver: default_spire_driver(),
            socket_name: default_socket_name(),
        }
    }
}

/// cert-manager's csi-driver-spiffe volume and its PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertManagerCsi {
    /// The CSI driver's name.
    #[serde(default = "default_cert_manager_driver")]
    #[schemars(length(min = 1, max = 253))]
    pub driver: String,
    /// The SVID certificate chain.
    #[serde(default = "default_cert_file")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(CEL_FILE_NAME).message("certFile must be a file name"))]
    pub cert_file: String,
    /// The SVID's private key.
    #[serde(default = "default_key_file")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(CEL_FILE_NAME).message("keyFile must be a file name"))]
    pub key_file: String,
    /// The trust bundle.
    #[serde(default = "default_ca_file")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(CEL_FILE_NAME).message("caFile must be a file name"))]
    pub ca_file: String,
}

fn default_cert_manager_driver() -> String {
    "spiffe.csi.cert-manager.io".into()
}

fn default_cert_file() -> String {
    "tls.crt".into()
}

fn default_key_file() -> String {
    "tls.key".into()
}

fn default_ca_file() -> String {
    "ca.crt".into()
}

impl Default for CertManagerCsi {
    fn default() -> Self {
        Self {
            driver: default_cert_manager_driver(),
            cert_file: default_cert_file(),
            key_file: default_key_file(),
            ca_file: default_ca_file(),
        }
    }
}

/// A Workload API socket in a node directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPathSocket {
    /// The node directory holding the socket (absolute).
    #[schemars(length(min = 2, max = 1024))]
    #[x_kube(validation = Rule::new("self.matches('^(/[A-Za-z0-9._-]+)+$') && !(self + '/').contains('/../') && !(self + '/').contains('/./')").message("hostPath.path must be an absolute directory without '.' or '..' segments"))]
    pub path: String,
    /// The socket's file name in it.
    #[serde(default = "default_socket_name")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(CEL_FILE_NAME).message("socketName must be a file name"))]
    pub socket_name: String,
}

/// SPIRE `ClusterSPIFFEID` objects for SPIKE's components (Nexus, keepers, bootstrap,
/// operator, gateway), never for anything else. Off by default: the SPIRE administrator
/// usually registers SPIKE.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpiffeIds {
    /// Create them.
    #[serde(default)]
    pub enabled: bool,
    /// The SPIRE controller manager's `className`, if it filters by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,
}

/// CEL: one lowercase path or ID segment.
const CEL_ROOT: &str = "self.matches('^[a-z0-9._-]+$') && self != '.' && self != '..'";
/// CEL: one lowercase ID segment other than `spike`, which SPIKE's components own.
const CEL_ID_ROOT: &str =
    "self.matches('^[a-z0-9._-]+$') && self != '.' && self != '..' && self != 'spike'";

/// The first segments of the tenant prefixes: paths `<pathRoot>/<ns>/…`, IDs
/// `spiffe://<td>/<idRoot>/<ns>/…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenancySpec {
    /// The first segment of every tenant's path prefix.
    #[serde(default = "default_path_root")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(CEL_ROOT).message("tenancy.pathRoot must be one lowercase segment"))]
    pub path_root: String,
    /// The first segment of every tenant's ID prefix; never `spike`.
    #[serde(default = "default_id_root")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(CEL_ID_ROOT).message("tenancy.idRoot must be one lowercase segment other than 'spike'"))]
    pub id_root: String,
}

fn default_path_root() -> String {
    spike_core::tenancy::DEFAULT_PATH_ROOT.into()
}

fn default_id_root() -> String {
    spike_core::tenancy::DEFAULT_ID_ROOT.into()
}

impl Default for TenancySpec {
    fn default() -> Self {
        Self {
            path_root: default_path_root(),
            id_root: default_id_root(),
        }
    }
}

/// What the operator last saw of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpikeClusterStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the cluster is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// Keepers that are ready (each holds its share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_keepers: Option<i32>,
    /// `Bootstrapped`, `Sealed`, `Ready`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The optional parts whose objects the operator applied (`Gateway`, `ClusterSpiffeIds`),
    /// so that dropping one from the spec deletes its objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub applied_parts: Vec<AppliedPart>,
}
