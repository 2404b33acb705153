//! `spike audit verify`

use http::Method;
use spike_core::api::{AuditVerifyResponse, MAX_SHIPPED_CHECKPOINTS};
use spike_core::audit::SHIPPED_MARKER;

use crate::cli::{AuditCmd, Output};
use crate::client::{CliError, CliResult, Nexus};
use crate::output::print_structured;

/// Most bytes of the copy sent in one request: lines are sent in pieces of about this size
/// (JSON escaping grows them, and Nexus's default body limit is 1 MiB), each checked as the
/// continuation of the ones before, so a copy of any size is verified holding one piece.
const PIECE: usize = 256 << 10;

/// Has Nexus verify a copy of a log (Nexus's or a gateway's: Nexus tells them apart by
/// their lines), piece by piece.
async fn verify_copy(
    nexus: &Nexus,
    path: &std::path::Path,
    checkpoints: &[String],
) -> CliResult<AuditVerifyResponse> {
    use std::io::BufRead;
    let cannot =
        |e: std::io::Error| CliError::Usage(format!("cannot read {}: {e}", path.display()));
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(cannot)?);
    let mut after = None;
    let mut lines_before = 0;
    // Whose chain the first piece was (a gateway's, or Nexus's when `None`): every later
    // piece must continue it.
    let mut gateway: Option<String> = None;
    let mut piece = Vec::with_capacity(PIECE);
    loop {
        piece.clear();
        let mut at_end = false;
        while piece.len() < PIECE {
            if reader.read_until(b'\n', &mut piece).map_err(cannot)? == 0 {
                at_end = true;
                break;
            }
        }
        // Not UTF-8 is still sent (lossily): Nexus reports the line as it sees it.
        let body = serde_json::json!({
            "log": String::from_utf8_lossy(&piece),
            "after": after,
            "linesBefore": lines_before,
            "gateway": gateway,
            "checkpoints": checkpoints,
            "more": !at_end,
        });
        let report: AuditVerifyResponse = nexus
            .call(Method::POST, "/v1/audit/verify", Some(&body))
            .await?;
        if !report.ok || at_end {
            return Ok(report);
        }
        after = report.head;
        lines_before = report.lines;
        gateway = report.gateway.clone();
    }
}

/// The newest [`MAX_SHIPPED_CHECKPOINTS`] shipped checkpoint lines of a sink file (a
/// syslog file holds other lines too: only those with a checkpoint count). Read line by
/// line, holding only those kept, since a syslog file can be far larger than memory. Their
/// tags are Nexus's to check.
fn shipped_lines(path: &std::path::Path) -> CliResult<Vec<String>> {
    use std::io::BufRead;
    let cannot =
        |e: std::io::Error| CliError::Usage(format!("cannot read {}: {e}", path.display()));
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(cannot)?);
    let mut kept = std::collections::VecDeque::with_capacity(MAX_SHIPPED_CHECKPOINTS);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(cannot)? == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        if text.contains(SHIPPED_MARKER) {
            if kept.len() == MAX_SHIPPED_CHECKPOINTS {
                kept.pop_front();
            }
            kept.push_back(text.trim_end().to_owned());
        }
    }
    if kept.is_empty() {
        return Err(CliError::Usage(format!(
            "{} holds no shipped audit checkpoint (lines with \"{}\")",
            path.display(),
            SHIPPED_MARKER.trim_end()
        )));
    }
    Ok(kept.into())
}

/// Has Nexus verify the audit chain (its live log, or a copy), against shipped checkpoints
/// if given.
pub async fn run(nexus: &Nexus, out: Output, cmd: AuditCmd) -> CliResult<()> {
    let AuditCmd::Verify { file, checkpoints } = cmd;
    let shipped = checkpoints.as_deref().map(shipped_lines).transpose()?;
    let report: AuditVerifyResponse = match (file, &shipped) {
        (None, None) => {
            nexus
                .call(Method::POST, "/v1/audit/verify", None::<&()>)
                .await?
        }
        (None, Some(lines)) => {
            let body = serde_json::json!({ "checkpoints": lines });
            nexus
                .call(Method::POST, "/v1/audit/verify", Some(&body))
                .await?
        }
        (Some(path), lines) => {
            verify_copy(nexus, &path, lines.as_deref().unwrap_or_default()).await?
        }
    };
    match out {
        Output::Text if report.ok => {
            match &report.gateway {
                Some(g) => println!(
                    "ok: {} lines verify as the chain of gateway {g}",
                    report.lines
                ),
                None => println!("ok: {} lines verify", report.lines),
            }
            // The head, to keep outside this machine: a later verify that ends before it
            // means lines were removed, even if the stored checkpoint was rolled back too.
            if let Some(h) = report.head {
                println!("head: seq {} mac {}", h.seq, h.mac);
            }
            if let Some(c) = report.checkpoint {
                println!("checkpoint: seq {} mac {} (reached)", c.seq, c.mac);
            }
            if let Some(c) = report.latest_shipped {
                println!(
                    "shipped: {} checkpoints verify and are on the chain; the latest, seq {} mac {}, is reached",
                    report.shipped, c.seq, c.mac
                );
            }
        }
        Output::Text => {
            let problem = report.problem.as_deref().unwrap_or("chain broken");
            match report.first_bad_line {
                Some(line) => println!("TAMPERED: line {line}: {problem}"),
                None => println!("TAMPERED: {problem}"),
            }
        }
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
