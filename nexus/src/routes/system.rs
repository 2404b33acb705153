//! System routes: bootstrap and status.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use spike_core::api::{InitRequest, StatusResponse};
use spike_core::id::{Builtin, SpiffeId};

use super::N;
use crate::error::{AppError, AppResult};
use crate::extract::{Caller, JsonBody};
use crate::state::Nexus;

pub(super) fn require_builtin(n: &Nexus, c: &SpiffeId, allowed: &[Builtin]) -> AppResult<()> {
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
