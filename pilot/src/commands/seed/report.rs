//! What a seed run prints: per-item lines or a structured report, and the totals.

use serde::Serialize;
use spike_core::api::{BatchItemResult, BatchItemStatus};
use spike_core::error::{ApiError, ErrorCode};

use super::apply::PolicyResult;
use crate::cli::Output;
use crate::client::{CliError, CliResult};
use crate::output::print_structured;

/// Counts per status.
#[derive(Debug, Default, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// New.
    pub created: usize,
    /// Changed.
    pub updated: usize,
    /// Already as wanted.
    pub unchanged: usize,
    /// Written, where Nexus does not tell this caller whether it was new or changed.
    #[serde(skip_serializing_if = "is_zero")]
    pub written: usize,
    /// Refused.
    pub failed: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Counts {
    fn of(statuses: impl Iterator<Item = BatchItemStatus>) -> Self {
        let mut c = Self::default();
        for s in statuses {
            match s {
                BatchItemStatus::Created => c.created += 1,
                BatchItemStatus::Updated => c.updated += 1,
                BatchItemStatus::Unchanged => c.unchanged += 1,
                BatchItemStatus::Written => c.written += 1,
                _ => c.failed += 1,
            }
        }
        c
    }

    fn line(&self, dry_run: bool) -> String {
        let (c, u) = if dry_run {
            ("to create", "to update")
        } else {
            ("created", "updated")
        };
        let written = match self.written {
            0 => String::new(),
            n => format!(", {n} written"),
        };
        format!(
            "{} {c}, {} {u}, {} unchanged{written}, {} failed",
            self.created, self.updated, self.unchanged, self.failed
        )
    }
}

/// What `spike seed` prints with `-o json|yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedReport<'a> {
    /// True when nothing was written.
    pub dry_run: bool,
    /// Per policy.
    pub policies: &'a [PolicyResult],
    /// Per secret (never a value).
    pub secrets: &'a [BatchItemResult],
    /// Totals.
    pub summary: Summary,
}

/// Totals of a run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Policies.
    pub policies: Counts,
    /// Secrets.
    pub secrets: Counts,
}

/// The word for a status in text output.
pub fn status_word(s: BatchItemStatus, dry_run: bool) -> &'static str {
    match (s, dry_run) {
        (BatchItemStatus::Created, true) => "create",
        (BatchItemStatus::Updated, true) => "update",
        (s, _) => s.as_str(),
    }
}

/// Prints a run's results; fails (with the first failure's code, for the exit code) when any
/// item failed.
pub fn report(
    out: Output,
    dry_run: bool,
    quiet: bool,
    policies: &[PolicyResult],
    secrets: &[BatchItemResult],
) -> CliResult<()> {
    let summary = Summary {
        policies: Counts::of(policies.iter().map(|p| p.status)),
        secrets: Counts::of(secrets.iter().map(|s| s.status)),
    };
    match out {
        Output::Text => {
            if dry_run && !quiet {
                println!("dry run: nothing is written");
            }
            for p in policies {
                if quiet && p.status != BatchItemStatus::Failed {
                    continue;
                }
                print_line(
                    status_word(p.status, dry_run),
                    "policy",
                    &p.name,
                    None,
                    p.error.as_ref(),
                );
            }
            for s in secrets {
                if quiet && s.status != BatchItemStatus::Failed {
                    continue;
                }
                print_line(
                    status_word(s.status, dry_run),
                    "secret",
                    &s.path,
                    s.version,
                    s.error.as_ref(),
                );
            }
            if !quiet && !policies.is_empty() {
                println!("policies: {}", summary.policies.line(dry_run));
            }
            if !quiet && (!secrets.is_empty() || policies.is_empty()) {
                println!("secrets: {}", summary.secrets.line(dry_run));
            }
        }
        _ => print_structured(
            out,
            &SeedReport {
                dry_run,
                policies,
                secrets,
                summary: Summary {
                    policies: summary.policies,
                    secrets: summary.secrets,
                },
            },
        ),
    }
    let failed = summary.policies.failed + summary.secrets.failed;
    if failed == 0 {
        return Ok(());
    }
    let code = policies
        .iter()
        .filter_map(|p| p.error.as_ref())
        .chain(secrets.iter().filter_map(|s| s.error.as_ref()))
        .map(|e| e.code)
        .next()
        .unwrap_or(ErrorCode::Internal);
    Err(CliError::Api {
        code,
        message: format!(
            "{failed} of {} items failed; the others were applied (running again is safe)",
            policies.len() + secrets.len()
        ),
    })
}

pub(super) fn print_line(
    word: &str,
    kind: &str,
    name: &str,
    version: Option<u64>,
    err: Option<&ApiError>,
) {
    match (err, version) {
        (Some(e), _) => println!("{word:<9}  {kind} {name}: {} ({})", e.message, e.code),
        (None, Some(v)) => println!("{word:<9}  {kind} {name} (v{v})"),
        (None, None) => println!("{word:<9}  {kind} {name}"),
    }
}
