//! `spike`: the SPIKE command-line interface.

use std::process::ExitCode;

use spike::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    spike_runtime::tls::install_crypto_provider();
    // The CLI holds secret values it reads or writes, and `spike dev` the root key and every
    // share: a crash must leave no core file with them.
    if let Err(e) = spike_runtime::hardening::disable_core_dumps() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::try_parse_recording(std::env::args_os()).unwrap_or_else(|e| e.exit());
    // Commands print results on stdout; logs (warnings and up unless RUST_LOG says otherwise)
    // go to stderr so scripts can parse stdout.
    let default = if matches!(cli.command, Some(spike::cli::Command::Dev(_))) {
        "info"
    } else {
        "warn"
    };
    spike_runtime::telemetry::init_with_default(spike_runtime::telemetry::LogFormat::Text, default);
    match spike::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => spike::report(&e),
    }
}
