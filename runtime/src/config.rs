//! One configuration format for every SPIKE binary.
//!
//! Each binary describes its settings as one `serde` type (every field with a default, unknown
//! fields denied) and a [`Spec`]: its environment prefix, the flags that set a key, and the keys
//! that are secret. [`Spec::load`] builds the effective configuration from four layers, each
//! overriding the one before:
//!
//! 1. the defaults (`T::default()`),
//! 2. the TOML file given with `--config FILE` or `SPIKE_CONFIG`,
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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::svid::IdentityArgs;
use spike_core::id::TrustDomain;

/// What [`Spec::render`] shows instead of a secret value.
pub const REDACTED: &str = "[redacted]";

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "SPIKE_CONFIG";

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
    /// TOML configuration file (see docs/configuration.md). Environment variables and flags
    /// override it.
    #[arg(long = "config", env = CONFIG_ENV, value_name = "FILE")]
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
    /// nothing.
    pub warnings: Vec<String>,
}

/// One key of a binary's configuration, as documented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDoc {
    /// The dotted key (`server.max_connections`).
    pub key: String,
    /// Its environment variable.
    pub env: String,
    /// Its named flag (`--listen`), if it has one; every key also has `--set KEY=VALUE`.
    pub flag: Option<String>,
    /// The default, as a TOML value.
    pub default: String,
}

/// How one binary's configuration maps to environment variables and flags.
#[derive(Debug, Clone)]
pub struct Spec {
    binary: &'static str,
    env_prefix: &'static str,
    env_names: BTreeMap<&'static str, &'static str>,
    env_aliases: Vec<(&'static str, &'static str)>,
    flags: Vec<(&'static str, &'static str)>,
    secrets: BTreeSet<&'static str>,
    foreign_env: BTreeSet<&'static str>,
}

impl Spec {
    /// A spec for `binary` (for messages) whose keys map to `env_prefix` + the key in upper
    /// case with `.` as `_`.
    pub fn new(binary: &'static str, env_prefix: &'static str) -> Self {
        Self {
            binary,
            env_prefix,
            env_names: BTreeMap::new(),
            env_aliases: Vec::new(),
            flags: Vec::new(),
            secrets: BTreeSet::new(),
            foreign_env: BTreeSet::new(),
        }
    }

    /// Names `key`'s environment variable explicitly (e.g. the shared `SPIKE_TRUST_DOMAIN`).
    pub fn env(mut self, key: &'static str, var: &'static str) -> Self {
        self.env_names.insert(key, var);
        self
    }

    /// Accepts `var` too for `key` (an older name); the documented name wins when both are set.
    pub fn env_alias(mut self, key: &'static str, var: &'static str) -> Self {
        self.env_aliases.push((key, var));
        self
    }

    /// The named flag whose clap argument id is `arg_id` sets `key`.
    pub fn flag(mut self, arg_id: &'static str, key: &'static str) -> Self {
        self.flags.push((arg_id, key));
        self
    }

    /// The identity keys (`identity.*`), their shared environment variables and the flags of
    /// [`IdentityArgs`].
    pub fn with_identity(mut self) -> Self {
        for (arg, key, var) in IDENTITY_KEYS {
            self = self.env(key, var).flag(arg, key);
        }
        self
    }

    /// `key` holds a secret: [`Spec::render`] shows it as `[redacted]`.
    pub fn secret(mut self, key: &'static str) -> Self {
        self.secrets.insert(key);
        self
    }

    /// An environment variable with this binary's prefix that belongs to another tool; it is
    /// not reported as unknown.
    pub fn foreign_env(mut self, var: &'static str) -> Self {
        self.foreign_env.insert(var);
        self
    }

    /// The environment variable of `key`.
    pub fn env_name(&self, key: &str) -> String {
        match self.env_names.get(key) {
            Some(v) => (*v).to_owned(),
            None => format!(
                "{}{}",
                self.env_prefix,
                key.replace('.', "_").to_ascii_uppercase()
            ),
        }
    }

    /// Loads the configuration for a binary started with `matches` (its parsed command line),
    /// `args` (its [`ConfigArgs`]) and the process environment.
    pub fn load_cli<T>(
        &self,
        cmd: &clap::Command,
        matches: &clap::ArgMatches,
        args: &ConfigArgs,
    ) -> Result<Loaded<T>, ConfigError>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        let mut flags = self.flag_values(cmd, matches)?;
        add_sets(&mut flags, &args.set)?;
        self.load(args.config.as_deref(), &process_env(), &flags)
    }

    /// The values of the named flags given on the command line (defaults and clap's own
    /// environment variables are left to the layers below).
    fn flag_values(
        &self,
        cmd: &clap::Command,
        matches: &clap::ArgMatches,
    ) -> Result<Vec<FlagValue>, ConfigError> {
        let mut out = Vec::new();
        for (arg_id, key) in &self.flags {
            if matches.value_source(arg_id) != Some(ValueSource::CommandLine) {
                continue;
            }
            let Ok(Some(raw)) = matches.try_get_raw(arg_id) else {
                continue;
            };
            let origin = flag_name(cmd, arg_id);
            let values = raw
                .map(|v| {
                    v.to_str()
                        .map(str::to_owned)
                        .ok_or_else(|| ConfigError::BadValue {
                            key: (*key).to_owned(),
                            origin: format!("from {origin}"),
                            problem: "not valid UTF-8".into(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push(FlagValue {
                key: (*key).to_owned(),
                values,
                origin,
                repeated: true,
            });
        }
        Ok(out)
    }

    /// Loads from explicit layers: the file (if any), an environment snapshot, and flag values.
    pub fn load<T>(
        &self,
        file: Option<&Path>,
        env: &[(String, String)],
        flags: &[FlagValue],
    ) -> Result<Loaded<T>, ConfigError>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        let schema = schema_of::<T>()?;
        let leaves = leaves(&schema);
        let mut merged = schema.clone();
        let mut origins: BTreeMap<String, String> = BTreeMap::new();
        let mut warnings = Vec::new();

        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Syntax {
                        path: path.to_path_buf(),
                        message: e.to_string().trim_end().to_owned(),
                    })?;
            let origin = format!("in {}", path.display());
            check_keys(&table, &schema, "", &origin, &leaves)?;
            merge(&mut merged, table, "", &origin, &mut origins);
        }

        let env_map: BTreeMap<&str, &str> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut known_env = BTreeSet::new();
        for (key, default) in &leaves {
            let name = self.env_name(key);
            known_env.insert(name.clone());
            let aliases: Vec<&str> = self
                .env_aliases
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| *v)
                .collect();
            known_env.extend(aliases.iter().map(|a| (*a).to_owned()));
            let found = std::iter::once(name.as_str())
                .chain(aliases)
                .find_map(|var| env_map.get(var).map(|v| (var, *v)));
            if let Some((var, raw)) = found {
                let origin = format!("from environment variable {var}");
                let value = convert(&[raw.to_owned()], default, false, key, &origin)?;
                set_key(&mut merged, key, value);
                origins.insert(key.clone(), origin);
            }
        }
        for (var, _) in env {
            if var.starts_with(self.env_prefix)
                && !known_env.contains(var)
                && !self.foreign_env.contains(var.as_str())
            {
                let hint = suggest(
                    var,
                    known_env
                        .iter()
                        .filter(|v| v.starts_with(self.env_prefix))
                        .map(String::as_str),
                );
                warnings.push(format!(
                    "environment variable {var} is not a {} setting and is ignored{hint}",
                    self.binary
                ));
            }
        }

        for flag in flags {
            let Some((_, default)) = leaves.iter().find(|(k, _)| *k == flag.key) else {
                return Err(ConfigError::UnknownKey {
                    key: flag.key.clone(),
                    origin: format!("from {}", flag.origin),
                    hint: suggest(&flag.key, leaves.iter().map(|(k, _)| k.as_str())),
                });
            };
            let origin = format!("from {}", flag.origin);
            let value = convert(&flag.values, default, flag.repeated, &flag.key, &origin)?;
            set_key(&mut merged, &flag.key, value);
            origins.insert(flag.key.clone(), origin);
        }

        let config = toml::Value::Table(merged)
            .try_into::<T>()
            .map_err(|e| describe_de_error(&e, &origins, &self.secrets))?;
        Ok(Loaded { config, warnings })
    }

    /// The effective configuration as TOML, secret keys shown as `[redacted]`.
    pub fn render<T: Serialize>(&self, config: &T) -> Result<String, ConfigError> {
        let mut table = toml::Table::try_from(config)
            .map_err(|e| ConfigError::invalid(format!("cannot render the configuration: {e}")))?;
        for key in &self.secrets {
            if let Some(v) = get_key_mut(&mut table, key)
                && !matches!(v, toml::Value::String(s) if s.is_empty())
            {
                *v = toml::Value::String(REDACTED.into());
            }
        }
        let body = toml::to_string_pretty(&table)
            .map_err(|e| ConfigError::invalid(format!("cannot render the configuration: {e}")))?;
        Ok(format!(
            "# Effective configuration of {} (secrets redacted).\n{body}",
            self.binary
        ))
    }

    /// Every key of `T` with its environment variable, flag (from `cmd`) and default, in
    /// declaration order.
    pub fn reference<T>(&self, cmd: &clap::Command) -> Result<Vec<KeyDoc>, ConfigError>
    where
        T: Serialize + Default,
    {
        let schema = schema_of::<T>()?;
        Ok(leaves(&schema)
            .into_iter()
            .map(|(key, default)| KeyDoc {
                env: self.env_name(&key),
                flag: self
                    .flags
                    .iter()
                    .find(|(_, k)| *k == key)
                    .map(|(id, _)| flag_name(cmd, id)),
                default: if self.secrets.contains(key.as_str()) {
                    REDACTED.to_owned()
                } else {
                    default.to_string()
                },
                key,
            })
            .collect())
    }
}

/// Values of one flag for [`Spec::load`].
#[derive(Debug, Clone)]
pub struct FlagValue {
    /// The dotted key it sets.
    pub key: String,
    /// Its values as given (one for a scalar; several for a repeated list flag).
    pub values: Vec<String>,
    /// The flag as the user wrote it, for messages (`--listen`).
    pub origin: String,
    /// The flag may be repeated: each value is one list element.
    pub repeated: bool,
}

/// The flags of [`IdentityArgs`] (clap argument ids), their keys and environment variables.
const IDENTITY_KEYS: [(&str, &str, &str); 6] = [
    (
        "trust_domain",
        "identity.trust_domain",
        "SPIKE_TRUST_DOMAIN",
    ),
    (
        "spiffe_endpoint_socket",
        "identity.spiffe_endpoint_socket",
        "SPIFFE_ENDPOINT_SOCKET",
    ),
    ("svid_cert", "identity.svid_cert", "SPIKE_SVID_CERT"),
    ("svid_key", "identity.svid_key", "SPIKE_SVID_KEY"),
    ("svid_bundle", "identity.svid_bundle", "SPIKE_SVID_BUNDLE"),
    (
        "svid_timeout",
        "identity.svid_timeout",
        "SPIKE_SVID_TIMEOUT",
    ),
];

/// The `[identity]` section: where a service gets its SVID.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Trust domain of this deployment.
    pub trust_domain: TrustDomain,
    /// SPIFFE Workload API endpoint; empty: the `SPIFFE_ENDPOINT_SOCKET` convention.
    #[serde(with = "opt_string")]
    pub spiffe_endpoint_socket: Option<String>,
    /// X.509-SVID chain (PEM), instead of the Workload API.
    #[serde(with = "opt_path")]
    pub svid_cert: Option<PathBuf>,
    /// X.509-SVID private key (PEM).
    #[serde(with = "opt_path")]
    pub svid_key: Option<PathBuf>,
    /// Trust bundle (PEM).
    #[serde(with = "opt_path")]
    pub svid_bundle: Option<PathBuf>,
    /// How long to wait for a first SVID at start.
    #[serde(with = "duration")]
    pub svid_timeout: Duration,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            trust_domain: TrustDomain::new("spike.dev").unwrap_or_else(|_| unreachable!()),
            spiffe_endpoint_socket: None,
            svid_cert: None,
            svid_key: None,
            svid_bundle: None,
            svid_timeout: Duration::from_secs(30),
        }
    }
}

impl IdentityConfig {
    /// The SVID source settings as [`IdentityArgs`], after checking the PEM files are given
    /// together.
    pub fn to_args(&self) -> Result<IdentityArgs, ConfigError> {
        let pem = [&self.svid_cert, &self.svid_key, &self.svid_bundle];
        let given = pem.iter().filter(|p| p.is_some()).count();
        if given != 0 && given != 3 {
            return Err(ConfigError::invalid(
                "identity.svid_cert, identity.svid_key and identity.svid_bundle go together: \
                 give all three (PEM files) or none (Workload API)",
            ));
        }
        if self.svid_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "identity.svid_timeout must be longer than zero",
            ));
        }
        Ok(IdentityArgs {
            trust_domain: self.trust_domain.clone(),
            spiffe_endpoint_socket: self.spiffe_endpoint_socket.clone(),
            svid_cert: self.svid_cert.clone(),
            svid_key: self.svid_key.clone(),
            svid_bundle: self.svid_bundle.clone(),
            svid_timeout: self.svid_timeout,
        })
    }
}

/// Checks the key tables of `doc` under the heading `heading` against `rows`: each table row
/// that starts with a key in backticks must name a real key with its exact environment
/// variable, flag and default, and every key must have a row with a non-empty meaning.
/// The error lists every difference, with the expected row.
pub fn check_reference(doc: &str, heading: &str, rows: &[KeyDoc]) -> Result<(), String> {
    let mut section = Vec::new();
    let mut inside = false;
    for line in doc.lines() {
        if line.starts_with('#') {
            inside = line.trim_start_matches('#').trim() == heading;
            continue;
        }
        if inside && line.starts_with("| `") {
            section.push(line);
        }
    }
    if section.is_empty() {
        return Err(format!("no key table under the heading `{heading}`"));
    }
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for line in &section {
        let cells = cells_of(line);
        let key = cells.first().map_or("", |c| c.trim_matches('`'));
        let Some(row) = rows.iter().find(|r| r.key == key) else {
            problems.push(format!("documented key `{key}` does not exist"));
            continue;
        };
        seen.insert(key.to_owned());
        let expected = expected_row(row);
        let expected_cells = cells_of(&expected);
        if cells.len() < 5
            || cells[..4] != expected_cells[..4]
            || cells[4..].concat().trim().is_empty()
        {
            problems.push(format!(
                "row of `{key}` should start with:\n    {}",
                expected.trim_end_matches("… |")
            ));
        }
    }
    for row in rows {
        if !seen.contains(&row.key) {
            problems.push(format!(
                "key `{}` is not documented; add:\n    {}",
                row.key,
                expected_row(row)
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "docs/configuration.md, section `{heading}`:\n{}",
            problems.join("\n")
        ))
    }
}

/// The cells of a Markdown table row.
fn cells_of(line: &str) -> Vec<&str> {
    line.trim()
        .trim_matches('|')
        .split(" | ")
        .map(str::trim)
        .collect()
}

/// The documented form of one key: `| key | env | flag | default | … |`.
fn expected_row(row: &KeyDoc) -> String {
    format!(
        "| `{}` | `{}` | {} | `{}` | … |",
        row.key,
        row.env,
        row.flag
            .as_ref()
            .map_or_else(|| "-".to_owned(), |f| format!("`{f}`")),
        row.default
    )
}

/// `--long` of the clap argument `id`.
fn flag_name(cmd: &clap::Command, id: &str) -> String {
    cmd.get_arguments()
        .find(|a| a.get_id().as_str() == id)
        .and_then(clap::Arg::get_long)
        .map_or_else(
            || format!("--{}", id.replace('_', "-")),
            |l| format!("--{l}"),
        )
}

fn schema_of<T: Serialize + Default>() -> Result<toml::Table, ConfigError> {
    toml::Table::try_from(T::default())
        .map_err(|e| ConfigError::invalid(format!("the defaults do not serialize: {e}")))
}

/// Every leaf key (dotted) of `table` with its value, in order.
fn leaves(table: &toml::Table) -> Vec<(String, toml::Value)> {
    fn walk(t: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(sub) => walk(sub, &key, out),
                other => out.push((key, other.clone())),
            }
        }
    }
    let mut out = Vec::new();
    walk(table, "", &mut out);
    out
}

/// Rejects keys of `given` that `schema` lacks.
fn check_keys(
    given: &toml::Table,
    schema: &toml::Table,
    prefix: &str,
    origin: &str,
    leaves: &[(String, toml::Value)],
) -> Result<(), ConfigError> {
    for (k, v) in given {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (schema.get(k), v) {
            (None, _) => {
                let mut candidates: Vec<&str> = leaves.iter().map(|(l, _)| l.as_str()).collect();
                let sections: Vec<String> = leaves
                    .iter()
                    .filter_map(|(l, _)| l.rsplit_once('.').map(|(s, _)| s.to_owned()))
                    .collect();
                candidates.extend(sections.iter().map(String::as_str));
                return Err(ConfigError::UnknownKey {
                    hint: suggest(&key, candidates.into_iter()),
                    key,
                    origin: origin.to_owned(),
                });
            }
            (Some(toml::Value::Table(s)), toml::Value::Table(g)) if !s.is_empty() => {
                check_keys(g, s, &key, origin, leaves)?;
            }
            (Some(toml::Value::Table(s)), _) if !s.is_empty() => {
                return Err(ConfigError::BadValue {
                    key,
                    origin: origin.to_owned(),
                    problem: "this is a section ([table]), not a value".into(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Overlays `over` on `base`, recording where each leaf came from.
fn merge(
    base: &mut toml::Table,
    over: toml::Table,
    prefix: &str,
    origin: &str,
    origins: &mut BTreeMap<String, String>,
) {
    for (k, v) in over {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                merge(b, o, &key, origin, origins);
            }
            (_, v) => {
                origins.insert(key, origin.to_owned());
                base.insert(k, v);
            }
        }
    }
}

fn set_key(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_owned(), value);
        }
        Some((head, rest)) => {
            let sub = table
                .entry(head.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(sub) = sub {
                set_key(sub, rest, value);
            }
        }
    }
}

fn get_key_mut<'a>(table: &'a mut toml::Table, key: &str) -> Option<&'a mut toml::Value> {
    match key.split_once('.') {
        None => table.get_mut(key),
        Some((head, rest)) => match table.get_mut(head)? {
            toml::Value::Table(sub) => get_key_mut(sub, rest),
            _ => None,
        },
    }
}

/// Turns a string from the environment or a flag into a value shaped like `default`.
/// List values are comma-separated, or a TOML array (`[1, 2]`); a repeated flag gives one
/// element per occurrence.
fn convert(
    raw: &[String],
    default: &toml::Value,
    repeated: bool,
    key: &str,
    origin: &str,
) -> Result<toml::Value, ConfigError> {
    let bad = |problem: &str| ConfigError::BadValue {
        key: key.to_owned(),
        origin: origin.to_owned(),
        problem: problem.to_owned(),
    };
    let scalar = |s: &str, like: &toml::Value| -> Result<toml::Value, ConfigError> {
        let s = s.trim();
        Ok(match like {
            toml::Value::Integer(_) => toml::Value::Integer(
                s.replace('_', "")
                    .parse()
                    .map_err(|_| bad("expected a whole number"))?,
            ),
            toml::Value::Float(_) => {
                toml::Value::Float(s.parse().map_err(|_| bad("expected a number"))?)
            }
            toml::Value::Boolean(_) => toml::Value::Boolean(match s {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => return Err(bad("expected true or false")),
            }),
            _ => toml::Value::String(s.to_owned()),
        })
    };
    match default {
        toml::Value::Array(items) => {
            let like = items
                .first()
                .cloned()
                .unwrap_or_else(|| toml::Value::String(String::new()));
            let parts: Vec<String> = match raw {
                [one] if !repeated && one.trim_start().starts_with('[') => {
                    let doc: toml::Table = format!("v = {one}")
                        .parse()
                        .map_err(|_| bad("expected a TOML array or comma-separated values"))?;
                    return doc
                        .get("v")
                        .cloned()
                        .ok_or_else(|| bad("expected a TOML array"));
                }
                _ => raw
                    .iter()
                    .flat_map(|r| r.split(','))
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            };
            parts
                .iter()
                .map(|p| scalar(p, &like))
                .collect::<Result<Vec<_>, _>>()
                .map(toml::Value::Array)
        }
        toml::Value::Table(_) => Err(bad("this is a section; set its keys one by one")),
        other => match raw.last() {
            Some(s) => scalar(s, other),
            None => Err(bad("no value given")),
        },
    }
}

/// Adds where a failing key was set to serde's message; drops the value it may quote when the
/// key is secret.
fn describe_de_error(
    e: &toml::de::Error,
    origins: &BTreeMap<String, String>,
    secrets: &BTreeSet<&str>,
) -> ConfigError {
    // toml's Display ends with "in `a.b`" for an error inside a value; the key path is not
    // otherwise public.
    let shown = e.to_string();
    let key = shown
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("in `")?.strip_suffix('`'))
        .map(str::to_owned);
    let first = e
        .message()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    match key {
        Some(key) => {
            let origin = origins
                .get(&key)
                .cloned()
                .unwrap_or_else(|| "(the default)".into());
            let problem = if secrets.contains(key.as_str()) {
                "invalid value".to_owned()
            } else {
                first
            };
            ConfigError::BadValue {
                key,
                origin,
                problem,
            }
        }
        None => ConfigError::Invalid(first),
    }
}

/// " (did you mean `x`?)" for the closest candidate, or "".
fn suggest<'a>(wrong: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = distance(&wrong.to_ascii_lowercase(), &c.to_ascii_lowercase());
        // The same last word under another section counts as close, too.
        let d = if c.ends_with(&format!(".{wrong}")) {
            d.min(1)
        } else {
            d
        };
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    match best {
        Some((d, c)) if d <= 3.max(wrong.len() / 4) => format!(" (did you mean `{c}`?)"),
        _ => String::new(),
    }
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Serde for durations as human-readable strings: `"10s"`, `"300ms"`, `"1h 30m"`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `d` as e.g. `"10s"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Parses e.g. `"10s"`, `"300ms"`, `"2m 30s"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map_err(|_| {
            serde::de::Error::custom("expected a duration such as \"10s\", \"300ms\" or \"2m\"")
        })
    }
}

/// Serde for an optional path: `""` is none.
pub mod opt_path {
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `None` as `""`.
    pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => s.serialize_str(&p.to_string_lossy()),
            None => s.serialize_str(""),
        }
    }

    /// Reads `""` as `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        let s = String::deserialize(d)?;
        Ok((!s.is_empty()).then(|| PathBuf::from(s)))
    }
}

/// Serde for an optional string: `""` is none.
pub mod opt_string {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `None` as `""`.
    pub fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_deref().unwrap_or(""))
    }

    /// Reads `""` as `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let s = String::deserialize(d)?;
        Ok((!s.is_empty()).then_some(s))
    }
}

/// Serde for [`LogFormat`](crate::telemetry::LogFormat): `"text"` or `"json"`.
pub mod log_format {
    use clap::ValueEnum;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::telemetry::LogFormat;

    /// Serializes as `"text"` or `"json"`.
    pub fn serialize<S: Serializer>(f: &LogFormat, s: S) -> Result<S::Ok, S::Error> {
        match f.to_possible_value() {
            Some(v) => s.serialize_str(v.get_name()),
            None => Err(serde::ser::Error::custom("unnamed log format")),
        }
    }

    /// Parses `"text"` or `"json"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
        let s = String::deserialize(d)?;
        LogFormat::from_str(s.trim(), true)
            .map_err(|_| serde::de::Error::custom("expected \"text\" or \"json\""))
    }
}

/// The process environment as UTF-8 pairs (non-UTF-8 variables are no SPIKE settings).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Adds `--set KEY=VALUE` overrides to the flag layer; a key also given by its own flag is a
/// conflict.
pub fn add_sets(flags: &mut Vec<FlagValue>, sets: &[String]) -> Result<(), ConfigError> {
    for set in sets {
        let (key, value) = set.split_once('=').ok_or(ConfigError::BadSet)?;
        let key = key.trim();
        if let Some(f) = flags.iter().find(|f| f.key == key) {
            return Err(ConfigError::Conflict {
                key: key.to_owned(),
                flag: f.origin.clone(),
            });
        }
        flags.push(FlagValue {
            key: key.to_owned(),
            values: vec![value.to_owned()],
            origin: format!("--set {key}"),
            repeated: false,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::telemetry::LogFormat;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        listen: String,
        peers: Vec<String>,
        #[serde(with = "opt_path")]
        data_dir: Option<PathBuf>,
        #[serde(with = "duration")]
        interval: Duration,
        #[serde(with = "log_format")]
        log_format: LogFormat,
        verbose: bool,
        token: String,
        server: DemoServer,
        identity: IdentityConfig,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct DemoServer {
        max_body: u64,
        ports: Vec<u16>,
    }

    impl Default for Demo {
        fn default() -> Self {
            Self {
                listen: "0.0.0.0:1".into(),
                peers: Vec::new(),
                data_dir: None,
                interval: Duration::from_secs(2),
                log_format: LogFormat::Text,
                verbose: false,
                token: String::new(),
                server: DemoServer::default(),
                identity: IdentityConfig::default(),
            }
        }
    }

    impl Default for DemoServer {
        fn default() -> Self {
            Self {
                max_body: 1024,
                ports: vec![1],
            }
        }
    }

    fn spec() -> Spec {
        Spec::new("demo", "DEMO_")
            .with_identity()
            .flag("listen", "listen")
            .secret("token")
            .env_alias("server.max_body", "DEMO_MAX_BODY")
            .foreign_env("DEMO_OTHER_TOOL")
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn flag(key: &str, value: &str) -> FlagValue {
        FlagValue {
            key: key.into(),
            values: vec![value.into()],
            origin: format!("--{key}"),
            repeated: false,
        }
    }

    #[test]
    fn defaults_without_any_layer() {
        let l: Loaded<Demo> = spec().load(None, &[], &[]).unwrap();
        assert_eq!(l.config, Demo::default());
        assert!(l.warnings.is_empty());
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let f = file(
            "listen = \"file:1\"\npeers = [\"a\", \"b\"]\ninterval = \"5s\"\n\
             [server]\nmax_body = 10\n",
        );
        // File only.
        let l: Loaded<Demo> = spec().load(Some(f.path()), &[], &[]).unwrap();
        assert_eq!(l.config.listen, "file:1");
        assert_eq!(l.config.peers, ["a", "b"]);
        assert_eq!(l.config.interval, Duration::from_secs(5));
        assert_eq!(l.config.server.max_body, 10);
        assert_eq!(l.config.server.ports, [1], "untouched keys keep defaults");
        // Env over file.
        let e = env(&[
            ("DEMO_LISTEN", "env:1"),
            ("DEMO_SERVER_MAX_BODY", "20"),
            ("DEMO_PEERS", "x, y,z"),
            ("DEMO_DATA_DIR", "/var/lib/demo"),
            ("DEMO_VERBOSE", "true"),
            ("DEMO_SERVER_PORTS", "[7, 8]"),
            ("SPIKE_TRUST_DOMAIN", "example.org"),
        ]);
        let l: Loaded<Demo> = spec().load(Some(f.path()), &e, &[]).unwrap();
        assert_eq!(l.config.listen, "env:1");
        assert_eq!(l.config.server.max_body, 20);
        assert_eq!(l.config.peers, ["x", "y", "z"]);
        assert_eq!(l.config.data_dir, Some(PathBuf::from("/var/lib/demo")));
        assert!(l.config.verbose);
        assert_eq!(l.config.server.ports, [7, 8]);
        assert_eq!(l.config.identity.trust_domain.as_str(), "example.org");
        assert_eq!(
            l.config.interval,
            Duration::from_secs(5),
            "file still applies"
        );
        // Flags over env.
        let l: Loaded<Demo> = spec()
            .load(
                Some(f.path()),
                &e,
                &[flag("listen", "flag:1"), flag("server.max_body", "30")],
            )
            .unwrap();
        assert_eq!(l.config.listen, "flag:1");
        assert_eq!(l.config.server.max_body, 30);
    }

    #[test]
    fn env_alias_is_accepted_and_the_documented_name_wins() {
        let l: Loaded<Demo> = spec()
            .load(None, &env(&[("DEMO_MAX_BODY", "5")]), &[])
            .unwrap();
        assert_eq!(l.config.server.max_body, 5);
        let l: Loaded<Demo> = spec()
            .load(
                None,
                &env(&[("DEMO_MAX_BODY", "5"), ("DEMO_SERVER_MAX_BODY", "6")]),
                &[],
            )
            .unwrap();
        assert_eq!(l.config.server.max_body, 6);
    }

    #[test]
    fn unknown_keys_are_rejected_with_a_suggestion() {
        let f = file("[server]\nmax_bdy = 10\n");
        let e = spec().load::<Demo>(Some(f.path()), &[], &[]).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ConfigError::UnknownKey { .. }), "{msg}");
        assert!(msg.contains("`server.max_bdy`"), "{msg}");
        assert!(msg.contains("did you mean `server.max_body`"), "{msg}");
        assert!(msg.contains(&f.path().display().to_string()), "{msg}");

        // A key in the wrong section points at the right one.
        let f = file("max_body = 10\n");
        let msg = spec()
            .load::<Demo>(Some(f.path()), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("did you mean `server.max_body`"), "{msg}");

        // An unknown section.
        let f = file("[sever]\nmax_body = 1\n");
        let msg = spec()
            .load::<Demo>(Some(f.path()), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`sever`") && msg.contains("`server`"), "{msg}");

        // A value where a section belongs.
        let f = file("server = 1\n");
        let e = spec().load::<Demo>(Some(f.path()), &[], &[]).unwrap_err();
        assert!(matches!(e, ConfigError::BadValue { .. }), "{e}");

        // --set of an unknown key.
        let e = spec()
            .load::<Demo>(None, &[], &[flag("server.max_bodyy", "1")])
            .unwrap_err();
        assert!(matches!(e, ConfigError::UnknownKey { .. }), "{e}");
    }

    #[test]
    fn unknown_prefixed_env_is_a_warning_not_silence() {
        let l: Loaded<Demo> = spec()
            .load(
                None,
                &env(&[
                    ("DEMO_SERVER_MAX_BDY", "1"),
                    ("DEMO_OTHER_TOOL", "x"),
                    ("UNRELATED", "y"),
                ]),
                &[],
            )
            .unwrap();
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(l.warnings[0].contains("DEMO_SERVER_MAX_BDY"));
        assert!(l.warnings[0].contains("DEMO_SERVER_MAX_BODY"));
        assert_eq!(l.config, Demo::default());
    }

    #[test]
    fn bad_values_name_the_key_and_where_it_came_from() {
        let e = spec()
            .load::<Demo>(None, &env(&[("DEMO_SERVER_MAX_BODY", "lots")]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.max_body"), "{e}");
        assert!(e.contains("DEMO_SERVER_MAX_BODY"), "{e}");
        assert!(e.contains("whole number"), "{e}");

        let f = file("interval = \"soon\"\n");
        let e = spec()
            .load::<Demo>(Some(f.path()), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`interval`"), "{e}");
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        assert!(e.contains("duration"), "{e}");

        let f = file("[server]\nmax_body = \"big\"\n");
        let e = spec()
            .load::<Demo>(Some(f.path()), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.max_body"), "{e}");

        let e = spec()
            .load::<Demo>(None, &[], &[flag("log_format", "xml")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("log_format") && e.contains("--log_format"),
            "{e}"
        );

        let f = file("listen = \n");
        let e = spec().load::<Demo>(Some(f.path()), &[], &[]).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");

        let e = spec()
            .load::<Demo>(Some(Path::new("/nonexistent/demo.toml")), &[], &[])
            .unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    }

    #[test]
    fn secret_values_are_never_echoed() {
        // The token is a string, so no type error can quote it; but a secret key's serde
        // message is replaced anyway.
        let f = file("token = 5\n");
        let e = spec()
            .load::<Demo>(Some(f.path()), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`token`") && !e.contains("`5`"), "{e}");
    }

    #[test]
    fn render_redacts_secrets_and_round_trips() {
        let c = Demo {
            token: "hunter2".into(),
            data_dir: Some("/data".into()),
            peers: vec!["a:1".into()],
            ..Demo::default()
        };
        let out = spec().render(&c).unwrap();
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("token = \"[redacted]\""), "{out}");
        assert!(out.contains("[server]"), "{out}");
        // Declaration order is kept.
        assert!(out.find("listen").unwrap() < out.find("peers").unwrap());
        // The output is a valid configuration file.
        let f = file(&out);
        let back: Loaded<Demo> = spec().load(Some(f.path()), &[], &[]).unwrap();
        assert_eq!(back.config.data_dir, c.data_dir);
        assert_eq!(back.config.peers, c.peers);
        assert_eq!(back.config.token, REDACTED);
        // An empty secret shows as empty, not as redacted.
        assert!(
            spec()
                .render(&Demo::default())
                .unwrap()
                .contains("token = \"\"")
        );
    }

    #[test]
    fn identity_needs_all_three_pem_files() {
        let mut id = IdentityConfig {
            svid_cert: Some("c.pem".into()),
            ..IdentityConfig::default()
        };
        assert!(id.to_args().is_err());
        id.svid_key = Some("k.pem".into());
        id.svid_bundle = Some("b.pem".into());
        let args = id.to_args().unwrap();
        assert_eq!(args.svid_cert, Some(PathBuf::from("c.pem")));
        assert!(IdentityConfig::default().to_args().is_ok());
    }

    fn doc_rows() -> Vec<KeyDoc> {
        let cmd = clap::Command::new("demo").arg(clap::Arg::new("listen").long("listen"));
        spec().reference::<Demo>(&cmd).unwrap()
    }

    #[test]
    fn reference_lists_every_key_with_env_flag_and_default() {
        let rows = doc_rows();
        let listen = rows.iter().find(|r| r.key == "listen").unwrap();
        assert_eq!(listen.env, "DEMO_LISTEN");
        assert_eq!(listen.flag.as_deref(), Some("--listen"));
        assert_eq!(listen.default, "\"0.0.0.0:1\"");
        let td = rows
            .iter()
            .find(|r| r.key == "identity.trust_domain")
            .unwrap();
        assert_eq!(td.env, "SPIKE_TRUST_DOMAIN");
        let body = rows.iter().find(|r| r.key == "server.max_body").unwrap();
        assert_eq!(body.env, "DEMO_SERVER_MAX_BODY");
        assert_eq!(body.flag, None);
        assert_eq!(body.default, "1024");
        assert_eq!(
            rows.iter().find(|r| r.key == "token").unwrap().default,
            REDACTED
        );
    }

    #[test]
    fn doc_check_finds_missing_extra_and_wrong_rows() {
        let rows = doc_rows();
        let table: String = rows
            .iter()
            .map(|r| expected_row(r).replace('…', "Meaning.") + "\n")
            .collect();
        let doc = format!(
            "# Demo\n\n## demo\n\n| Key | Env | Flag | Default | Meaning |\n|-|-|-|-|-|\n{table}\n## other\n| `x` | a | b | c | d |\n"
        );
        check_reference(&doc, "demo", &rows).unwrap();

        let missing = doc.replace(&(expected_row(&rows[0]).replace('…', "Meaning.")), "");
        let e = check_reference(&missing, "demo", &rows).unwrap_err();
        assert!(e.contains("is not documented"), "{e}");

        let extra = doc.replace(
            "\n## other",
            "| `nope` | `DEMO_NOPE` | - | `1` | Gone. |\n## other",
        );
        let e = check_reference(&extra, "demo", &rows).unwrap_err();
        assert!(e.contains("`nope` does not exist"), "{e}");

        let wrong = doc.replace("`1024`", "`2048`");
        let e = check_reference(&wrong, "demo", &rows).unwrap_err();
        assert!(e.contains("server.max_body"), "{e}");

        let no_meaning = doc.replacen("Meaning.", " ", 1);
        assert!(check_reference(&no_meaning, "demo", &rows).is_err());
        assert!(check_reference(&doc, "absent", &rows).is_err());
    }

    #[test]
    fn suggestions_are_close_or_absent() {
        assert_eq!(
            suggest("server.max_bdy", ["server.max_body", "listen"].into_iter()),
            " (did you mean `server.max_body`?)"
        );
        assert_eq!(suggest("completely_different", ["listen"].into_iter()), "");
    }
}
