//! One configuration format for every SPIKE binary.
//!
//! Each binary describes its settings as one `serde` type (every field with a default, unknown
//! fields denied), its clap command (a flag sets the key its argument id names:
//! `#[arg(id = "limits.max_versions", long = "max-versions")]`), and a [`Spec`]: its
//! environment prefix, the variables named otherwise, the keys that are secret and the keys that
//! hold paths. [`Spec::load`] builds the effective configuration from four layers, each
//! overriding the one before **key by key**:
//!
//! 1. the defaults (`T::default()`),
//! 2. the TOML file given with `--config FILE` or the binary's own variable
//!    (`SPIKE_NEXUS_CONFIG`, `SPIKE_CLI_CONFIG`, ...); relative paths in it resolve against
//!    the file's directory,
//! 3. environment variables: key `server.max_connections` of `spike-nexus` is
//!    `SPIKE_NEXUS_SERVER_MAX_CONNECTIONS` unless the spec names it otherwise,
//! 4. flags: the named flags of the binary, and `--set KEY=VALUE` for any key.
//!
//! An unknown key in the file or in `--set` is an error naming the key (with a suggestion),
//! so a typo cannot silently leave a default in place. An environment variable with the
//! binary's prefix that names no key is reported as a warning: other tools (the `spike` CLI,
//! the dev agent's selectors) use variables with the same prefix in the same shells.
//!
//! TOML has no "unset": optional paths and strings are written as `""` when absent
//! ([`opt_path`], [`opt_string`]); durations are strings such as `"10s"` or `"300ms"`
//! ([`duration`]). [`Spec::render`] prints the effective configuration as TOML with secret keys
//! shown as `[redacted]`; [`Spec::reference`] lists every key with its environment variable,
//! flag and default, which `docs/configuration.md` is checked against ([`check_reference`]).
//! [`service`] is the one `main` of the services built on all this.

use std::path::PathBuf;

mod formats;
mod identity;
mod layers;
mod reference;
pub mod service;
#[cfg(test)]
mod tests;

pub use formats::{duration, log_format, opt_path, opt_string};
pub use identity::IdentityConfig;
pub use layers::{FlagValue, Spec, add_sets, flag_values, process_env};
pub use reference::{KeyDoc, check_reference};

/// What [`Spec::render`] shows instead of a secret value.
pub const REDACTED: &str = "[redacted]";

/// The environment variable that named the configuration file of every binary. Services still
/// read it (with a warning) when their own variable is unset; the `spike` CLI never does, so
/// a shell exporting it for a service cannot hand the CLI a service's file.
pub const LEGACY_CONFIG_ENV: &str = "SPIKE_CONFIG";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML.
    #[error("the configuration file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key that this binary does not have.
    #[error(
        "unknown configuration key `{key}` {origin}{hint}; every key is listed in \
         docs/configuration.md"
    )]
    UnknownKey {
        /// The key, dotted (`server.max_body`).
        key: String,
        /// Where it was given ("in FILE", "from --set KEY").
        origin: String,
        /// " (did you mean `...`?)" or empty.
        hint: String,
    },
    /// A value of the wrong shape for its key.
    #[error("configuration key `{key}` {origin}: {problem}")]
    BadValue {
        /// The key.
        key: String,
        /// Where it was given.
        origin: String,
        /// What is wrong (never the value itself, which may be secret).
        problem: String,
    },
    /// A `--set` argument that is not `KEY=VALUE`.
    #[error("--set takes KEY=VALUE (e.g. --set server.max_connections=512)")]
    BadSet,
    /// The same key given by a named flag and by `--set`.
    #[error("configuration key `{key}` is given by both {flag} and --set; give it once")]
    Conflict {
        /// The key.
        key: String,
        /// The named flag.
        flag: String,
    },
    /// The merged configuration is not valid (a value of the wrong type, out of range, a
    /// required key missing).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ConfigError {
    /// An invalid configuration, with a message that says what to change.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

/// Flags every binary has: the file, `--print-config` and `--set`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file (see docs/configuration.md); also the binary's own
    /// `SPIKE_<BINARY>_CONFIG` variable. Environment variables and flags override it.
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Set any configuration key, e.g. `--set server.max_connections=512`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// A loaded configuration and what the loader noticed on the way.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The effective configuration.
    pub config: T,
    /// Things worth a log line: environment variables with the binary's prefix that set
    /// nothing, a configuration file named by the deprecated `SPIKE_CONFIG`.
    pub warnings: Vec<String>,
}
