//! `spike-keeper`: see the library docs.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use spike_core::net::shutdown_signal;
use spike_core::svid::IdentityArgs;
use spike_core::telemetry::{self, LogFormat};
use spike_keeper::{KeeperAddrs, KeeperListeners};

/// Holds one Shamir share of the SPIKE root key in memory and serves it only to Nexus.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    identity: IdentityArgs,
    /// mTLS API address (Nexus only).
    #[arg(long, env = "SPIKE_KEEPER_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Plain-HTTP health address (/healthz, /readyz).
    #[arg(
        long,
        env = "SPIKE_KEEPER_HEALTH_LISTEN",
        default_value = "0.0.0.0:8444"
    )]
    health_listen: SocketAddr,
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
    let source = args.identity.open().await?;
    let listeners = KeeperListeners::bind(KeeperAddrs {
        api: args.listen,
        health: args.health_listen,
    })
    .await?;
    let (_handle, task) = spike_keeper::start(source, listeners, shutdown_signal())?;
    task.await?;
    Ok(())
}
