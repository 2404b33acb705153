//! The layering machinery: defaults < file < environment < flags, key by key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ConfigArgs, ConfigError, LEGACY_CONFIG_ENV, Loaded, REDACTED};
use crate::svid::IdentityArgs;

/// How one binary's configuration maps to environment variables and flags.
///
/// The flags are not listed here: a flag of the binary's clap command sets the key its
/// argument id names, so the command is the one place a flag is declared.
#[derive(Debug, Clone)]
pub struct Spec {
    pub(super) binary: &'static str,
    env_prefix: &'static str,
    env_names: BTreeMap<String, String>,
    env_aliases: Vec<(&'static str, &'static str)>,
    pub(super) secrets: BTreeSet<&'static str>,
    foreign_env: BTreeSet<&'static str>,
    paths: BTreeSet<&'static str>,
    legacy_config_env: bool,
}

impl Spec {
    /// A spec for `binary` (for messages) whose keys map to `env_prefix` + the key in upper
    /// case with `.` as `_`; its configuration file variable is `env_prefix` + `CONFIG`.
    pub fn new(binary: &'static str, env_prefix: &'static str) -> Self {
        Self {
            binary,
            env_prefix,
            env_names: BTreeMap::new(),
            env_aliases: Vec::new(),
            secrets: BTreeSet::new(),
            foreign_env: BTreeSet::new(),
            paths: BTreeSet::new(),
            legacy_config_env: false,
        }
    }

    /// Also reads the deprecated shared `SPIKE_CONFIG` when the binary's own variable is
    /// unset, with a warning (services only: deployments that set it keep working).
    pub fn legacy_config_env(mut self) -> Self {
        self.legacy_config_env = true;
        self
    }

    /// Names `key`'s environment variable explicitly (e.g. the shared `SPIKE_TRUST_DOMAIN`).
    pub fn env(mut self, key: &'static str, var: &'static str) -> Self {
        self.env_names.insert(key.to_owned(), var.to_owned());
        self
    }

    /// Accepts `var` too for `key` (an older name); the documented name wins when both are set.
    pub fn env_alias(mut self, key: &'static str, var: &'static str) -> Self {
        self.env_aliases.push((key, var));
        self
    }

    /// `key` holds a path: relative in a configuration file, it is relative to the file's
    /// directory (an environment variable or a flag stays relative to the working directory).
    pub fn path(mut self, key: &'static str) -> Self {
        self.paths.insert(key);
        self
    }

    /// The identity keys (`identity.*`): their environment variables are the `env` of the
    /// [`IdentityArgs`] flags, so they are declared once, there.
    pub fn with_identity(self) -> Self {
        let cmd = <IdentityArgs as clap::Args>::augment_args(clap::Command::new("identity"));
        self.env_of(&cmd)
            .path("identity.svid_cert")
            .path("identity.svid_key")
            .path("identity.svid_bundle")
    }

    /// Names the variable of each key whose flag in `cmd` has an `env` attribute, so a
    /// variable clap shows in `--help` is declared there only.
    pub fn env_of(mut self, cmd: &clap::Command) -> Self {
        for arg in cmd.get_arguments() {
            if let Some(var) = arg.get_env().and_then(|v| v.to_str()) {
                self.env_names
                    .insert(arg.get_id().as_str().to_owned(), var.to_owned());
            }
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
            Some(v) => v.clone(),
            None => format!(
                "{}{}",
                self.env_prefix,
                key.replace('.', "_").to_ascii_uppercase()
            ),
        }
    }

    /// The environment variable naming this binary's configuration file.
    pub fn config_env(&self) -> String {
        format!("{}CONFIG", self.env_prefix)
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
        let mut flags = flag_values::<T>(cmd, matches)?;
        add_sets(&mut flags, &args.set)?;
        self.load(args.config.as_deref(), &process_env(), &flags)
    }

    /// The configuration file: the one given, else the binary's variable, else (for a service)
    /// the deprecated shared one.
    fn config_file(
        &self,
        given: Option<&Path>,
        env: &BTreeMap<&str, &str>,
        warnings: &mut Vec<String>,
    ) -> Option<PathBuf> {
        if let Some(p) = given {
            return Some(p.to_path_buf());
        }
        let own = self.config_env();
        if let Some(p) = env.get(own.as_str()).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let legacy = env
            .get(LEGACY_CONFIG_ENV)
            .filter(|p| self.legacy_config_env && !p.is_empty())?;
        warnings.push(format!(
            "{LEGACY_CONFIG_ENV} is deprecated and read by {} only while {own} is unset; \
             rename it to {own}",
            self.binary
        ));
        Some(PathBuf::from(legacy))
    }

    /// Loads from explicit layers: the file (if any; else the one the environment names), an
    /// environment snapshot, and flag values.
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
        let env_map: BTreeMap<&str, &str> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

        if let Some(path) = self.config_file(file, &env_map, &mut warnings) {
            let mut table = read_file(&path)?;
            let origin = format!("in {}", path.display());
            check_keys(&table, &schema, "", &origin, &leaves)?;
            self.resolve_paths(&mut table, &path);
            merge(&mut merged, table, "", &origin, &mut origins);
        }

        let mut known_env = BTreeSet::from([self.config_env()]);
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

    /// Makes the relative paths of a file's path keys relative to the file's directory, so a
    /// file means the same whatever directory the binary starts in.
    fn resolve_paths(&self, table: &mut toml::Table, file: &Path) {
        let Some(dir) = file.parent() else { return };
        for key in &self.paths {
            if let Some(toml::Value::String(s)) = get_key_mut(table, key)
                && !s.is_empty()
                && Path::new(s.as_str()).is_relative()
            {
                *s = dir.join(s.as_str()).to_string_lossy().into_owned();
            }
        }
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
}

/// Reads and parses a configuration file.
fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: syntax_message(&text, &e),
        })
}

/// The parser's description and where it stopped, never the text there: toml's own
/// rendering quotes the offending line, which may hold a secret key's value (`token = abc`
/// unquoted, a broken quote).
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim_end().replace('\n', "; ");
    let Some(at) = e.span().map(|s| s.start.min(text.len())) else {
        return what;
    };
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{what} (line {line}, column {column})")
}

/// The values of the flags typed on the command line whose argument id is a key of `T`
/// (defaults and clap's own environment variables are left to the layers below, so that the
/// file sits between them and the flags).
pub fn flag_values<T: Serialize + Default>(
    cmd: &clap::Command,
    matches: &clap::ArgMatches,
) -> Result<Vec<FlagValue>, ConfigError> {
    let schema = schema_of::<T>()?;
    let mut out = Vec::new();
    for (key, _) in leaves(&schema) {
        // An id this command does not define is simply not given.
        let Ok(Some(raw)) = matches.try_get_raw(&key) else {
            continue;
        };
        if matches.value_source(&key) != Some(ValueSource::CommandLine) {
            continue;
        }
        let arg = cmd.get_arguments().find(|a| a.get_id().as_str() == key);
        let origin = flag_name(cmd, &key);
        let values = raw
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ConfigError::BadValue {
                        key: key.clone(),
                        origin: format!("from {origin}"),
                        problem: "not valid UTF-8".into(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(FlagValue {
            repeated: arg.is_some_and(|a| matches!(a.get_action(), clap::ArgAction::Append)),
            key,
            values,
            origin,
        });
    }
    Ok(out)
}

/// `--long` of the clap argument `id`.
pub(super) fn flag_name(cmd: &clap::Command, id: &str) -> String {
    cmd.get_arguments()
        .find(|a| a.get_id().as_str() == id)
        .and_then(clap::Arg::get_long)
        .map_or_else(
            || format!("--{}", id.replace('_', "-")),
            |l| format!("--{l}"),
        )
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

pub(super) fn schema_of<T: Serialize + Default>() -> Result<toml::Table, ConfigError> {
    toml::Table::try_from(T::default())
        .map_err(|e| ConfigError::invalid(format!("the defaults do not serialize: {e}")))
}

/// Every leaf key (dotted) of `table` with its value, in order.
pub(super) fn leaves(table: &toml::Table) -> Vec<(String, toml::Value)> {
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

pub(super) fn get_key_mut<'a>(
    table: &'a mut toml::Table,
    key: &str,
) -> Option<&'a mut toml::Value> {
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
pub(super) fn suggest<'a>(wrong: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = strsim::levenshtein(&wrong.to_ascii_lowercase(), &c.to_ascii_lowercase());
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
