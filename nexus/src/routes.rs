//! HTTP routes: the mTLS `/v1` API and the plain health/metrics port.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use spike_core::api::{
    AuditVerifyResponse, InitRequest, ListPoliciesResponse, ListQuery, ListSecretsResponse,
    PutPolicyRequest, PutSecretRequest, StatusResponse, VersionQuery, VersionsRequest,
};
use spike_core::error::ErrorCode;
use spike_core::id::{Builtin, SpiffeId};
use spike_core::path::{PathPrefix, SecretPath};
use spike_core::policy::Permission;

use crate::error::{AppError, AppResult};
use crate::extract::{Caller, JsonBody};
use crate::secrets::VersionOp;
use crate::state::Nexus;

type N = State<Arc<Nexus>>;

/// The `/v1` API, served over mTLS.
pub(crate) fn api_router(nexus: Arc<Nexus>) -> Router {
    let max_body = nexus.config.max_body;
    Router::new()
        .route("/v1/secrets/data/{*path}", put(put_secret).get(get_secret))
        .route("/v1/secrets/metadata/{*path}", get(secret_metadata))
        .route("/v1/secrets/list", get(list_secrets))
        .route("/v1/secrets/delete/{*path}", post(delete_versions))
        .route("/v1/secrets/undelete/{*path}", post(undelete_versions))
        .route("/v1/secrets/destroy/{*path}", post(destroy_versions))
        .route("/v1/policies", get(list_policies))
        .route(
            "/v1/policies/{name}",
            put(put_policy).get(get_policy).delete(delete_policy),
        )
        .route("/v1/bootstrap/init", post(init))
        .route("/v1/bootstrap/verify", post(verify))
        .route("/v1/status", get(status))
        .route("/v1/audit/verify", post(audit_verify))
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
    let body = n.metrics.render(n.is_sealed(), &n.store.stats());
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
        let result = body.await;
        let outcome = result.as_ref().map(|_| ()).map_err(AppError::code);
        let opened = self.opened().ok();
        let audited = self
            .audit(opened.as_deref(), caller, action, path, &outcome)
            .await;
        let response = match (result, audited) {
            (_, Err(e)) | (Err(e), _) => e.into_response(),
            (Ok(v), Ok(())) => Json(v).into_response(),
        };
        self.metrics.record(action, response.status().as_u16());
        response
    }
}

fn parse_path(raw: &str) -> AppResult<SecretPath> {
    SecretPath::parse(raw).map_err(|e| AppError::new(ErrorCode::InvalidPath, e.to_string()))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> AppResult<T> {
    q.map(|Query(v)| v).map_err(|_| {
        AppError::new(
            ErrorCode::BadRequest,
            "invalid query parameters; see docs/api.md",
        )
    })
}

async fn put_secret(
    State(n): N,
    Caller(c): Caller,
    Path(p): Path<String>,
    body: Result<JsonBody<PutSecretRequest>, AppError>,
) -> Response {
    n.respond("secret.put", &c, Some(&p), async {
        let o = n.opened()?;
        let path = parse_path(&p)?;
        n.authorize(&c, &path, Permission::Write)?;
        let JsonBody(req) = body?;
        n.secrets.put(&o.keys, &path, &req.data, req.cas).await
    })
    .await
}

async fn get_secret(
    State(n): N,
    Caller(c): Caller,
    Path(p): Path<String>,
    q: Result<Query<VersionQuery>, QueryRejection>,
) -> Response {
    n.respond("secret.get", &c, Some(&p), async {
        let o = n.opened()?;
        let path = parse_path(&p)?;
        n.authorize(&c, &path, Permission::Read)?;
        let q = query(q)?;
        n.secrets.get(&o.keys, &path, q.version).await
    })
    .await
}

async fn secret_metadata(State(n): N, Caller(c): Caller, Path(p): Path<String>) -> Response {
    n.respond("secret.metadata", &c, Some(&p), async {
        let o = n.opened()?;
        let path = parse_path(&p)?;
        // Metadata reveals versions and times, not values: read or list suffices.
        if n.authorize(&c, &path, Permission::Read).is_err() {
            n.authorize(&c, &path, Permission::List)?;
        }
        n.secrets.metadata(&o.keys, &path).await
    })
    .await
}

async fn list_secrets(
    State(n): N,
    Caller(c): Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let q = match query(q) {
        Ok(q) => q,
        Err(e) => {
            return n
                .respond::<()>("secret.list", &c, None, async { Err(e) })
                .await;
        }
    };
    let prefix = q.prefix.clone().filter(|p| !p.is_empty());
    n.respond("secret.list", &c, prefix.as_deref(), async {
        let o = n.opened()?;
        let prefix = prefix.as_deref().map(parse_path).transpose()?;
        let limit = q.limit.unwrap_or(100);
        // Match the caller's ID against the policies once, not once per stored path.
        let engine = n.policies.engine();
        let mine = engine.for_caller(&c);
        let under = prefix.clone().map_or(PathPrefix::ROOT, PathPrefix::from);
        let is_superuser = Builtin::of(&c, n.trust_domain()) == Some(Builtin::Superuser);
        if !is_superuser && !mine.could_list_under(&under) {
            // Nothing here can be visible to this caller (built-in identities other than the
            // superuser never are): skip the scan.
            return Ok(ListSecretsResponse {
                secrets: Vec::new(),
                next: None,
            });
        }
        let (secrets, next) = n
            .secrets
            .list(
                &o.keys,
                prefix.as_ref(),
                q.after.as_deref(),
                limit,
                |path| is_superuser || mine.may_list(path),
            )
            .await?;
        Ok(ListSecretsResponse { secrets, next })
    })
    .await
}

async fn versions_op(
    n: Arc<Nexus>,
    c: SpiffeId,
    p: String,
    body: Result<JsonBody<VersionsRequest>, AppError>,
    op: VersionOp,
) -> Response {
    let action = match op {
        VersionOp::Delete => "secret.delete",
        VersionOp::Undelete => "secret.undelete",
        VersionOp::Destroy => "secret.destroy",
    };
    n.respond(action, &c, Some(&p), async {
        let o = n.opened()?;
        let path = parse_path(&p)?;
        n.authorize(&c, &path, Permission::Delete)?;
        let JsonBody(req) = body?;
        if op == VersionOp::Destroy && req.versions.is_empty() {
            return Err(AppError::new(
                ErrorCode::BadRequest,
                "destroy needs explicit versions",
            ));
        }
        n.secrets
            .change_versions(&o.keys, &path, &req.versions, op)
            .await
    })
    .await
}

async fn delete_versions(
    State(n): N,
    Caller(c): Caller,
    Path(p): Path<String>,
    body: Result<JsonBody<VersionsRequest>, AppError>,
) -> Response {
    versions_op(n, c, p, body, VersionOp::Delete).await
}

async fn undelete_versions(
    State(n): N,
    Caller(c): Caller,
    Path(p): Path<String>,
    body: Result<JsonBody<VersionsRequest>, AppError>,
) -> Response {
    versions_op(n, c, p, body, VersionOp::Undelete).await
}

async fn destroy_versions(
    State(n): N,
    Caller(c): Caller,
    Path(p): Path<String>,
    body: Result<JsonBody<VersionsRequest>, AppError>,
) -> Response {
    versions_op(n, c, p, body, VersionOp::Destroy).await
}

async fn put_policy(
    State(n): N,
    Caller(c): Caller,
    Path(name): Path<String>,
    body: Result<JsonBody<PutPolicyRequest>, AppError>,
) -> Response {
    n.respond("policy.put", &c, Some(&name), async {
        let o = n.opened()?;
        n.authorize_admin(&c)?;
        let JsonBody(req) = body?;
        n.policies.put(&o.keys, &name, req).await
    })
    .await
}

async fn get_policy(State(n): N, Caller(c): Caller, Path(name): Path<String>) -> Response {
    n.respond("policy.get", &c, Some(&name), async {
        let o = n.opened()?;
        n.authorize_admin(&c)?;
        n.policies.get(&o.keys, &name).await
    })
    .await
}

async fn list_policies(State(n): N, Caller(c): Caller) -> Response {
    n.respond("policy.list", &c, None, async {
        let o = n.opened()?;
        n.authorize_admin(&c)?;
        Ok(ListPoliciesResponse {
            policies: n.policies.list(&o.keys).await?,
        })
    })
    .await
}

async fn delete_policy(State(n): N, Caller(c): Caller, Path(name): Path<String>) -> Response {
    n.respond("policy.delete", &c, Some(&name), async {
        let o = n.opened()?;
        n.authorize_admin(&c)?;
        n.policies.delete(&o.keys, &name).await?;
        Ok(serde_json::json!({ "deleted": name }))
    })
    .await
}

fn require_builtin(n: &Nexus, c: &SpiffeId, allowed: &[Builtin]) -> AppResult<()> {
    match Builtin::of(c, n.trust_domain()) {
        Some(b) if allowed.contains(&b) => Ok(()),
        _ => Err(AppError::forbidden()),
    }
}

async fn init(
    State(n): N,
    Caller(c): Caller,
    body: Result<JsonBody<InitRequest>, AppError>,
) -> Response {
    n.respond("bootstrap.init", &c, None, async {
        require_builtin(&n, &c, &[Builtin::Bootstrap, Builtin::Superuser])?;
        let JsonBody(req) = body?;
        n.initialize(req).await
    })
    .await
}

async fn verify(State(n): N, Caller(c): Caller) -> Response {
    n.respond("bootstrap.verify", &c, None, async {
        require_builtin(&n, &c, &[Builtin::Bootstrap, Builtin::Superuser])?;
        n.verify().await
    })
    .await
}

async fn status(State(n): N, Caller(c): Caller) -> Response {
    let s = StatusResponse {
        initialized: n.init_record().is_some(),
        sealed: n.is_sealed(),
        reason: n.seal_reason(),
        caller: c.to_string(),
    };
    Json(s).into_response()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditUpload {
    log: String,
}

async fn audit_verify(
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
                let bytes = tokio::fs::read(&n.config.audit_log)
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
