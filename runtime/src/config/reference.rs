//! The key reference: every key with its variable, flag and default, and the check of
//! `docs/configuration.md` against it.

use std::collections::BTreeSet;

use serde::Serialize;

use super::layers::{flag_name, leaves, schema_of};
use super::{ConfigError, REDACTED, Spec};

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

impl Spec {
    /// `cmd` with each flag's default taken from `T::default()`, so `--help` shows it without
    /// a second declaration. A default is only shown: the loader takes a flag's value only
    /// when it is typed, so the file and environment still override the default.
    pub fn show_defaults<T>(&self, cmd: clap::Command) -> Result<clap::Command, ConfigError>
    where
        T: Serialize + Default,
    {
        let schema = schema_of::<T>()?;
        let mut cmd = cmd;
        for (key, default) in leaves(&schema) {
            let shown = match &default {
                toml::Value::String(s) => s.clone(),
                toml::Value::Array(_) | toml::Value::Table(_) => continue,
                other => other.to_string(),
            };
            let has_flag = cmd
                .get_arguments()
                .any(|a| a.get_id().as_str() == key && a.get_default_values().is_empty());
            if has_flag && !shown.is_empty() && !self.secrets.contains(key.as_str()) {
                cmd = cmd.mut_arg(key.as_str(), |a| a.default_value(shown));
            }
        }
        Ok(cmd)
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
                flag: cmd
                    .get_arguments()
                    .any(|a| a.get_id().as_str() == key)
                    .then(|| flag_name(cmd, &key)),
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
pub(super) fn expected_row(row: &KeyDoc) -> String {
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
