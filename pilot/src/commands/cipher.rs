//! `spike cipher ...`

use clap::Subcommand;

use crate::cli::Output;
use crate::client::{CliError, CliResult, Nexus};

/// `spike cipher ...`
#[derive(Debug, Subcommand)]
pub enum CipherCmd {
    /// Encrypt data with Nexus's cipher key.
    Encrypt,
    /// Decrypt data encrypted by `spike cipher encrypt`.
    Decrypt,
}

/// Runs a cipher subcommand.
pub async fn run(_nexus: &Nexus, _out: Output, _cmd: CipherCmd) -> CliResult<()> {
    Err(CliError::Usage("cipher is not available yet".into()))
}
