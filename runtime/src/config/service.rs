//! The one `main` of every SPIKE service (`spike-nexus`, `spike-keeper`, `spike-agent`):
//! parse the command line, load the configuration, answer `--print-config`, check the
//! settings, start logging, run, and turn the outcome into the exit status, saying each
//! failure once.

use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::FromArgMatches;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ConfigArgs, ConfigError, Spec};
use crate::svid::IdentityArgs;
use crate::telemetry::{self, LogFormat};

/// Flags every service has: the configuration ones and the log format (declared here once;
/// the key is the top-level `log_format` of each service, variable `SPIKE_LOG_FORMAT`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServiceArgs {
    /// The configuration file, `--print-config` and `--set`.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Log line format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

impl Spec {
    /// The spec of a service: [`Spec::new`] with the identity keys, the shared
    /// `SPIKE_LOG_FORMAT`, and the deprecated `SPIKE_CONFIG` still read as a fallback.
    pub fn service(binary: &'static str, env_prefix: &'static str) -> Self {
        Self::new(binary, env_prefix)
            .legacy_config_env()
            .with_identity()
            .env("log_format", "SPIKE_LOG_FORMAT")
    }
}

/// The flags of a service with an mTLS API and a plain-HTTP health listener (Nexus and the
/// keepers): its identity, the configuration flags and the two addresses.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Where the SVID comes from.
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// The configuration file, `--print-config`, `--set` and the log format.
    #[command(flatten)]
    pub service: ServiceArgs,
    /// mTLS API address.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Plain-HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
    /// Lock all memory (mlockall) before any key is held, so keys, shares and secret values
    /// never reach swap. Needs CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK; the service
    /// does not start without it.
    #[arg(long)]
    pub mlock: bool,
}

/// A service's error, as its `run` returns it (`anyhow::Error` converts into it).
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Runs a service: `cmd` is its clap command (with [`ConfigArgs`] flattened in), `spec` maps
/// its settings `T`, `check` turns the loaded settings into what `run` needs and the log
/// format, and `run` is the service itself.
///
/// Exit status: 0 when `run` ends well, 2 for a usage or configuration error (said on one
/// `error:` line before logging starts), 1 when core dumps cannot be disabled (an `error:`
/// line) or when `run` fails (one ERROR log line with the cause chain, each cause's text once).
pub fn main<T, R, Fut, E>(
    cmd: clap::Command,
    spec: &Spec,
    check: impl FnOnce(T) -> Result<(R, LogFormat), ConfigError>,
    run: impl FnOnce(R) -> Fut,
) -> ExitCode
where
    T: Serialize + DeserializeOwned + Default,
    Fut: Future<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    crate::tls::install_crypto_provider();
    // Before any setting is read or any key held: a crash must not leave a core file.
    if let Err(e) = crate::hardening::disable_core_dumps() {
        eprintln!("error: {}", error_chain(&e));
        return ExitCode::FAILURE;
    }
    let cmd = match spec.show_defaults::<T>(cmd) {
        Ok(cmd) => cmd,
        Err(e) => return config_error(&e),
    };
    let matches = cmd.clone().get_matches();
    let args = ConfigArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let loaded = match spec.load_cli::<T>(&cmd, &matches, &args) {
        Ok(l) => l,
        Err(e) => return config_error(&e),
    };
    if args.print_config {
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
        return match spec.render(&loaded.config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        };
    }
    let (runtime_config, log_format) = match check(loaded.config) {
        Ok(parts) => parts,
        Err(e) => return config_error(&e),
    };
    telemetry::init(log_format);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| BoxError::from(format!("cannot start the async runtime: {e}")))
        .and_then(|rt| rt.block_on(run(runtime_config)).map_err(Into::into));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Logging is up: the log line is the one report (in the chosen format), no
            // second `error:` line on stderr.
            tracing::error!("{}", error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// A configuration error: said once, exit status 2 (like a usage error).
fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("error: {}", error_chain(e));
    ExitCode::from(2)
}

/// The texts of `e` and its sources, leaving out a source whose text an earlier one already
/// shows (an error that prints its source, like `"{0}"` over an `io::Error`, would otherwise
/// say it twice).
pub fn causes(e: &(dyn Error + 'static)) -> Vec<String> {
    let mut out: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.iter().any(|shown| shown.contains(&text)) {
            out.push(text);
        }
        source = s.source();
    }
    out
}

/// `e` and its sources on one line, `outer: inner`, each text once.
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    causes(e).join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Demo {
        #[error("{0}")]
        Repeats(#[source] std::io::Error),
        #[error("cannot bind 127.0.0.1:1")]
        Wraps(#[source] Box<Self>),
    }

    #[test]
    fn a_source_already_shown_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let e = Demo::Wraps(Box::new(Demo::Repeats(io)));
        assert_eq!(
            error_chain(&e),
            "cannot bind 127.0.0.1:1: Address already in use"
        );
        let boxed: BoxError = anyhow::Error::new(e).context("Nexus stopped").into();
        assert_eq!(
            error_chain(boxed.as_ref()),
            "Nexus stopped: cannot bind 127.0.0.1:1: Address already in use"
        );
    }
}
