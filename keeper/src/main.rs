//! `spike-keeper`: see the library docs.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use spike_keeper::{KeeperArgs, KeeperListeners};
use spike_runtime::config::ConfigError;
use spike_runtime::net::shutdown_signal;
use spike_runtime::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    spike_runtime::tls::install_crypto_provider();
    let cmd = KeeperArgs::command();
    let matches = cmd.clone().get_matches();
    let args = KeeperArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let loaded = match spike_keeper::load(&cmd, &matches, &args) {
        Ok(l) => l,
        Err(e) => return config_error(&e),
    };
    if args.config.print_config {
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
        return match spike_keeper::spec().render(&loaded.config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        };
    }
    let (addrs, identity, limits) = match loaded.config.check() {
        Ok(parts) => parts,
        Err(e) => return config_error(&e),
    };
    telemetry::init(loaded.config.log_format);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    telemetry::exit_code(
        async {
            let source = identity.open().await?;
            // The keeper's index comes from its first SVID; a reload to another ID is refused.
            source.expect_id(&source.current().id().clone())?;
            let listeners = KeeperListeners::bind(addrs).await?;
            let (_handle, task) =
                spike_keeper::start_with(source, listeners, limits, shutdown_signal())?;
            task.await?;
            anyhow::Ok(())
        }
        .await,
    )
}

/// A configuration error: said once, exit status 2 (like a usage error).
fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}
