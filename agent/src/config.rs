//! The `spike-agent` binary's configuration: its command line and its settings file.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spike_core::id::TrustDomain;
use spike_runtime::config::service::ServiceArgs;
use spike_runtime::config::{ConfigError, Spec};
use spike_runtime::telemetry::LogFormat;

/// Development SPIFFE Workload API server for SPIKE (dev and test use only; not a SPIRE
/// replacement).
#[derive(Debug, clap::Parser)]
#[command(
    name = "spike-agent",
    version,
    after_help = "Configuration: --config FILE (or SPIKE_AGENT_CONFIG), SPIKE_AGENT_* variables \
                  and flags, in rising precedence. Every key: docs/configuration.md."
)]
pub struct AgentArgs {
    /// The configuration file, `--print-config`, `--set` and the log format.
    #[command(flatten)]
    pub service: ServiceArgs,

    /// Trust domain the local CA issues for.
    #[arg(long)]
    pub trust_domain: Option<TrustDomain>,

    /// Unix socket to serve on. Its directory is
    /// created with mode 0700 and refused if it is accessible to others.
    #[arg(long = "socket")]
    pub socket: Option<PathBuf>,

    /// Registration file (TOML, `[[entry]]` tables). Re-read on SIGHUP. Without it every caller
    /// is denied.
    #[arg(long)]
    pub registrations: Option<PathBuf>,

    /// Lifetime of each X.509-SVID (re-issued at half of it), e.g. `1h`, `90s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub svid_ttl: Option<Duration>,
}

/// The agent's configuration file. Every key has a default; unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// Trust domain the local CA issues for.
    pub trust_domain: TrustDomain,
    /// Unix socket to serve on.
    pub socket: PathBuf,
    /// Registration file; empty denies every caller.
    #[serde(with = "spike_runtime::config::opt_path")]
    pub registrations: Option<PathBuf>,
    /// Lifetime of each X.509-SVID.
    #[serde(with = "spike_runtime::config::duration")]
    pub svid_ttl: Duration,
    /// Log line format.
    #[serde(with = "spike_runtime::config::log_format")]
    pub log_format: LogFormat,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            trust_domain: TrustDomain::new("spike.dev").unwrap_or_else(|_| unreachable!()),
            socket: PathBuf::from("/tmp/spike-agent/agent.sock"),
            registrations: None,
            svid_ttl: Duration::from_secs(3600),
            log_format: LogFormat::Text,
        }
    }
}

impl AgentSettings {
    /// Checks the values the types allow but the agent does not.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.svid_ttl < Duration::from_secs(2) {
            return Err(ConfigError::invalid("svid_ttl must be at least 2s"));
        }
        Ok(())
    }
}

/// How the agent keys map to environment variables. The agent has no `[identity]`: it is the
/// identity provider; its trust domain is the deployment's `SPIKE_TRUST_DOMAIN`.
pub fn spec() -> Spec {
    Spec::new("spike-agent", "SPIKE_AGENT_")
        .legacy_config_env()
        .env("trust_domain", "SPIKE_TRUST_DOMAIN")
        .env("log_format", "SPIKE_LOG_FORMAT")
        .path("socket")
        .path("registrations")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn flags_env_and_file_layer_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, "socket = \"/run/a.sock\"\nsvid_ttl = \"10m\"\n").unwrap();
        let env = vec![("SPIKE_AGENT_SVID_TTL".to_owned(), "5m".to_owned())];
        let l = spec()
            .load::<AgentSettings>(Some(&file), &env, &[])
            .unwrap();
        assert_eq!(l.config.socket, PathBuf::from("/run/a.sock"));
        assert_eq!(l.config.svid_ttl, Duration::from_secs(300));
        std::fs::write(&file, "sokcet = \"/run/a.sock\"\n").unwrap();
        let e = spec()
            .load::<AgentSettings>(Some(&file), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `socket`"), "{e}");
    }

    #[test]
    fn too_short_a_ttl_is_refused() {
        let s = AgentSettings {
            svid_ttl: Duration::from_secs(1),
            ..AgentSettings::default()
        };
        assert!(s.check().unwrap_err().to_string().contains("svid_ttl"));
        assert!(AgentSettings::default().check().is_ok());
    }
}
