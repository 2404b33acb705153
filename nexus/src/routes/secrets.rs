//! Secret routes: data, scope, metadata, list, delete, undelete, destroy.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use spike_core::api::{
    ListQuery, ListSecretsResponse, PutSecretRequest, UpdateScopeRequest, VersionQuery,
    VersionsRequest,
};
use spike_core::error::ErrorCode;
use spike_core::id::{Builtin, SpiffeId};
use spike_core::path::PathPrefix;
use spike_core::pattern::PathSpan;
use spike_core::policy::Permission;

use super::{N, query};
use crate::error::AppError;
use crate::extract::{Caller, JsonBody, PathParam};
use crate::secrets::{Sight, VersionOp};
use crate::state::Nexus;

pub(super) async fn put(
    State(n): N,
    Caller(c): Caller,
    PathParam(p): PathParam,
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

/// `POST /v1/secrets/scope/{path}`: a put of the current values with a new scope, for a
/// writer that may not read them. Authorized, answered and audited as a put is.
pub(super) async fn scope(
    State(n): N,
    Caller(c): Caller,
    PathParam(p): PathParam,
    body: Result<JsonBody<UpdateScopeRequest>, AppError>,
) -> Response {
    n.respond("secret.scope", &c, Some(&p), async {
        let o = n.opened()?;
        let path = n.parse_path(&p)?;
        n.authorize(&c, &path, Permission::Write)?;
        let sight = n.put_sight(&c, &path);
        let JsonBody(req) = body?;
        let scope = crate::scope::ScopeChange::parse(&req.scope, n.trust_domain())?;
        n.secrets()
            .update_scope(&o.keys, &path, req.cas, &scope, sight)
            .await
    })
    .await
}

pub(super) async fn get(
    State(n): N,
    Caller(c): Caller,
    PathParam(p): PathParam,
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

pub(super) async fn metadata(State(n): N, Caller(c): Caller, PathParam(p): PathParam) -> Response {
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
    PathParam(p): PathParam,
    body: Result<JsonBody<VersionsRequest>, AppError>,
) -> Response {
    versions_op(n, c, p, body, VersionOp::Delete).await
}

pub(super) async fn undelete(
    State(n): N,
    Caller(c): Caller,
    PathParam(p): PathParam,
    body: Result<JsonBody<VersionsRequest>, AppError>,
) -> Response {
    versions_op(n, c, p, body, VersionOp::Undelete).await
}

pub(super) async fn destroy(
    State(n): N,
    Caller(c): Caller,
    PathParam(p): PathParam,
    body: Result<JsonBody<VersionsRequest>, AppError>,
) -> Response {
    versions_op(n, c, p, body, VersionOp::Destroy).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::{Value, json};
    use spike_core::admin_scope::AdminScope;

    use crate::fixtures::{Served, TD, served};
    use crate::tokens::tests::call;

    const SUPER: &str = "spiffe://spike.test/spike/pilot/role/superuser";
    const OPERATOR: &str = "spiffe://spike.test/spike/operator";
    const WRITER: &str = "spiffe://spike.test/ops/writer";
    const NOBODY: &str = "spiffe://spike.test/ops/nobody";

    /// A Nexus whose operator holds `k8s/**` and `spiffe://spike.test/ns/**`, with `k8s/web/db`
    /// and `apps/db` written by the superuser and a policy letting WRITER only write `k8s/**`.
    async fn setup() -> Served {
        let f = served(
            |c| {
                let td = spike_core::id::TrustDomain::new(TD).unwrap();
                c.operator_scope =
                    Some(AdminScope::parse("k8s/**", "spiffe://spike.test/ns/**", &td).unwrap());
            },
            true,
        )
        .await;
        for p in ["k8s/web/db", "apps/db"] {
            let (s, v) = call(
                &f.router,
                SUPER,
                Method::PUT,
                &format!("/v1/secrets/data/{p}"),
                json!({"data": {"pass": "hunter2"}}),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
        let (s, v) = call(
            &f.router,
            SUPER,
            Method::PUT,
            "/v1/policies/writer",
            json!({"spiffeIdPattern": WRITER, "pathPattern": "k8s/**", "permissions": ["write"]}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        f
    }

    async fn scope(f: &Served, caller: &str, path: &str, body: Value) -> (StatusCode, Value) {
        call(
            &f.router,
            caller,
            Method::POST,
            &format!("/v1/secrets/scope/{path}"),
            body,
        )
        .await
    }

    async fn current(f: &Served, path: &str) -> Value {
        let (s, v) = call(
            &f.router,
            SUPER,
            Method::GET,
            &format!("/v1/secrets/data/{path}"),
            Value::Null,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    fn code(v: &Value) -> &str {
        v["error"]["code"].as_str().unwrap_or("")
    }

    /// A scope admitting namespace `ns` (and the superuser, who reads in these tests).
    fn ids(ns: &str) -> Value {
        json!({"allowedSpiffeIds": [format!("spiffe://spike.test/ns/{ns}/**"), SUPER]})
    }

    #[tokio::test]
    async fn the_operator_changes_a_scope_in_its_scope_without_reading() {
        let f = setup().await;
        // The operator holds list in its scope: it sees the version, and `unchanged`.
        let (s, v) = scope(
            &f,
            OPERATOR,
            "k8s/web/db",
            json!({"cas": 1, "scope": ids("web")}),
        )
        .await;
        assert_eq!(
            (s, &v),
            (StatusCode::OK, &json!({"version": 2, "unchanged": false}))
        );
        let (s, v) = scope(
            &f,
            OPERATOR,
            "k8s/web/db",
            json!({"cas": 2, "scope": ids("web")}),
        )
        .await;
        assert_eq!(
            (s, &v),
            (StatusCode::OK, &json!({"version": 2, "unchanged": true}))
        );
        let now = current(&f, "k8s/web/db").await;
        assert_eq!(
            (now["version"].clone(), now["data"]["pass"].clone()),
            (json!(2), json!("hunter2"))
        );
        // And it still may not read.
        let (s, v) = call(
            &f.router,
            OPERATOR,
            Method::GET,
            "/v1/secrets/data/k8s/web/db",
            Value::Null,
        )
        .await;
        assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "outside_scope"));
        let log = std::fs::read_to_string(f.dir.path().join("audit.log")).unwrap();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"secret.scope\""))
            .collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert!(!log.contains("hunter2"), "{log}");
    }

    #[tokio::test]
    async fn callers_without_write_on_the_path_are_refused_and_nothing_changes() {
        let f = setup().await;
        let body = json!({"scope": ids("web")});
        for (caller, path, want) in [
            (OPERATOR, "apps/db", "outside_scope"),
            (NOBODY, "k8s/web/db", "forbidden"),
            (WRITER, "apps/db", "forbidden"),
        ] {
            let (s, v) = scope(&f, caller, path, body.clone()).await;
            assert_eq!(
                (s, code(&v)),
                (StatusCode::FORBIDDEN, want),
                "{caller} {path}"
            );
            assert_eq!(
                current(&f, path).await["version"],
                json!(1),
                "{caller} {path}"
            );
        }
    }

    #[tokio::test]
    async fn a_writer_that_may_not_read_learns_no_version_and_no_value() {
        let f = setup().await;
        let (s, v) = scope(&f, WRITER, "k8s/web/db", json!({"scope": ids("web")})).await;
        assert_eq!((s, &v), (StatusCode::OK, &json!({"unchanged": false})));
        // The same scope again still writes: it is told nothing of the stored scope.
        let (s, v) = scope(&f, WRITER, "k8s/web/db", json!({"scope": ids("web")})).await;
        assert_eq!((s, &v), (StatusCode::OK, &json!({"unchanged": false})));
        let (s, v) = scope(
            &f,
            WRITER,
            "k8s/web/db",
            json!({"cas": 9, "scope": ids("web")}),
        )
        .await;
        assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "cas_mismatch"));
        assert!(!v.to_string().contains('3'), "{v}");
        assert_eq!(current(&f, "k8s/web/db").await["version"], json!(3));
    }

    #[tokio::test]
    async fn a_bad_scope_or_body_is_refused_and_nothing_changes() {
        let f = setup().await;
        for body in [
            json!({"scope": {"allowedSpiffeIds": ["spiffe://other.td/x"]}}),
            json!({"scope": {"allowedDestinations": ["http://x/y"]}}),
            json!({"scope": {"ttlSeconds": 1}, "data": {"pass": "x"}}),
            json!({"cas": 1}),
        ] {
            let (s, v) = scope(&f, SUPER, "k8s/web/db", body.clone()).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
            assert_eq!(
                current(&f, "k8s/web/db").await["version"],
                json!(1),
                "{body}"
            );
        }
    }
}
