//! `spike-nexus`: see the library docs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use spike_core::net::shutdown_signal;
use spike_core::svid::IdentityArgs;
use spike_core::telemetry::{self, LogFormat};
use spike_nexus::{NexusAddrs, NexusConfig, NexusListeners};

/// SPIKE Nexus: the secret store. Starts sealed and opens itself once `threshold` keepers
/// hand back their shares of the root key.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    identity: IdentityArgs,
    /// mTLS API address.
    #[arg(long, env = "SPIKE_NEXUS_LISTEN", default_value = "0.0.0.0:8553")]
    listen: SocketAddr,
    /// Plain-HTTP address for /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "SPIKE_NEXUS_HEALTH_LISTEN",
        default_value = "0.0.0.0:8554"
    )]
    health_listen: SocketAddr,
    /// Keeper API addresses (host:port), in keeper-index order: the i-th must present
    /// spiffe://<td>/spike/keeper/<i>. Repeat the flag or separate with commas.
    #[arg(
        long = "keeper",
        env = "SPIKE_NEXUS_KEEPERS",
        value_delimiter = ',',
        required = true
    )]
    keepers: Vec<String>,
    /// Persistent data directory (redb). Without it, secrets live in memory only.
    #[arg(long, env = "SPIKE_NEXUS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Audit log file (default: <data-dir>/audit.log, required without --data-dir).
    #[arg(long, env = "SPIKE_NEXUS_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// How often keepers are polled while sealed and checked while open.
    #[arg(long, env = "SPIKE_NEXUS_KEEPER_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    keeper_interval: Duration,
    /// Versions kept per secret.
    #[arg(long, env = "SPIKE_NEXUS_MAX_VERSIONS", default_value_t = 10)]
    max_versions: u32,
    /// Log format.
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    spike_core::tls::install_crypto_provider();
    let args = Args::parse();
    telemetry::init(args.log_format);
    telemetry::exit_code(run(args).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let audit_log = match (&args.audit_log, &args.data_dir) {
        (Some(p), _) => p.clone(),
        (None, Some(d)) => d.join("audit.log"),
        (None, None) => anyhow::bail!("give --audit-log (or --data-dir, which holds it)"),
    };
    let mut config = NexusConfig::new(args.identity.trust_domain.clone(), args.keepers, audit_log);
    config.data_dir = args.data_dir;
    config.keeper_interval = args.keeper_interval;
    config.secret_limits.max_versions = args.max_versions.max(1);
    let source = args.identity.open().await?;
    let store = spike_nexus::open_store(&config)?;
    let listeners = NexusListeners::bind(NexusAddrs {
        api: args.listen,
        health: args.health_listen,
    })
    .await?;
    tracing::info!(api = %args.listen, health = %args.health_listen, "Nexus listening (sealed until keepers answer)");
    let (_nexus, task) =
        spike_nexus::start(config, source, store, listeners, shutdown_signal()).await?;
    task.await?;
    Ok(())
}
