//! How a pod receives its SPIFFE identity (`spec.identity`): the volume holding the Workload
//! API socket, where it is mounted, and the `[identity]` setting that points the component at it.
//!
//! Only socket modes build: `certManagerCsi` is refused by validation (its driver cannot issue
//! the `/spike/...` IDs the components are authorized by).

use k8s_openapi::api::core::v1::{CSIVolumeSource, HostPathVolumeSource, Volume, VolumeMount};

use crate::crd::IdentitySpec;

use super::BuildError;
use super::pod::volume_mount;

/// The volume's name in every pod.
const VOLUME: &str = "spiffe-identity";
/// Where the Workload API socket's directory is mounted.
pub const SOCKET_DIR: &str = "/run/spiffe/workload-api";

/// The identity volume, its read-only mount, and the socket the settings name.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The pod volume.
    pub volume: Volume,
    /// Its mount in the component's container.
    pub mount: VolumeMount,
    /// `identity.spiffe_endpoint_socket` (`unix:///…`).
    pub socket: String,
}

/// The delivery of `spec.identity` (validated: exactly one socket mode is set).
pub fn delivery(identity: &IdentitySpec) -> Result<Delivery, BuildError> {
    if let Some(spire) = &identity.spire_csi {
        return Ok(Delivery {
            volume: Volume {
                name: VOLUME.into(),
                csi: Some(CSIVolumeSource {
                    driver: spire.driver.clone(),
                    read_only: Some(true),
                    ..CSIVolumeSource::default()
                }),
                ..Volume::default()
            },
            mount: volume_mount(VOLUME, SOCKET_DIR),
            socket: format!("unix://{SOCKET_DIR}/{}", spire.socket_name),
        });
    }
    if let Some(host) = &identity.host_path {
        return Ok(Delivery {
            volume: Volume {
                name: VOLUME.into(),
                host_path: Some(HostPathVolumeSource {
                    path: host.path.clone(),
                    // The agent creates the directory; a pod must not create an empty one.
                    type_: Some("Directory".into()),
                }),
                ..Volume::default()
            },
            mount: volume_mount(VOLUME, SOCKET_DIR),
            socket: format!("unix://{SOCKET_DIR}/{}", host.socket_name),
        });
    }
    Err(BuildError::Identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CertManagerCsi, HostPathSocket};

    #[test]
    fn spire_csi_mounts_the_socket_read_only() {
        let d = delivery(&IdentitySpec::default()).unwrap();
        let csi = d.volume.csi.unwrap();
        assert_eq!(csi.driver, "csi.spiffe.io");
        assert_eq!(csi.read_only, Some(true));
        assert_eq!(d.mount.mount_path, SOCKET_DIR);
        assert_eq!(d.mount.read_only, Some(true));
        assert_eq!(d.socket, "unix:///run/spiffe/workload-api/spire-agent.sock");
    }

    #[test]
    fn cert_manager_csi_does_not_build() {
        let spec = IdentitySpec {
            spire_csi: None,
            cert_manager_csi: Some(CertManagerCsi::default()),
            host_path: None,
        };
        assert!(matches!(delivery(&spec), Err(BuildError::Identity)));
    }

    #[test]
    fn host_path_needs_the_directory_to_exist() {
        let spec = IdentitySpec {
            spire_csi: None,
            cert_manager_csi: None,
            host_path: Some(HostPathSocket {
                path: "/run/spire/sockets".into(),
                socket_name: "agent.sock".into(),
            }),
        };
        let d = delivery(&spec).unwrap();
        let hp = d.volume.host_path.unwrap();
        assert_eq!(hp.path, "/run/spire/sockets");
        assert_eq!(hp.type_.as_deref(), Some("Directory"));
        assert_eq!(d.mount.read_only, Some(true));
        assert_eq!(d.socket, "unix:///run/spiffe/workload-api/agent.sock");
    }

    #[test]
    fn no_mode_is_an_error() {
        let spec = IdentitySpec {
            spire_csi: None,
            cert_manager_csi: None,
            host_path: None,
        };
        assert!(matches!(delivery(&spec), Err(BuildError::Identity)));
    }
}
