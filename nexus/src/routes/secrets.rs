//! Secret routes: data, metadata, list, delete, undelete, destroy.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use spike_core::api::{
    ListQuery, ListSecretsResponse, PutSecretRequest, VersionQuery, VersionsRequest,
};
use spike_core::error::ErrorCode;
use spike_core::id::{Builtin, SpiffeId};
use spike_core::path::PathPrefix;
use spike_core::pattern::PathSpan;
use spike_core::policy::Permission;

use super::{N, query};
use crate::error::AppError;
use crate::extract::{Caller, JsonBody};
use crate::secrets::{Sight, VersionOp};
use crate::state::Nexus;

pub(super) async fn put(
    State(n): N,
    Caller(c): Caller,
    Path(p): Path<String>,
    body: Result<JsonBody<PutSecretRequest>, AppError>,
) -> Response {
    n.respond("secret.put", &c, Some(&p), async {
        let o = n.opened()?;
        let path = n.parse_path(&p)?;
        n.authorize(&c, &path, Permission::Write)?;
        let sight = n.put_sight(&c, &path);
        let JsonBody(req) = body?;
        let scope = n.scope_change(req.scope.as_ref())?;
        n.secrets()
            .put(&o.keys, &path, &req.data, req.cas, scope.as_ref(), sight)
            .await
    })
    .await
}

pub(super) async fn get(
    State(n): N,
    Caller(c): Caller,
    Path(p): Path<String>,
    q: Result<Query<VersionQuery>, QueryRejection>,
) -> Response {
    n.respond("secret.get", &c, Some(&p), async {
        let o = n.opened()?;
        let path = n.parse_path(&p)?;
        n.authorize(&c, &path, Permission::Read)?;
        let q = query(q)?;
        n.secrets()
            .get(&o.keys, &path, q.version, &c, crate::clock::unix_now())
            .await
    })
    .await
}

pub(super) async fn metadata(State(n): N, Caller(c): Caller, Path(p): Path<String>) -> Response {
    n.respond("secret.metadata", &c, Some(&p), async {
        let o = n.opened()?;
        let path = n.parse_path(&p)?;
        // Metadata reveals versions and times, not values: read or list suffices.
        if n.authorize(&c, &path, Permission::Read).is_err() {
            n.authorize(&c, &path, Permission::List)?;
        }
        n.secrets().metadata(&o.keys, &path).await
    })
    .await
}

pub(super) async fn list(
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
        let prefix = prefix.as_deref().map(|p| n.parse_path(p)).transpose()?;
        let limit = q.limit.unwrap_or(100);
        // Match the caller's ID against the policies once, not once per stored path.
        let engine = n.policies().engine();
        let mine = engine.for_caller(&c);
        let under = prefix.map_or(PathPrefix::ROOT, PathPrefix::from);
        let is_superuser = Builtin::of(&c, n.trust_domain()) == Some(Builtin::Superuser);
        let operator = n.operator_scope_of(&c);
        // Scan only where the caller's list grants reach (built-in identities other than the
        // superuser and the operator have none), so a listing's cost tells nothing of the
        // secrets it hides.
        let spans = match operator {
            _ if is_superuser => vec![PathSpan::Under(under)],
            Some(scope) => scope
                .path_scope()
                .span()
                .within(&under)
                .into_iter()
                .collect(),
            None => mine.list_spans(&under),
        };
        let (secrets, next) = n
            .secrets()
            .list(&o.keys, &spans, q.after.as_deref(), limit, |path| {
                is_superuser
                    || operator.is_some_and(|s| s.allows(path, Permission::List))
                    || mine.may_list(path)
            })
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
        let path = n.parse_path(&p)?;
        n.authorize(&c, &path, Permission::Delete)?;
        let JsonBody(req) = body?;
        if op == VersionOp::Destroy && req.versions.is_empty() {
            return Err(AppError::new(
                ErrorCode::BadRequest,
                "destroy needs explicit versions",
            ));
        }
        let sight = n.put_sight(&c, &path);
        let mut resp = n
            .secrets()
            .change_versions(&o.keys, &path, &req.versions, op)
            .await?;
        // Like a put's answer: no version numbers of other people's writes to a caller that
        // may neither read nor list the path, beyond the ones it named itself.
        if sight == Sight::Blind {
            resp.changed.retain(|v| req.versions.contains(v));
            resp.current_version = None;
        }
        Ok(resp)
    })
    .await
}

pub(super) async fn delete(
    State(n): N,
    Caller(c): Caller,
    Path(p): Path<String>,
    body: Result<JsonBody<VersionsRequest>, AppError>,
) -> Response {
    versions_op(n, c, p, body, VersionOp::Delete).await
}

pub(super) async fn undelete(
    State(n): N,
    Caller(c): Caller,
    Path(p): Path<String>,
    body: Result<JsonBody<VersionsRequest>, AppError>,
) -> Response {
    versions_op(n, c, p, body, VersionOp::Undelete).await
}

pub(super) async fn destroy(
    State(n): N,
    Caller(c): Caller,
    Path(p): Path<String>,
    body: Result<JsonBody<VersionsRequest>, AppError>,
) -> Response {
    versions_op(n, c, p, body, VersionOp::Destroy).await
}
