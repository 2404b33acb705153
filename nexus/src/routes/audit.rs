//! Audit routes: verifying a chain (Nexus's live log, or a copy of Nexus's or a gateway's
//! log), and handing each gateway its own chain key.

use axum::extract::State;
use axum::response::Response;
use spike_core::api::{AuditChainKeyResponse, AuditVerifyResponse};
use spike_core::audit::{AuditLine, ChainOwner, ChainVerifier};
use spike_core::error::ErrorCode;
use spike_core::id::{Builtin, SpiffeId};
use spike_core::policy::CallerClass;
use spike_core::secret::SecretString;

use super::N;
use super::system::require_builtin;
use super::tokens::only_gateways;
use crate::audit_log::{store_anchor, verify_files};
use crate::error::{AppError, AppResult};
use crate::extract::{Caller, JsonBody};
use crate::state::Nexus;

/// `POST /v1/audit/chain-key`: the calling gateway's chain key, derived from the audit-chain
/// key for its SPIFFE ID, so it can write lines Nexus verifies and no other gateway's (nor
/// Nexus's). Gateway identities only; the call is audited, the key never is.
pub(super) async fn chain_key(State(n): N, Caller(c): Caller) -> Response {
    n.respond("audit.chain_key", &c, None, async {
        let o = n.opened()?;
        only_gateways(&n, &c)?;
        let mut hex = o.audit_key().for_gateway(&c).to_hex();
        Ok(AuditChainKeyResponse {
            gateway: c.to_string(),
            // Moves the buffer out; the emptied zeroizing string has nothing left to wipe.
            key: SecretString::new(std::mem::take(&mut *hex)),
        })
    })
    .await
}

/// Whose chain an uploaded piece is: the gateway named by the pieces before, or the one its
/// first line claims (a gateway of this trust domain), or Nexus's. A claim only: the lines
/// must then verify under that owner's key.
fn chain_owner(n: &Nexus, u: &AuditUpload) -> AppResult<ChainOwner> {
    let is_ours = |id: &SpiffeId| {
        id.is_member_of(n.trust_domain()) && CallerClass::of(id) == CallerClass::Gateway
    };
    if let Some(g) = &u.gateway {
        return SpiffeId::new(g)
            .ok()
            .filter(is_ours)
            .map(ChainOwner::Gateway)
            .ok_or_else(|| {
                AppError::new(
                    ErrorCode::BadRequest,
                    "gateway: not a gateway identity of this trust domain",
                )
            });
    }
    let first = u.log.split('\n').next().unwrap_or_default();
    Ok(
        match AuditLine::parse(first).map(|l| ChainOwner::claimed_by(&l)) {
            Ok(ChainOwner::Gateway(id)) if is_ours(&id) => ChainOwner::Gateway(id),
            _ => ChainOwner::Nexus,
        },
    )
}

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
    /// The gateway whose chain the pieces before were (the answer's `gateway`): this piece
    /// must continue that chain. Absent on a first piece, whose first line says whose it is.
    #[serde(default)]
    gateway: Option<String>,
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
                let owner = chain_owner(&n, &u)?;
                let key = match &owner {
                    ChainOwner::Gateway(id) => key.for_gateway(id),
                    ChainOwner::Nexus => key,
                };
                let mut v = match u.after {
                    Some(head) => ChainVerifier::after(&key, head, u.lines_before),
                    None => ChainVerifier::new(&key),
                }
                .owned_by(owner.clone());
                let checked = v.read(u.log.as_bytes()).and_then(|()| v.finish());
                let mut answer = report(checked.map_err(|e| problem(&e)), None);
                if let ChainOwner::Gateway(id) = owner {
                    answer.gateway = Some(id.to_string());
                }
                Ok(answer)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, SystemTime};

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode, header};
    use spike_core::api::{AuditChainKeyResponse, AuditVerifyResponse};
    use spike_core::audit::{AuditKey, AuditRecord, Chain, Decision};
    use spike_core::id::SpiffeId;
    use spike_runtime::tls::PeerIdentity;
    use tower::ServiceExt as _;

    use crate::fixtures::{Served, served};

    fn id(path: &str) -> SpiffeId {
        SpiffeId::new(&format!("spiffe://spike.test/{path}")).unwrap()
    }

    async fn post(
        s: &Served,
        caller: &str,
        uri: &str,
        body: Option<String>,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .extension(PeerIdentity {
                id: id(caller),
                not_after: SystemTime::now() + Duration::from_secs(3600),
            });
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Body::from(body.unwrap_or_default())).unwrap();
        let resp = s.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, body.to_vec())
    }

    async fn chain_key(s: &Served, caller: &str) -> (StatusCode, Option<AuditKey>) {
        let (status, body) = post(s, caller, "/v1/audit/chain-key", None).await;
        let key = serde_json::from_slice::<AuditChainKeyResponse>(&body)
            .ok()
            .map(|r| {
                assert_eq!(r.gateway, id(caller).to_string());
                AuditKey::from_hex(r.key.expose_secret()).unwrap()
            });
        (status, key)
    }

    fn same(a: &AuditKey, b: &AuditKey) -> bool {
        a.to_hex() == b.to_hex()
    }

    #[tokio::test]
    async fn each_gateway_gets_its_own_key_and_no_one_else_gets_any() {
        let s = served(|_| {}, true).await;
        let nexus_key = s.nexus.opened().unwrap().audit_key();
        let (status, a) = chain_key(&s, "spike/gateway/a").await;
        assert_eq!(status, StatusCode::OK);
        let a = a.unwrap();
        let (_, b) = chain_key(&s, "spike/gateway/b").await;
        let b = b.unwrap();
        // Derived for the caller's own ID only: the request names no gateway, so one cannot
        // ask for another's.
        assert!(same(&a, &nexus_key.for_gateway(&id("spike/gateway/a"))));
        assert!(!same(&a, &b));
        assert!(!same(&a, &nexus_key));
        // Stable across calls.
        assert!(same(&chain_key(&s, "spike/gateway/a").await.1.unwrap(), &a));
        for caller in [
            "app/alice",
            "spike/pilot/role/superuser",
            "spike/nexus",
            "spike/gateway/a/sub",
            "spike/keeper/1",
        ] {
            let (status, key) = chain_key(&s, caller).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{caller}");
            assert!(key.is_none(), "{caller}");
        }
        // Every call is audited, and no line holds a key.
        let log = std::fs::read_to_string(s.dir.path().join("audit.log")).unwrap();
        assert_eq!(log.matches("\"audit.chain_key\"").count(), 8, "{log}");
        for k in [&a, &b] {
            assert!(!log.contains(k.to_hex().as_str()));
        }
    }

    #[tokio::test]
    async fn a_sealed_nexus_hands_out_no_key() {
        let s = served(|_| {}, false).await;
        let (status, key) = chain_key(&s, "spike/gateway/a").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(key.is_none());
    }

    fn gateway_lines(key: &AuditKey, gateway: &str, n: usize) -> Vec<String> {
        let mut chain = Chain::new(key.clone());
        (0..n)
            .map(|_| {
                chain
                    .seal(
                        AuditRecord::new("gateway.read", Decision::Allow, "ok")
                            .with_caller(id(gateway))
                            .with_tokens(["0a1b"], id("agents/x"))
                            .with_route("llm")
                            .with_destination("127.0.0.1:9"),
                    )
                    .to_json_line()
            })
            .collect()
    }

    async fn verify(s: &Served, body: serde_json::Value) -> AuditVerifyResponse {
        let (status, body) = post(
            s,
            "spike/pilot/role/superuser",
            "/v1/audit/verify",
            Some(body.to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn a_gateway_log_verifies_under_its_key_and_foreign_lines_are_found() {
        let s = served(|_| {}, true).await;
        let nexus_key = s.nexus.opened().unwrap().audit_key();
        let a_key = nexus_key.for_gateway(&id("spike/gateway/a"));
        let lines = gateway_lines(&a_key, "spike/gateway/a", 4);
        let r = verify(&s, serde_json::json!({ "log": lines.concat() })).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.lines, 4);
        assert_eq!(
            r.gateway.as_deref(),
            Some("spiffe://spike.test/spike/gateway/a")
        );
        // In two pieces, the second naming the chain of the first.
        let first = verify(&s, serde_json::json!({ "log": lines[..2].concat() })).await;
        let second = verify(
            &s,
            serde_json::json!({
                "log": lines[2..].concat(),
                "after": first.head,
                "linesBefore": first.lines,
                "gateway": first.gateway,
            }),
        )
        .await;
        assert!(second.ok && second.lines == 4, "{second:?}");

        // A Nexus line, another gateway's line, an edit, a removed or a reordered line: the
        // line is named.
        let nexus_line = Chain::resume(nexus_key.clone(), spike_core::audit::Checkpoint::GENESIS)
            .seal(AuditRecord::new("secret.get", Decision::Allow, "ok").with_caller(id("app/x")))
            .to_json_line();
        let b_line = gateway_lines(
            &nexus_key.for_gateway(&id("spike/gateway/b")),
            "spike/gateway/b",
            1,
        )
        .remove(0);
        let mut with_nexus = lines.clone();
        with_nexus.insert(2, nexus_line);
        let mut with_b = lines.clone();
        with_b.insert(1, b_line);
        let mut edited = lines.clone();
        edited[2] = edited[2].replace("127.0.0.1:9", "127.0.0.1:8");
        let mut removed = lines.clone();
        removed.remove(1);
        let mut reordered = lines.clone();
        reordered.swap(1, 2);
        for (name, log, bad) in [
            ("nexus line", with_nexus, 3),
            ("other gateway", with_b, 2),
            ("edit", edited, 3),
            ("removed", removed, 2),
            ("reordered", reordered, 2),
        ] {
            let r = verify(&s, serde_json::json!({ "log": log.concat() })).await;
            assert!(!r.ok, "{name}: {r:?}");
            assert_eq!(r.first_bad_line, Some(bad), "{name}: {r:?}");
        }
        // A piece said to continue gateway a's chain but holding b's lines is refused too,
        // and a `gateway` that is not one is a bad request.
        let b = gateway_lines(
            &nexus_key.for_gateway(&id("spike/gateway/b")),
            "spike/gateway/b",
            1,
        );
        let r = verify(
            &s,
            serde_json::json!({ "log": b.concat(), "gateway": "spiffe://spike.test/spike/gateway/a" }),
        )
        .await;
        assert_eq!((r.ok, r.first_bad_line), (false, Some(1)), "{r:?}");
        let (status, _) = post(
            &s,
            "spike/pilot/role/superuser",
            "/v1/audit/verify",
            Some(
                serde_json::json!({ "log": "", "gateway": "spiffe://spike.test/app/x" })
                    .to_string(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
