//! HTTP routes: the mTLS `/v1` API and the plain health/metrics port.
//!
//! One module per area; this one assembles the router and holds what every handler shares:
//! [`Nexus::respond`] (audit, metrics, answer) and the path and query parsers.

mod audit;
mod batch;
mod cipher;
mod operator;
mod policies;
mod secrets;
mod system;
mod tokens;

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use spike_core::error::ErrorCode;
use spike_core::id::SpiffeId;
use spike_core::path::SecretPath;
use spike_core::policy::Permission;

use crate::error::{AppError, AppResult};
use crate::secrets::Sight;
use crate::state::Nexus;

/// The state extractor every handler takes.
type N = State<Arc<Nexus>>;

/// The `/v1` API, served over mTLS.
pub(crate) fn api_router(nexus: Arc<Nexus>) -> Router {
    let max_body = nexus.config().max_body;
    Router::new()
        .route(
            "/v1/secrets/data/{*path}",
            put(secrets::put).get(secrets::get),
        )
        .route("/v1/secrets/scope/{*path}", post(secrets::scope))
        .route("/v1/secrets/metadata/{*path}", get(secrets::metadata))
        .route("/v1/secrets/list", get(secrets::list))
        .route("/v1/secrets/delete/{*path}", post(secrets::delete))
        .route("/v1/secrets/undelete/{*path}", post(secrets::undelete))
        .route("/v1/secrets/destroy/{*path}", post(secrets::destroy))
        .route("/v1/policies", get(policies::list))
        .route(
            "/v1/policies/{name}",
            put(policies::put)
                .get(policies::get)
                .delete(policies::delete),
        )
        .route("/v1/bootstrap/init", post(system::init))
        .route("/v1/bootstrap/verify", post(system::verify))
        .route("/v1/status", get(system::status))
        .route("/v1/audit/verify", post(audit::audit_verify))
        .route("/v1/audit/chain-key", post(audit::chain_key))
        .merge(batch::routes())
        .merge(cipher::routes())
        .merge(operator::routes())
        .merge(tokens::routes())
        .fallback(|| async { AppError::new(ErrorCode::NotFound, "no such route; see docs/api.md") })
        .method_not_allowed_fallback(|| async {
            AppError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(nexus)
}

/// `/healthz`, `/readyz` (ready = unsealed), `/metrics`.
pub(crate) fn health_router(nexus: Arc<Nexus>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(nexus)
}

async fn readyz(State(n): N) -> Response {
    match n.seal_reason() {
        None => (StatusCode::OK, "ready").into_response(),
        Some(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("sealed: {reason}")).into_response()
        }
    }
}

async fn metrics(State(n): N) -> Response {
    let mut body = n.metrics().render(n.is_sealed(), &n.store().stats());
    body.push_str(&crate::metrics::render_keepers(
        n.keepers().reachable(),
        n.keepers().len(),
        n.keepers().witnessing(),
        n.store().witness().map(|w| w.generation),
    ));
    body.push_str(&n.reencryption().render());
    if let Ok(o) = n.opened() {
        body.push_str(&o.audit.stats().render());
    }
    body.push_str(&format!(
        "# HELP spike_audit_suppressed_total Refusals counted in summary lines instead of written one by one (callers over their refusal rate).\n\
         # TYPE spike_audit_suppressed_total counter\nspike_audit_suppressed_total {}\n",
        n.suppressed().total()
    ));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

impl Nexus {
    /// Runs a handler body, audits its outcome (fail closed), counts it, and answers.
    async fn respond<T: Serialize>(
        &self,
        action: &'static str,
        caller: &SpiffeId,
        path: Option<&str>,
        body: impl Future<Output = AppResult<T>>,
    ) -> Response {
        if let Some(refused) = self.over_refusal_rate(action, caller) {
            return refused;
        }
        let result = body.await.map(|v| Json(v).into_response());
        self.finish(action, caller, path, result).await
    }

    /// The answer to a caller over its refusal rate, if it is: answered before anything runs,
    /// and only counted, so a flood of refused requests costs neither work nor audit log.
    fn over_refusal_rate(&self, action: &'static str, caller: &SpiffeId) -> Option<Response> {
        if !self.refusals_exhausted(caller) {
            return None;
        }
        let mut response = AppError::new(
            ErrorCode::RateLimited,
            "too many refused requests from this SPIFFE ID; slow down and retry",
        )
        .into_response();
        no_store(&mut response);
        self.metrics().record(action, response.status().as_u16());
        Some(response)
    }

    /// Audits a finished handler's outcome (fail closed: if the line cannot be written the
    /// caller gets an error, not the answer), counts it, and marks the answer uncacheable:
    /// it may carry secret values.
    async fn finish(
        &self,
        action: &'static str,
        caller: &SpiffeId,
        path: Option<&str>,
        result: AppResult<Response>,
    ) -> Response {
        let outcome = result.as_ref().map(|_| ()).map_err(AppError::code);
        let record = Self::audit_line(caller, action, path, &outcome);
        self.finish_audited(action, result, record, &outcome).await
    }

    /// [`Nexus::finish`] with an audit line of the handler's own making (token routes name
    /// the token, and a resolution's line keeps a reason its answer does not tell).
    async fn finish_audited(
        &self,
        action: &'static str,
        result: AppResult<Response>,
        record: spike_core::audit::AuditRecord,
        outcome: &Result<(), ErrorCode>,
    ) -> Response {
        let opened = self.opened().ok();
        let audited = self.audit_record(opened.as_deref(), record, outcome).await;
        let mut response = match (result, audited) {
            (_, Err(e)) | (Err(e), _) => e.into_response(),
            (Ok(r), Ok(())) => r,
        };
        no_store(&mut response);
        self.metrics().record(action, response.status().as_u16());
        response
    }
}

/// Marks an answer uncacheable: it may carry secret values.
fn no_store(response: &mut Response) {
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
}

impl Nexus {
    /// What a writer of `path` may learn from its put (the caller already holds `write`).
    fn put_sight(&self, caller: &SpiffeId, path: &SecretPath) -> Sight {
        let holds = |perm| self.authorize(caller, path, perm).is_ok();
        if holds(Permission::Read) {
            Sight::Read
        } else if holds(Permission::List) {
            Sight::List
        } else {
            Sight::Blind
        }
    }

    /// Validates a put's scope changes for the trust domain this Nexus serves.
    pub(crate) fn scope_change(
        &self,
        update: Option<&spike_core::api::ScopeUpdate>,
    ) -> AppResult<Option<crate::scope::ScopeChange>> {
        update
            .map(|u| crate::scope::ScopeChange::parse(u, self.trust_domain()))
            .transpose()
    }

    /// Parses a secret path from a request under the configured `[limits]` `max_path_len` and
    /// `max_path_depth` (`400 invalid_path` beyond them).
    pub(crate) fn parse_path(&self, raw: &str) -> AppResult<SecretPath> {
        SecretPath::parse_with(raw, &self.config().path_limits)
            .map_err(|e| AppError::new(ErrorCode::InvalidPath, e.to_string()))
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> AppResult<T> {
    q.map(|Query(v)| v).map_err(|_| {
        AppError::new(
            ErrorCode::BadRequest,
            "invalid query parameters; see docs/api.md",
        )
    })
}

// The key lifecycle's typed errors become wire errors here, at the edge; an internal cause
// is logged once, by `AppError::internal`.
impl From<crate::state::InitStoreError> for AppError {
    fn from(e: crate::state::InitStoreError) -> Self {
        use crate::state::InitStoreError as E;
        match e {
            E::NotInitialized => Self::new(ErrorCode::NotInitialized, e.to_string()),
            E::Changed => Self::new(ErrorCode::CasMismatch, e.to_string()),
            E::Record(_) | E::Store(_) => Self::internal("init record", &e),
        }
    }
}

impl From<crate::unseal::UnsealError> for AppError {
    fn from(e: crate::unseal::UnsealError) -> Self {
        Self::internal("open", &e)
    }
}

impl From<crate::rotation::RotationError> for AppError {
    fn from(e: crate::rotation::RotationError) -> Self {
        use crate::rotation::RotationError as E;
        match e {
            E::NotOpen(api) => Self(api),
            E::Pending { .. } => Self::new(ErrorCode::Unavailable, e.to_string()),
            E::ShareCount(_) | E::Params(_) => Self::new(ErrorCode::BadRequest, e.to_string()),
            E::Init(init) => init.into(),
            E::Key(_) => Self::internal("root-key change", &e),
        }
    }
}
