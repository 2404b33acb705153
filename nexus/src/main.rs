//! `spike-nexus`: see the library docs.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use spike_core::id::Builtin;
use spike_nexus::NexusListeners;
use spike_nexus::config::{self, NexusArgs, Runtime};
use spike_runtime::net::shutdown_signal;
use spike_runtime::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    spike_runtime::tls::install_crypto_provider();
    let cmd = NexusArgs::command();
    let matches = cmd.clone().get_matches();
    let args = NexusArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let loaded = match config::load(&cmd, &matches, &args) {
        Ok(l) => l,
        Err(e) => return config_error(&e),
    };
    if args.config.print_config {
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
        return match config::spec().render(&loaded.config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        };
    }
    let runtime = match loaded.config.into_runtime() {
        Ok(r) => r,
        Err(e) => return config_error(&e),
    };
    telemetry::init(runtime.log_format);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    telemetry::exit_code(run(runtime).await)
}

/// A configuration error: said once, exit status 2 (like a usage error).
fn config_error(e: &spike_runtime::config::ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

async fn run(rt: Runtime) -> anyhow::Result<()> {
    let source = rt.identity.open().await?;
    // A reload to another workload's SVID (say a keeper's) must be refused, not served.
    source.expect_id(&Builtin::Nexus.id(source.trust_domain()))?;
    let store = spike_nexus::open_store(&rt.config)?;
    let listeners = NexusListeners::bind(rt.addrs).await?;
    tracing::info!(api = %rt.addrs.api, health = %rt.addrs.health, "Nexus listening (sealed until keepers answer)");
    let (_nexus, task) =
        spike_nexus::start(rt.config, source, store, listeners, shutdown_signal()).await?;
    task.await?;
    tracing::info!("Nexus stopped");
    Ok(())
}
