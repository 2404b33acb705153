//! `spike-agent`: a development SPIFFE Workload API server. See the library docs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use spike_agent::{AgentConfig, load_registrations};
use spike_core::id::TrustDomain;
use tokio::signal::unix::{SignalKind, signal};

/// Development SPIFFE Workload API server for SPIKE (dev and test use only; not a SPIRE
/// replacement).
#[derive(Debug, Parser)]
#[command(name = "spike-agent", version)]
struct Cli {
    /// Trust domain the local CA issues for.
    #[arg(long, env = "SPIKE_TRUST_DOMAIN", default_value = "spike.dev")]
    trust_domain: TrustDomain,

    /// Unix socket to serve on. Its directory is created with mode 0700 and refused if it is
    /// accessible to others.
    #[arg(
        long = "socket",
        env = "SPIKE_AGENT_SOCKET",
        default_value = "/tmp/spike-agent/agent.sock"
    )]
    socket: PathBuf,

    /// Registration file (TOML, `[[entry]]` tables). Re-read on SIGHUP. Without it every caller
    /// is denied.
    #[arg(long, env = "SPIKE_AGENT_REGISTRATIONS")]
    registrations: Option<PathBuf>,

    /// Lifetime of each X.509-SVID (re-issued at half of it), e.g. `1h`, `90s`.
    #[arg(long, env = "SPIKE_AGENT_SVID_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    svid_ttl: Duration,

    /// Log line format.
    #[arg(long, env = "SPIKE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);

    let registrations = match &cli.registrations {
        Some(path) => load_registrations(path, &cli.trust_domain)?,
        None => Vec::new(),
    };
    let mut config = AgentConfig::new(cli.trust_domain.clone(), cli.socket.clone());
    config.svid_ttl = cli.svid_ttl;
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
            _ = hup.recv() => reload(&cli, &agent),
        }
    }
    agent.shutdown().await?;
    Ok(())
}

/// Re-reads the registration file; a bad file is logged and changes nothing.
fn reload(cli: &Cli, agent: &spike_agent::AgentHandle) {
    let Some(path) = &cli.registrations else {
        tracing::info!("SIGHUP received, but no registration file is configured");
        return;
    };
    let result = load_registrations(path, &cli.trust_domain)
        .map_err(spike_agent::AgentError::from)
        .and_then(|regs| agent.set_registrations(regs));
    match result {
        Ok(()) => tracing::info!(file = %path.display(), "registrations reloaded"),
        Err(e) => tracing::error!(error = %e, "registrations NOT reloaded; the previous set stays"),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
