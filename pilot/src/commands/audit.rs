//! `spike audit verify`

use http::Method;
use spike_core::api::AuditVerifyResponse;

use crate::cli::{AuditCmd, Output};
use crate::client::{CliError, CliResult, Nexus};
use crate::output::print_structured;

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
            let text = std::fs::read_to_string(&path)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
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
