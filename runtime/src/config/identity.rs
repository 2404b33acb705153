//! The `[identity]` section every binary shares: where its SVID comes from.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, duration, opt_path, opt_string};
use crate::svid::IdentityArgs;
use spike_core::id::TrustDomain;

/// The `[identity]` section: where a service gets its SVID.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Trust domain of this deployment.
    pub trust_domain: TrustDomain,
    /// SPIFFE Workload API endpoint; empty: the `SPIFFE_ENDPOINT_SOCKET` convention.
    #[serde(with = "opt_string")]
    pub spiffe_endpoint_socket: Option<String>,
    /// X.509-SVID chain (PEM), instead of the Workload API.
    #[serde(with = "opt_path")]
    pub svid_cert: Option<PathBuf>,
    /// X.509-SVID private key (PEM).
    #[serde(with = "opt_path")]
    pub svid_key: Option<PathBuf>,
    /// Trust bundle (PEM).
    #[serde(with = "opt_path")]
    pub svid_bundle: Option<PathBuf>,
    /// How long to wait at start for a first SVID: from the Workload API, or for the PEM files to appear.
    #[serde(with = "duration")]
    pub svid_timeout: Duration,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            trust_domain: TrustDomain::new("spike.dev").unwrap_or_else(|_| unreachable!()),
            spiffe_endpoint_socket: None,
            svid_cert: None,
            svid_key: None,
            svid_bundle: None,
            svid_timeout: Duration::from_secs(30),
        }
    }
}

impl IdentityConfig {
    /// The SVID source settings as [`IdentityArgs`], after checking the PEM files are given
    /// together.
    pub fn to_args(&self) -> Result<IdentityArgs, ConfigError> {
        let pem = [&self.svid_cert, &self.svid_key, &self.svid_bundle];
        let given = pem.iter().filter(|p| p.is_some()).count();
        if given != 0 && given != 3 {
            return Err(ConfigError::invalid(
                "identity.svid_cert, identity.svid_key and identity.svid_bundle go together: \
                 give all three (PEM files) or none (Workload API)",
            ));
        }
        if self.svid_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "identity.svid_timeout must be longer than zero",
            ));
        }
        Ok(IdentityArgs {
            trust_domain: self.trust_domain.clone(),
            spiffe_endpoint_socket: self.spiffe_endpoint_socket.clone(),
            svid_cert: self.svid_cert.clone(),
            svid_key: self.svid_key.clone(),
            svid_bundle: self.svid_bundle.clone(),
            svid_timeout: self.svid_timeout,
        })
    }
}
