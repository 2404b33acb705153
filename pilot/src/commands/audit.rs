//! `spike audit verify`

use http::Method;
use spike_core::api::AuditVerifyResponse;

use crate::cli::{AuditCmd, Output};
use crate::client::{CliError, CliResult, Nexus};
use crate::output::print_structured;

/// Largest copy sent for verification: the copy travels in one request body, so a bigger
/// one is refused here rather than read into memory (Nexus's own body limit is lower still).
const MAX_UPLOAD: u64 = 64 << 20;

/// Reads a copy of the log, refusing one larger than [`MAX_UPLOAD`] before reading it.
fn read_copy(path: &std::path::Path) -> CliResult<String> {
    use std::io::Read;
    let cannot =
        |e: std::io::Error| CliError::Usage(format!("cannot read {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut text = String::new();
    file.take(MAX_UPLOAD + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() as u64 > MAX_UPLOAD {
        return Err(CliError::Usage(format!(
            "{} is larger than {MAX_UPLOAD} bytes; run `spike audit verify` without --file to have Nexus verify its live log, streaming",
            path.display()
        )));
    }
    Ok(text)
}

/// Has Nexus verify the audit chain (its live log, or an uploaded copy).
pub async fn run(nexus: &Nexus, out: Output, cmd: AuditCmd) -> CliResult<()> {
    let AuditCmd::Verify { file } = cmd;
    let report: AuditVerifyResponse = match file {
        None => {
            nexus
                .call(Method::POST, "/v1/audit/verify", None::<&()>)
                .await?
        }
        Some(path) => {
            let text = read_copy(&path)?;
            let body = serde_json::json!({ "log": text });
            nexus
                .call(Method::POST, "/v1/audit/verify", Some(&body))
                .await?
        }
    };
    match out {
        Output::Text if report.ok => {
            println!("ok: {} lines verify", report.lines);
            // The head, to keep outside this machine: a later verify that ends before it
            // means lines were removed, even if the stored checkpoint was rolled back too.
            if let Some(h) = report.head {
                println!("head: seq {} mac {}", h.seq, h.mac);
            }
            if let Some(c) = report.checkpoint {
                println!("checkpoint: seq {} mac {} (reached)", c.seq, c.mac);
            }
        }
        Output::Text => println!(
            "TAMPERED: line {}: {}",
            report.first_bad_line.unwrap_or(0),
            report.problem.as_deref().unwrap_or("chain broken")
        ),
        _ => print_structured(out, &report),
    }
    if report.ok {
        Ok(())
    } else {
        Err(CliError::Other(anyhow::anyhow!(
            "the audit log does not verify"
        )))
    }
}
