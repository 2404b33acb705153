//! `spike operator ...`

use clap::Subcommand;

use crate::cli::Output;
use crate::client::{CliError, CliResult, Nexus};

/// `spike operator ...`
#[derive(Debug, Subcommand)]
pub enum OperatorCmd {
    /// Export break-glass shares to custodians.
    Recover,
    /// Feed a break-glass share to a sealed Nexus.
    Restore,
}

/// Runs an operator subcommand.
pub async fn run(_nexus: &Nexus, _out: Output, _cmd: OperatorCmd) -> CliResult<()> {
    Err(CliError::Usage(
        "operator commands are not available yet".into(),
    ))
}
