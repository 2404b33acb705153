//! Root-key operations: break-glass recover and restore, rotate, rekey; and backups.
//!
//! Each route admits only built-in identities, checked before anything else: recover only
//! `/spike/pilot/role/recover`, restore only `/spike/pilot/role/restore`, rotate and rekey
//! only the superuser, backup the superuser or `/spike/pilot/role/backup`. Recover and restore are rate-limited per caller. Every request is
//! audited by [`Nexus::respond`]; no request or answer body is ever logged.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use spike_core::api::{RecoverRequest, RekeyRequest, RestoreRequest};
use spike_core::id::{Builtin, SpiffeId};

use super::N;
use crate::error::{AppError, AppResult};
use crate::extract::{Caller, JsonBody};
use crate::ratelimit::RateClass;
use crate::rotation::Change;
use crate::state::Nexus;
use crate::{breakglass, rotation};

/// The operator routes, merged into the `/v1` router.
pub(super) fn routes() -> Router<Arc<Nexus>> {
    Router::new()
        .route("/v1/operator/recover", post(recover))
        .route("/v1/operator/restore", post(restore))
        .route("/v1/operator/rotate", post(rotate))
        .route("/v1/operator/rekey", post(rekey))
        .route("/v1/operator/backup", post(backup))
}

/// `POST /v1/operator/backup` (superuser or `/spike/pilot/role/backup`): the backup file
/// itself, `application/octet-stream`.
async fn backup(State(n): N, Caller(c): Caller) -> Response {
    let action = "operator.backup";
    if let Some(refused) = n.over_refusal_rate(action, &c) {
        return refused;
    }
    let result = async {
        let td = n.trust_domain();
        if !matches!(
            Builtin::of(&c, td),
            Some(Builtin::Superuser | Builtin::Backup)
        ) {
            return Err(AppError::not_admin(
                &c,
                &format!(
                    "the {} or the {}",
                    Builtin::Superuser.id(td),
                    Builtin::Backup.id(td)
                ),
            ));
        }
        let opened = n.opened()?;
        let taken = crate::backup::take(n.store().as_ref(), &opened).await?;
        tracing::info!(
            entries = taken.manifest.tables.values().sum::<u64>(),
            bytes = taken.file.len(),
            "backup taken"
        );
        Ok((
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            taken.file,
        )
            .into_response())
    }
    .await;
    n.finish(action, &c, None, result).await
}

fn require(n: &Nexus, caller: &SpiffeId, role: Builtin) -> AppResult<()> {
    if Builtin::of(caller, n.trust_domain()) == Some(role) {
        Ok(())
    } else {
        Err(AppError::not_admin(
            caller,
            &format!("the {}", role.id(n.trust_domain())),
        ))
    }
}

async fn recover(
    State(n): N,
    Caller(c): Caller,
    body: Result<JsonBody<RecoverRequest>, AppError>,
) -> Response {
    n.respond("operator.recover", &c, None, async {
        require(&n, &c, Builtin::Recover)?;
        n.limiter().check(RateClass::Recover, &c)?;
        let JsonBody(req) = body?;
        // An export retires the previous one; it must never happen unrecorded. Write an
        // intent line first (fail closed): if the log cannot be written, nothing changes.
        let opened = n.opened()?;
        n.audit(Some(&opened), &c, "operator.recover.begin", None, &Ok(()))
            .await?;
        breakglass::export(&n, req).await
    })
    .await
}

async fn restore(
    State(n): N,
    Caller(c): Caller,
    body: Result<JsonBody<RestoreRequest>, AppError>,
) -> Response {
    n.respond("operator.restore", &c, None, async {
        require(&n, &c, Builtin::Restore)?;
        n.limiter().check(RateClass::Restore, &c)?;
        let JsonBody(req) = body?;
        breakglass::restore(&n, req).await
    })
    .await
}

async fn rotate(State(n): N, Caller(c): Caller) -> Response {
    n.respond("operator.rotate", &c, None, async {
        require(&n, &c, Builtin::Superuser)?;
        Ok(rotation::change(&n, Change::Rotate).await?)
    })
    .await
}

async fn rekey(
    State(n): N,
    Caller(c): Caller,
    body: Result<JsonBody<RekeyRequest>, AppError>,
) -> Response {
    n.respond("operator.rekey", &c, None, async {
        require(&n, &c, Builtin::Superuser)?;
        let JsonBody(req) = body?;
        let change = Change::Rekey {
            shares: req.shares,
            threshold: req.threshold,
        };
        Ok(rotation::change(&n, change).await?)
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, SystemTime};

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode, header};
    use spike_core::error::ErrorBody;
    use spike_runtime::tls::PeerIdentity;
    use tower::ServiceExt as _;

    use crate::fixtures::open_nexus;

    const ROLES: [&str; 5] = [
        "spike/pilot/role/superuser",
        "spike/pilot/role/recover",
        "spike/pilot/role/restore",
        "spike/bootstrap",
        "app/alice",
    ];

    async fn call(router: &axum::Router, caller: &str, uri: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .extension(PeerIdentity {
                id: spike_core::id::SpiffeId::new(&format!("spiffe://spike.test/{caller}"))
                    .unwrap(),
                not_after: SystemTime::now() + Duration::from_secs(3600),
            })
            .body(Body::from("{}"))
            .unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let code = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error.code.as_str().to_owned())
            .unwrap_or_default();
        (status, code)
    }

    #[tokio::test]
    async fn each_route_admits_only_its_role() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, n) = open_nexus(dir.path()).await;
        let router = super::super::api_router(n);
        for (uri, allowed) in [
            ("/v1/operator/recover", ROLES[1]),
            ("/v1/operator/restore", ROLES[2]),
            ("/v1/operator/rekey", ROLES[0]),
        ] {
            for caller in ROLES {
                let (status, code) = call(&router, caller, uri).await;
                if caller == allowed {
                    // Past the role check: the empty body is what is refused.
                    assert_eq!(status, StatusCode::BAD_REQUEST, "{caller} {uri}");
                } else {
                    assert_eq!(
                        (status, code.as_str()),
                        (StatusCode::FORBIDDEN, "forbidden"),
                        "{caller} {uri}"
                    );
                }
            }
        }
        for caller in &ROLES[1..] {
            let (status, _) = call(&router, caller, "/v1/operator/rotate").await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{caller}");
        }
    }

    #[tokio::test]
    async fn a_backup_is_for_the_superuser_and_the_backup_role_only() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, n) = open_nexus(dir.path()).await;
        let router = super::super::api_router(n);
        for caller in [ROLES[0], "spike/pilot/role/backup"] {
            let (status, code) = call(&router, caller, "/v1/operator/backup").await;
            // A backup is not JSON: no error code in a successful answer.
            assert_eq!((status, code.as_str()), (StatusCode::OK, ""), "{caller}");
        }
        for caller in ROLES[1..]
            .iter()
            .copied()
            .chain(["spike/pilot/role/backupx"])
        {
            let (status, code) = call(&router, caller, "/v1/operator/backup").await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::FORBIDDEN, "forbidden"),
                "{caller}"
            );
        }
    }

    #[tokio::test]
    async fn recover_and_restore_are_rate_limited_per_caller() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, n) = open_nexus(dir.path()).await;
        let router = super::super::api_router(n);
        // Defaults: recover bursts 2, restore 5.
        for (uri, role, burst) in [
            ("/v1/operator/recover", ROLES[1], 2),
            ("/v1/operator/restore", ROLES[2], 5),
        ] {
            for _ in 0..burst {
                assert_eq!(call(&router, role, uri).await.0, StatusCode::BAD_REQUEST);
            }
            assert_eq!(
                call(&router, role, uri).await,
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited".to_owned())
            );
        }
    }

    #[tokio::test]
    async fn restore_calls_while_sealed_are_chained_when_it_opens() {
        let served = crate::fixtures::served(|_| {}, false).await;
        // Sealed: no audit key yet. Before, these calls reached only the operational log.
        for _ in 0..2 {
            let (status, _) = call(&served.router, ROLES[2], "/v1/operator/restore").await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
        }
        let log = served.dir.path().join("audit.log");
        assert!(std::fs::read_to_string(&log).unwrap_or_default().is_empty());
        served
            .nexus
            .open_with(crate::fixtures::keys())
            .await
            .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let restores: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"operator.restore\""))
            .collect();
        assert_eq!(restores.len(), 2, "{text}");
        assert!(restores[0].contains("spike/pilot/role/restore"), "{text}");
        let key = served.nexus.opened().unwrap().audit_key();
        let report = spike_core::audit::verify(text.as_bytes(), &key).unwrap();
        assert_eq!(report.lines, 2);
    }
}
