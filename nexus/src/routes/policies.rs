//! Policy routes: the superuser, a workload with `super` on every path, or the operator within
//! its scope (`operator.path_scope`, `operator.spiffe_id_scope`; see `PolicyAdmin`).

use axum::extract::State;
use axum::response::Response;
use spike_core::api::{ExplainRequest, ListPoliciesResponse, PutPolicyRequest};
use spike_core::error::ErrorCode;
use spike_core::id::SpiffeId;

use super::N;
use crate::error::AppError;
use crate::extract::{Caller, JsonBody, PathParam};

pub(super) async fn put(
    State(n): N,
    Caller(c): Caller,
    PathParam(name): PathParam,
    body: Result<JsonBody<PutPolicyRequest>, AppError>,
) -> Response {
    n.respond("policy.put", &c, Some(&name), async {
        let o = n.opened()?;
        let admin = n.authorize_policy_admin(&c)?;
        let JsonBody(req) = body?;
        spike_core::policy::check_pattern_trust_domain(&req.spiffe_id_pattern, n.trust_domain())
            .map_err(|e| AppError::new(ErrorCode::InvalidPolicy, e.to_string()))?;
        n.policies().put(&o.keys, admin, &name, req).await
    })
    .await
}

pub(super) async fn get(State(n): N, Caller(c): Caller, PathParam(name): PathParam) -> Response {
    n.respond("policy.get", &c, Some(&name), async {
        let o = n.opened()?;
        let admin = n.authorize_policy_admin(&c)?;
        n.policies().get(&o.keys, admin, &name).await
    })
    .await
}

pub(super) async fn list(State(n): N, Caller(c): Caller) -> Response {
    n.respond("policy.list", &c, None, async {
        let o = n.opened()?;
        let admin = n.authorize_policy_admin(&c)?;
        Ok(ListPoliciesResponse {
            policies: n.policies().list(&o.keys, admin).await?,
        })
    })
    .await
}

pub(super) async fn delete(State(n): N, Caller(c): Caller, PathParam(name): PathParam) -> Response {
    n.respond("policy.delete", &c, Some(&name), async {
        let o = n.opened()?;
        let admin = n.authorize_policy_admin(&c)?;
        n.policies().delete(&o.keys, admin, &name).await?;
        Ok(serde_json::json!({ "deleted": name }))
    })
    .await
}

/// `POST /v1/access/explain`: which policies apply to an ID on a path, and why (admin only:
/// it shows every policy that matches).
pub(super) async fn explain(
    State(n): N,
    Caller(c): Caller,
    body: Result<JsonBody<ExplainRequest>, AppError>,
) -> Response {
    n.respond("policy.explain", &c, None, async {
        let _open = n.opened()?;
        n.authorize_admin(&c)?;
        let JsonBody(req) = body?;
        let id = SpiffeId::new(&req.spiffe_id)
            .map_err(|e| AppError::new(ErrorCode::BadRequest, format!("invalid SPIFFE ID: {e}")))?;
        let path = n.parse_path(&req.path)?;
        Ok(n.policies().engine().explain(&id, &path))
    })
    .await
}
