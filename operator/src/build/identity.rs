//! How a pod receives its SPIFFE identity (`spec.identity`): the volume, where it is mounted,
//! and the `[identity]` settings that point the component at it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{CSIVolumeSource, HostPathVolumeSource, Volume, VolumeMount};

use crate::crd::IdentitySpec;

use super::BuildError;
use super::pod::{GID, volume_mount};

/// The volume's name in every pod.
const VOLUME: &str = "spiffe-identity";
/// Where a Workload API socket's directory is mounted.
pub const SOCKET_DIR: &str = "/run/spiffe/workload-api";
/// Where csi-driver-spiffe's PEM files are mounted.
pub const PEM_DIR: &str = "/run/spiffe/svid";
/// csi-driver-spiffe's volume attribute that makes the key readable by a group (the pods run
/// as uid/gid 65532, not root).
const CERT_MANAGER_FS_GROUP: &str = "spiffe.csi.cert-manager.io/fs-group";

/// Where a component's settings say its SVID comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// `identity.spiffe_endpoint_socket` (`unix:///…`).
    Socket(String),
    /// `identity.svid_cert`, `svid_key`, `svid_bundle`: absolute PEM file paths.
    Pem {
        /// The certificate chain.
        cert: String,
        /// The private key.
        key: String,
        /// The trust bundle.
        bundle: String,
    },
}

/// The identity volume, its read-only mount, and the settings.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The pod volume.
    pub volume: Volume,
    /// Its mount in the component's container.
    pub mount: VolumeMount,
    /// What the settings file says.
    pub source: IdentitySource,
}

/// The delivery of `spec.identity` (validated: exactly one mode is set).
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
            source: IdentitySource::Socket(format!("unix://{SOCKET_DIR}/{}", spire.socket_name)),
        });
    }
    if let Some(cm) = &identity.cert_manager_csi {
        return Ok(Delivery {
            volume: Volume {
                name: VOLUME.into(),
                csi: Some(CSIVolumeSource {
                    driver: cm.driver.clone(),
                    read_only: Some(true),
                    volume_attributes: Some(BTreeMap::from([(
                        CERT_MANAGER_FS_GROUP.into(),
                        GID.to_string(),
                    )])),
                    ..CSIVolumeSource::default()
                }),
                ..Volume::default()
            },
            mount: volume_mount(VOLUME, PEM_DIR),
            source: IdentitySource::Pem {
                cert: format!("{PEM_DIR}/{}", cm.cert_file),
                key: format!("{PEM_DIR}/{}", cm.key_file),
                bundle: format!("{PEM_DIR}/{}", cm.ca_file),
            },
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
            source: IdentitySource::Socket(format!("unix://{SOCKET_DIR}/{}", host.socket_name)),
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
        assert_eq!(
            d.source,
            IdentitySource::Socket("unix:///run/spiffe/workload-api/spire-agent.sock".into())
        );
    }

    #[test]
    fn cert_manager_csi_gives_pem_paths_readable_by_the_pods_group() {
        let spec = IdentitySpec {
            spire_csi: None,
            cert_manager_csi: Some(CertManagerCsi::default()),
            host_path: None,
        };
        let d = delivery(&spec).unwrap();
        let csi = d.volume.csi.unwrap();
        assert_eq!(csi.driver, "spiffe.csi.cert-manager.io");
        assert_eq!(csi.read_only, Some(true));
        assert_eq!(
            csi.volume_attributes.unwrap()[CERT_MANAGER_FS_GROUP],
            "65532"
        );
        assert_eq!(
            d.source,
            IdentitySource::Pem {
                cert: "/run/spiffe/svid/tls.crt".into(),
                key: "/run/spiffe/svid/tls.key".into(),
                bundle: "/run/spiffe/svid/ca.crt".into(),
            }
        );
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
        assert_eq!(
            d.source,
            IdentitySource::Socket("unix:///run/spiffe/workload-api/agent.sock".into())
        );
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
