//! `spike completions SHELL`: shell completion scripts, generated from the clap definitions
//! so they never drift from the real flags.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::client::{CliError, CliResult};

/// Writes the completion script for `shell` to `w`.
pub fn generate(shell: Shell, w: &mut dyn std::io::Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "spike", w);
}

/// Prints the completion script for `shell` on stdout.
pub fn run(shell: Shell) -> CliResult<()> {
    let mut buf = Vec::new();
    generate(shell, &mut buf);
    use std::io::Write;
    std::io::stdout()
        .write_all(&buf)
        .map_err(|e| CliError::Other(anyhow::anyhow!("cannot write to stdout: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_commands() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let mut buf = Vec::new();
            generate(shell, &mut buf);
            let text = String::from_utf8(buf).unwrap();
            for word in ["seed", "secret", "policy", "completions", "dry-run"] {
                assert!(text.contains(word), "{shell:?} script lacks {word}");
            }
        }
    }
}
