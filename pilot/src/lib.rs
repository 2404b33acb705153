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
    if let Command::Dev(args) = cli.command {
        return commands::dev::run(args, g.identity.trust_domain).await;
    }
    let source = g
        .identity
        .open()
        .await
        .map_err(|e| CliError::Other(anyhow::anyhow!("cannot get an SVID: {e}")))?;
    let nexus = Nexus::new(&g.nexus, source, g.timeout)?;
    match cli.command {
        Command::Secret(c) => commands::secret::run(&nexus, g.output, c).await,
        Command::Policy(c) => commands::policy::run(&nexus, g.output, c).await,
        Command::Audit(c) => commands::audit::run(&nexus, g.output, c).await,
        Command::Cipher(c) => commands::cipher::run(&nexus, g.output, c).await,
        Command::Operator(c) => commands::operator::run(&nexus, g.output, c).await,
        Command::Bootstrap(a) => commands::bootstrap::run(&nexus, g.output, a).await,
        Command::Status => commands::status::run(&nexus, g.output).await,
        Command::Dev(_) => Ok(()),
    }
}

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
