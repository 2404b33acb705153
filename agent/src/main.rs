//! `spike-agent`: a development SPIFFE Workload API server. See the library docs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches, Parser};
use serde::{Deserialize, Serialize};
use spike_agent::{AgentConfig, load_registrations};
use spike_core::id::TrustDomain;
use spike_runtime::config::{ConfigArgs, ConfigError, Spec};
use spike_runtime::telemetry::{self, LogFormat};
use tokio::signal::unix::{SignalKind, signal};

/// Development SPIFFE Workload API server for SPIKE (dev and test use only; not a SPIRE
/// replacement).
#[derive(Debug, Parser)]
#[command(
    name = "spike-agent",
    version,
    after_help = "Configuration: --config FILE (or SPIKE_CONFIG), SPIKE_AGENT_* variables and \
                  flags, in rising precedence. Every key: docs/configuration.md."
)]
struct Cli {
    /// The configuration file and `--print-config`.
    #[command(flatten)]
    config: ConfigArgs,

    /// Trust domain the local CA issues for [default: spike.dev].
    #[arg(long)]
    trust_domain: Option<TrustDomain>,

    /// Unix socket to serve on [default: /tmp/spike-agent/agent.sock]. Its directory is
    /// created with mode 0700 and refused if it is accessible to others.
    #[arg(long = "socket")]
    socket: Option<PathBuf>,

    /// Registration file (TOML, `[[entry]]` tables). Re-read on SIGHUP. Without it every caller
    /// is denied.
    #[arg(long)]
    registrations: Option<PathBuf>,

    /// Lifetime of each X.509-SVID (re-issued at half of it), e.g. `1h`, `90s` [default: 1h].
    #[arg(long, value_parser = humantime::parse_duration)]
    svid_ttl: Option<Duration>,

    /// Log line format [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

/// The agent's configuration file. Every key has a default; unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    /// Trust domain the local CA issues for.
    trust_domain: TrustDomain,
    /// Unix socket to serve on.
    socket: PathBuf,
    /// Registration file; empty denies every caller.
    #[serde(with = "spike_runtime::config::opt_path")]
    registrations: Option<PathBuf>,
    /// Lifetime of each X.509-SVID.
    #[serde(with = "spike_runtime::config::duration")]
    svid_ttl: Duration,
    /// Log line format.
    #[serde(with = "spike_runtime::config::log_format")]
    log_format: LogFormat,
}

impl Default for Settings {
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

/// How the agent keys map to environment variables and flags.
fn spec() -> Spec {
    Spec::new("spike-agent", "SPIKE_AGENT_")
        .env("trust_domain", "SPIKE_TRUST_DOMAIN")
        .env("log_format", "SPIKE_LOG_FORMAT")
        .flag("trust_domain", "trust_domain")
        .flag("socket", "socket")
        .flag("registrations", "registrations")
        .flag("svid_ttl", "svid_ttl")
        .flag("log_format", "log_format")
}

fn main() -> ExitCode {
    let cmd = Cli::command();
    let matches = cmd.clone().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let loaded = match spec().load_cli::<Settings>(&cmd, &matches, &cli.config) {
        Ok(l) => l,
        Err(e) => return config_error(&e),
    };
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    if cli.config.print_config {
        return match spec().render(&loaded.config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        };
    }
    if loaded.config.svid_ttl < Duration::from_secs(2) {
        return config_error(&ConfigError::invalid("svid_ttl must be at least 2s"));
    }
    telemetry::init(loaded.config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::exit_code(runtime.block_on(run(loaded.config)))
}

/// A configuration error: said once, exit status 2 (like a usage error).
fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let registrations = match &settings.registrations {
        Some(path) => load_registrations(path, &settings.trust_domain)?,
        None => Vec::new(),
    };
    let mut config = AgentConfig::new(settings.trust_domain.clone(), settings.socket.clone());
    config.svid_ttl = settings.svid_ttl;
    config.registrations = registrations;

    let agent = spike_agent::start(config)
        .await
        .context("cannot start the agent")?;

    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                r.context("cannot listen for SIGINT")?;
                tracing::info!("SIGINT received, shutting down");
                break;
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM received, shutting down");
                break;
            }
            _ = hup.recv() => reload(&settings, &agent),
        }
    }
    agent.shutdown().await?;
    Ok(())
}

/// Re-reads the registration file; a bad file is logged and changes nothing.
fn reload(settings: &Settings, agent: &spike_agent::AgentHandle) {
    let Some(path) = &settings.registrations else {
        tracing::info!("SIGHUP received, but no registration file is configured");
        return;
    };
    let result = load_registrations(path, &settings.trust_domain)
        .map_err(spike_agent::AgentError::from)
        .and_then(|regs| agent.set_registrations(regs));
    match result {
        Ok(()) => tracing::info!(file = %path.display(), "registrations reloaded"),
        Err(e) => tracing::error!(error = %e, "registrations NOT reloaded; the previous set stays"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn docs_list_every_key_with_its_env_flag_and_default() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
        )
        .unwrap();
        let rows = spec().reference::<Settings>(&Cli::command()).unwrap();
        if let Err(e) = spike_runtime::config::check_reference(&doc, "spike-agent", &rows) {
            panic!("{e}");
        }
    }

    #[test]
    fn flags_env_and_file_layer_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, "socket = \"/run/a.sock\"\nsvid_ttl = \"10m\"\n").unwrap();
        let env = vec![("SPIKE_AGENT_SVID_TTL".to_owned(), "5m".to_owned())];
        let l = spec().load::<Settings>(Some(&file), &env, &[]).unwrap();
        assert_eq!(l.config.socket, PathBuf::from("/run/a.sock"));
        assert_eq!(l.config.svid_ttl, Duration::from_secs(300));
        std::fs::write(&file, "sokcet = \"/run/a.sock\"\n").unwrap();
        let e = spec()
            .load::<Settings>(Some(&file), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `socket`"), "{e}");
    }
}
