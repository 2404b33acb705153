//! The keeper's configuration: its command line, its settings file and their checks.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spike_runtime::config::service::ServerArgs;
use spike_runtime::config::{ConfigError, IdentityConfig, Spec};
use spike_runtime::net::ConnLimits;
use spike_runtime::svid::IdentityArgs;
use spike_runtime::telemetry::LogFormat;

use crate::KeeperAddrs;

/// The `spike-keeper` command line. Every flag overrides the configuration file and the
/// environment; `--set KEY=VALUE` reaches the keys without a flag of their own.
#[derive(Debug, clap::Parser)]
#[command(
    name = "spike-keeper",
    version,
    about = "Holds one Shamir share of the SPIKE root key in memory and serves it only to Nexus.",
    after_help = "Configuration: --config FILE (or SPIKE_KEEPER_CONFIG), SPIKE_KEEPER_* variables and \
                  flags, in rising precedence. Every key: docs/configuration.md."
)]
pub struct KeeperArgs {
    /// Identity, configuration and listener flags.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// The keeper configuration file. Every key has a default; unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeeperSettings {
    /// mTLS API address.
    pub listen: SocketAddr,
    /// Plain-HTTP health address.
    pub health_listen: SocketAddr,
    /// Log line format.
    #[serde(with = "spike_runtime::config::log_format")]
    pub log_format: LogFormat,
    /// Lock all memory (mlockall) before any share is held.
    pub mlock: bool,
    /// `[identity]`: where the SVID comes from.
    pub identity: IdentityConfig,
    /// `[server]`: connection limits of the mTLS API.
    pub server: ConnLimits,
}

impl Default for KeeperSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            health_listen: SocketAddr::from(([0, 0, 0, 0], 8444)),
            log_format: LogFormat::Text,
            mlock: false,
            identity: IdentityConfig::default(),
            // A keeper has one client (Nexus), which reconnects every few seconds.
            server: ConnLimits {
                max_connections: 64,
                drain_timeout: Duration::from_secs(5),
                ..ConnLimits::default()
            },
        }
    }
}

/// How the keeper keys map to environment variables. `SPIKE_KEEPER_INDEX` starts with the
/// keeper's prefix but is the dev agent's selector for keeper identities, no keeper setting.
pub fn spec() -> Spec {
    Spec::service("spike-keeper", "SPIKE_KEEPER_").foreign_env("SPIKE_KEEPER_INDEX")
}

impl KeeperSettings {
    /// Checks the settings; returns the addresses, identity and limits to start with.
    pub fn check(&self) -> Result<(KeeperAddrs, IdentityArgs, ConnLimits), ConfigError> {
        self.server.validate().map_err(ConfigError::Invalid)?;
        Ok((
            KeeperAddrs {
                api: self.listen,
                health: self.health_listen,
            },
            self.identity.to_args()?,
            self.server,
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_limits_refused() {
        assert!(KeeperSettings::default().check().is_ok());
        let mut s = KeeperSettings::default();
        s.server.max_headers = 0;
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("server.max_headers"), "{e}");
    }
}
