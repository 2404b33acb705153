//! System routes: bootstrap, status, audit verification.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use spike_core::api::{AuditVerifyResponse, InitRequest, StatusResponse};
use spike_core::error::ErrorCode;
use spike_core::id::{Builtin, SpiffeId};

use super::N;
use crate::error::{AppError, AppResult};
use crate::extract::{Caller, JsonBody};
use crate::state::Nexus;

fn require_builtin(n: &Nexus, c: &SpiffeId, allowed: &[Builtin]) -> AppResult<()> {
    match Builtin::of(c, n.trust_domain()) {
        Some(b) if allowed.contains(&b) => Ok(()),
        _ => Err(AppError::forbidden()),
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

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditUpload {
    log: String,
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
        // An uploaded copy is checked on its own; the live log also against the newest
        // durable head this Nexus wrote, which catches truncation of its tail.
        let result = match body {
            Ok(JsonBody(u)) => spike_core::audit::verify(u.log.as_bytes(), &key),
            Err(e) if e.code() == ErrorCode::UnsupportedMediaType => {
                let bytes = tokio::fs::read(&n.config().audit_log)
                    .await
                    .map_err(|e| AppError::internal("audit log read", e))?;
                let head = o.audit_head.lock().ok().and_then(|h| *h);
                match head {
                    Some(c) => spike_core::audit::verify_against(bytes.as_slice(), &key, &c),
                    None => spike_core::audit::verify(bytes.as_slice(), &key),
                }
            }
            Err(e) => return Err(e),
        };
        Ok(match result {
            Ok(report) => AuditVerifyResponse {
                ok: true,
                lines: report.lines,
                first_bad_line: None,
                problem: None,
            },
            Err(e) => AuditVerifyResponse {
                ok: false,
                lines: 0,
                first_bad_line: e.first_bad_line(),
                problem: Some(e.to_string()),
            },
        })
    })
    .await
}
