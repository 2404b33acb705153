//! System routes: bootstrap, status, audit verification.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use spike_core::api::{AuditVerifyResponse, InitRequest, StatusResponse};
use spike_core::audit::ChainVerifier;
use spike_core::error::ErrorCode;
use spike_core::id::{Builtin, SpiffeId};

use super::N;
use crate::audit_log::{store_anchor, verify_files};
use crate::error::{AppError, AppResult};
use crate::extract::{Caller, JsonBody};
use crate::state::Nexus;

/// The answer of a verification: ok with the head, or the first problem.
fn report(
    result: Result<spike_core::audit::VerifyReport, (Option<u64>, String)>,
    checkpoint: Option<spike_core::audit::Checkpoint>,
) -> AuditVerifyResponse {
    match result {
        Ok(r) => AuditVerifyResponse {
            ok: true,
            lines: r.lines,
            first_bad_line: None,
            problem: None,
            head: Some(r.head),
            checkpoint,
            gateway: None,
        },
        Err((first_bad_line, problem)) => AuditVerifyResponse {
            ok: false,
            lines: 0,
            first_bad_line,
            problem: Some(problem),
            head: None,
            checkpoint,
            gateway: None,
        },
    }
}

fn require_builtin(n: &Nexus, c: &SpiffeId, allowed: &[Builtin]) -> AppResult<()> {
    match Builtin::of(c, n.trust_domain()) {
        Some(b) if allowed.contains(&b) => Ok(()),
        _ => {
            let who: Vec<String> = allowed
                .iter()
                .map(|b| b.id(n.trust_domain()).to_string())
                .collect();
            Err(AppError::not_admin(c, &who.join(" or ")))
        }
    }
}

pub(super) async fn init(
    State(n): N,
    Caller(c): Caller,
    body: Result<JsonBody<InitRequest>, AppError>,
) -> Response {
    n.respond("bootstrap.init", &c, None, async {
        require_builtin(&n, &c, &[Builtin::Bootstrap, Builtin::Superuser])?;
        let JsonBody(req) = body?;
        crate::unseal::initialize(&n, req).await
    })
    .await
}

pub(super) async fn verify(State(n): N, Caller(c): Caller) -> Response {
    n.respond("bootstrap.verify", &c, None, async {
        require_builtin(&n, &c, &[Builtin::Bootstrap, Builtin::Superuser])?;
        crate::unseal::verify(&n).await
    })
    .await
}

pub(super) async fn status(State(n): N, Caller(c): Caller) -> Response {
    // Why Nexus is sealed (bootstrap, keepers, store, audit log) describes its deployment: only
    // administrators learn it. Everyone else learns whether it serves. While sealed no policy
    // is loaded, so there the administrators are the superuser role alone.
    let admin = n.authorize_admin(&c).is_ok();
    let s = StatusResponse {
        initialized: admin.then(|| n.init_record().is_some()),
        sealed: n.is_sealed(),
        reason: n.seal_reason().filter(|_| admin),
        caller: c.to_string(),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        // Record counts are not for every caller: administrators only.
        reencryption: n
            .opened()
            .ok()
            .filter(|_| admin)
            .and_then(|_| n.reencryption().status()),
    };
    Json(s).into_response()
}

/// A copy of the log, or one piece of it: `after` (with `linesBefore`) is where the pieces
/// before it ended, so a copy of any size is checked piece by piece within the body limit.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct AuditUpload {
    log: String,
    #[serde(default)]
    after: Option<spike_core::audit::Checkpoint>,
    #[serde(default)]
    lines_before: u64,
}

/// The first bad line and what is wrong with it, the line number said once.
fn problem(e: &spike_core::audit::VerifyError) -> (Option<u64>, String) {
    let text = match e {
        spike_core::audit::VerifyError::Line { problem, .. } => problem.to_string(),
        other => other.to_string(),
    };
    (e.first_bad_line(), text)
}

pub(super) async fn audit_verify(
    State(n): N,
    Caller(c): Caller,
    body: Result<JsonBody<AuditUpload>, AppError>,
) -> Response {
    n.respond("audit.verify", &c, None, async {
        let o = n.opened()?;
        require_builtin(&n, &c, &[Builtin::Superuser])?;
        let key = o.audit_key();
        // An uploaded copy is checked on its own; the live log (every file, in order,
        // streaming) also against the checkpoint stored with the data, which catches a cut
        // tail or a missing file.
        match body {
            Ok(JsonBody(u)) => {
                let mut v = match u.after {
                    Some(head) => ChainVerifier::after(&key, head, u.lines_before),
                    None => ChainVerifier::new(&key),
                };
                let checked = v.read(u.log.as_bytes()).and_then(|()| v.finish());
                Ok(report(checked.map_err(|e| problem(&e)), None))
            }
            Err(e) if e.code() == ErrorCode::UnsupportedMediaType => {
                let files = o.audit.files().clone();
                let anchor = store_anchor(n.store().clone());
                tokio::task::spawn_blocking(move || {
                    let stored = anchor.load(&key).map_err(|e| (None, e.to_string()));
                    let result = match stored {
                        Ok(cp) => verify_files(&files, &key, cp)
                            .map_err(|e| {
                                let (line, text) = problem(&e.error);
                                let text = match &e.file {
                                    Some((path, l)) => {
                                        format!("{text} (file {}, its line {l})", path.display())
                                    }
                                    None => text,
                                };
                                (line, text)
                            })
                            .map(|r| (r, cp)),
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok((r, cp)) => report(Ok(r), cp),
                        Err(e) => report(Err(e), None),
                    }
                })
                .await
                .map_err(|e| AppError::internal("audit verify", e))
            }
            Err(e) => Err(e),
        }
    })
    .await
}
