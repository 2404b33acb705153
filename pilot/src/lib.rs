//! The `spike` CLI as a library, so `spike dev` and tests reuse the same code.
//!
//! `cli` parses, `commands` runs one subcommand each, `client` talks to Nexus and defines the
//! exit codes scripts rely on.

#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod output;

use std::process::ExitCode;

use cli::{Cli, Command};
use client::{CliError, CliResult, Nexus};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> CliResult<()> {
    let g = cli.global;
    // Commands that need no identity, or tolerate its absence.
    let command = match cli.command {
        Command::Dev(args) => return commands::dev::run(args, g.identity.trust_domain).await,
        Command::Completions { shell } => return commands::completions::run(shell),
        Command::Version => {
            let nexus = match tokio::time::timeout(VERSION_TIMEOUT, g.identity.open()).await {
                Ok(Ok(source)) => Nexus::new(&g.nexus, source, g.timeout.min(VERSION_TIMEOUT))
                    .map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(format!("no SVID to ask it with: {e}")),
                Err(_) => Err(format!(
                    "no SVID within {}s to ask it with",
                    VERSION_TIMEOUT.as_secs()
                )),
            };
            return commands::status::version(nexus, &g.nexus, g.output).await;
        }
        Command::Operator(c) if c.needs_no_nexus() => {
            // `keygen` makes a custodian key locally.
            return commands::operator::run_local(g.output, c);
        }
        Command::Import(c) if c.needs_no_nexus() => {
            // Reading a source into an export file does not involve Nexus.
            return commands::import::run(None, g.output, c).await;
        }
        other => other,
    };
    let source = g
        .identity
        .open()
        .await
        .map_err(|e| CliError::Other(anyhow::anyhow!("cannot get an SVID: {e}")))?;
    let nexus = Nexus::new(&g.nexus, source, g.timeout)?;
    match command {
        Command::Secret(c) => commands::secret::run(&nexus, g.output, c).await,
        Command::Policy(c) => commands::policy::run(&nexus, g.output, c).await,
        Command::Audit(c) => commands::audit::run(&nexus, g.output, c).await,
        Command::Cipher(c) => commands::cipher::run(&nexus, g.output, c).await,
        Command::Operator(c) => commands::operator::run(&nexus, g.output, c).await,
        Command::Bootstrap(a) => commands::bootstrap::run(&nexus, g.output, a).await,
        Command::Status => commands::status::run(&nexus, g.output).await,
        Command::Seed(a) => commands::seed::run(&nexus, g.output, a).await,
        Command::Import(c) => commands::import::run(Some(&nexus), g.output, c).await,
        Command::Dev(_) | Command::Completions { .. } | Command::Version => Ok(()),
    }
}

/// `spike version` waits at most this long for Nexus.
const VERSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Prints an error with its hint and returns the exit code.
pub fn report(e: &CliError) -> ExitCode {
    eprintln!("error: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        eprintln!("  caused by: {s}");
        source = s.source();
    }
    if let Some(h) = e.hint() {
        eprintln!("hint: {h}");
    }
    e.exit_code()
}
