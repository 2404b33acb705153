//! The `spike` CLI as a library, so `spike dev` and tests reuse the same code.
//!
//! `cli` parses, `commands` runs one subcommand each, `client` talks to Nexus and defines the
//! exit codes scripts rely on.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod output;
pub mod settings;

use std::process::ExitCode;

use cli::{Cli, Command};
use client::{CliError, CliResult, Nexus};
use spike_runtime::svid::Patience;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> CliResult<()> {
    // The effective settings: flags over environment over the configuration file over
    // defaults. A bad configuration is a usage error (exit status 2), like a bad flag.
    let loaded = settings::load(&cli.global).map_err(|e| CliError::Usage(e.to_string()))?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let s = loaded.config;
    if cli.global.print_config {
        let text = settings::spec()
            .render(&s)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        print!("{text}");
        return Ok(());
    }
    // Checked only where an SVID is needed: `spike dev` and local commands run without one.
    let identity = s.identity.to_args();
    // Commands that need no identity, or tolerate its absence.
    let Some(command) = cli.command else {
        // What clap does for a missing subcommand: show the commands, exit 2.
        let help = settings::command()
            .map_err(|e| CliError::Usage(e.to_string()))?
            .render_help();
        eprintln!("{help}");
        return Err(CliError::Usage("a command is missing".into()));
    };
    let command = match command {
        Command::Dev(args) => return commands::dev::run(args, s.identity.trust_domain).await,
        Command::Completions { shell } => return commands::completions::run(shell),
        Command::Version => {
            let opened = match identity {
                Ok(id) => tokio::time::timeout(VERSION_TIMEOUT, id.open_with(Patience::Command))
                    .await
                    .map(|r| r.map_err(|e| e.to_string())),
                Err(e) => Ok(Err(e.to_string())),
            };
            let nexus = match opened {
                Ok(Ok(source)) => Nexus::new(&s.nexus, source, s.timeout.min(VERSION_TIMEOUT))
                    .map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(format!("no SVID to ask it with: {e}")),
                Err(_) => Err(format!(
                    "no SVID within {}s to ask it with",
                    VERSION_TIMEOUT.as_secs()
                )),
            };
            return commands::status::version(nexus, &s.nexus, s.output).await;
        }
        Command::Operator(c) if c.needs_no_nexus() => {
            // `keygen` makes a custodian key locally.
            return commands::operator::run_local(s.output, c);
        }
        Command::Import(c) if c.needs_no_nexus() => {
            // Reading a source into an export file does not involve Nexus.
            return commands::import::run(None, s.output, c).await;
        }
        Command::Seed(a) => {
            // The whole file is checked before an SVID is fetched: its mistakes show (exit 2)
            // without a server.
            let seed = commands::seed::load(&a.file)?;
            let nexus = connect(identity, &s).await?;
            return commands::seed::run(&nexus, s.output, a, seed).await;
        }
        other => other,
    };
    let nexus = connect(identity, &s).await?;
    let out = s.output;
    match command {
        Command::Secret(c) => commands::secret::run(&nexus, out, c).await,
        Command::Policy(c) => commands::policy::run(&nexus, out, c).await,
        Command::Token(c) => commands::token::run(&nexus, out, c).await,
        Command::Audit(c) => commands::audit::run(&nexus, out, c).await,
        Command::Cipher(c) => commands::cipher::run(&nexus, out, c).await,
        Command::Operator(c) => commands::operator::run(&nexus, out, c).await,
        Command::Bootstrap(a) => commands::bootstrap::run(&nexus, out, a).await,
        Command::Status => commands::status::run(&nexus, out).await,
        Command::Import(c) => commands::import::run(Some(&nexus), out, c).await,
        Command::Dev(_) | Command::Completions { .. } | Command::Version | Command::Seed(_) => {
            Ok(())
        }
    }
}

/// Fetches the CLI's SVID and makes the one pooled client to Nexus.
async fn connect(
    identity: Result<spike_runtime::svid::IdentityArgs, spike_runtime::config::ConfigError>,
    s: &settings::CliSettings,
) -> CliResult<Nexus> {
    let source = identity
        .map_err(|e| CliError::Usage(e.to_string()))?
        .open_with(Patience::Command)
        .await
        .map_err(CliError::own_svid)?;
    Nexus::new(&s.nexus, source, s.timeout)
}

/// `spike version` waits at most this long for Nexus.
const VERSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Prints an error with its hint and returns the exit code.
pub fn report(e: &CliError) -> ExitCode {
    // Each cause once: an error that already shows its source's text is not followed by it.
    let mut causes = spike_runtime::config::service::causes(e).into_iter();
    if let Some(first) = causes.next() {
        eprintln!("error: {first}");
    }
    for cause in causes {
        eprintln!("  caused by: {cause}");
    }
    if let Some(h) = e.hint() {
        eprintln!("hint: {h}");
    }
    e.exit_code()
}
