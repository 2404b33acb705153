//! Audit routes: verifying a chain (Nexus's live log, or a copy of Nexus's or a gateway's
//! log), and handing each gateway its own chain key.

use axum::extract::State;
use axum::response::Response;
use spike_core::api::{AuditChainKeyResponse, AuditVerifyResponse, MAX_SHIPPED_CHECKPOINTS};
use spike_core::audit::{AuditKey, AuditLine, ChainOwner, ChainVerifier, Checkpoint};
use spike_core::error::ErrorCode;
use spike_core::id::{Builtin, SpiffeId};
use spike_core::policy::CallerClass;
use spike_core::secret::SecretString;

use super::N;
use super::system::require_builtin;
use super::tokens::only_gateways;
use crate::audit_log::{LogFiles, store_anchor, verify_files};
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
fn chain_owner(n: &Nexus, u: &AuditUpload, log: &str) -> AppResult<ChainOwner> {
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
    let first = log.split('\n').next().unwrap_or_default();
    Ok(
        match AuditLine::parse(first).map(|l| ChainOwner::claimed_by(&l)) {
            Ok(ChainOwner::Gateway(id)) if is_ours(&id) => ChainOwner::Gateway(id),
            _ => ChainOwner::Nexus,
        },
    )
}

/// The answer of a verification: ok with the head, or the first problem.
fn report(
    result: Result<spike_core::audit::VerifyReport, Failure>,
    checkpoint: Option<Checkpoint>,
    shipped: &[Checkpoint],
) -> AuditVerifyResponse {
    let (ok, lines, first_bad_line, problem, head) = match result {
        Ok(r) => (true, r.lines, None, None, Some(r.head)),
        Err((line, problem)) => (false, 0, line, Some(problem), None),
    };
    AuditVerifyResponse {
        ok,
        lines,
        first_bad_line,
        problem,
        head,
        checkpoint,
        gateway: None,
        shipped: shipped.len() as u64,
        latest_shipped: shipped.iter().max_by_key(|c| c.seq).copied(),
    }
}

/// What to verify: a copy of the log, or one piece of it (`after`, with `linesBefore`, is
/// where the pieces before it ended, so a copy of any size is checked piece by piece within
/// the body limit), or without `log` the live log; in each case also against `checkpoints`
/// shipped to a second sink.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct AuditUpload {
    #[serde(default)]
    log: Option<String>,
    #[serde(default)]
    after: Option<Checkpoint>,
    #[serde(default)]
    lines_before: u64,
    /// The gateway whose chain the pieces before were (the answer's `gateway`): this piece
    /// must continue that chain. Absent on a first piece, whose first line says whose it is.
    #[serde(default)]
    gateway: Option<String>,
    /// Lines of the second sink (`spike-audit-checkpoint ... sealed=...`, any prefix).
    #[serde(default)]
    checkpoints: Vec<String>,
    /// More pieces follow: the chain need not reach the checkpoints yet.
    #[serde(default)]
    more: bool,
}

/// A failed verification: the first bad line, if one is to blame, and what is wrong.
type Failure = (Option<u64>, String);

/// The first bad line and what is wrong with it, the line number said once.
fn problem(e: &spike_core::audit::VerifyError) -> Failure {
    let text = match e {
        spike_core::audit::VerifyError::Line { problem, .. } => problem.to_string(),
        other => other.to_string(),
    };
    (e.first_bad_line(), text)
}

/// The shipped checkpoints, each opened under the chain's `key`: a line that is not one is a
/// bad request, one whose tag fails is a verification failure (someone edited the sink, or
/// it is another chain's or deployment's).
fn open_shipped(lines: &[String], key: &AuditKey) -> AppResult<Result<Vec<Checkpoint>, Failure>> {
    if lines.len() > MAX_SHIPPED_CHECKPOINTS {
        return Err(AppError::new(
            ErrorCode::TooLarge,
            format!("checkpoints: at most {MAX_SHIPPED_CHECKPOINTS}"),
        ));
    }
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match Checkpoint::open_shipped(line, key) {
            None => {
                return Err(AppError::new(
                    ErrorCode::BadRequest,
                    format!("checkpoints[{i}]: not a shipped audit checkpoint"),
                ));
            }
            Some(Ok(cp)) => out.push(cp),
            Some(Err(e)) => {
                return Ok(Err((
                    None,
                    format!(
                        "shipped checkpoint {} of {}: {e}; the sink was edited, or holds another chain's",
                        i + 1,
                        lines.len()
                    ),
                )));
            }
        }
    }
    Ok(Ok(out))
}

/// Verifies an uploaded copy (or piece) under its owner's key.
fn verify_copy(
    n: &Nexus,
    key: AuditKey,
    u: AuditUpload,
    log: &str,
) -> AppResult<AuditVerifyResponse> {
    let owner = chain_owner(n, &u, log)?;
    let key = match &owner {
        ChainOwner::Gateway(id) => key.for_gateway(id),
        ChainOwner::Nexus => key,
    };
    let shipped = match open_shipped(&u.checkpoints, &key)? {
        Ok(s) => s,
        Err(bad) => return Ok(report(Err(bad), None, &[])),
    };
    let mut v = match u.after {
        Some(head) => ChainVerifier::after(&key, head, u.lines_before),
        None => ChainVerifier::new(&key),
    }
    .owned_by(owner.clone())
    .reaching(shipped.iter().copied());
    let checked = v.read(log.as_bytes()).and_then(|()| match u.more {
        true => Ok(v.progress()),
        false => v.finish(),
    });
    let mut answer = report(checked.map_err(|e| problem(&e)), None, &shipped);
    if let ChainOwner::Gateway(id) = owner {
        answer.gateway = Some(id.to_string());
    }
    Ok(answer)
}

/// Verifies the live log (every file, in order, streaming) against the checkpoint stored
/// with the data, which catches a cut tail or a missing file, and the `shipped` lines.
async fn verify_live(
    n: &Nexus,
    files: LogFiles,
    key: AuditKey,
    shipped: &[String],
) -> AppResult<AuditVerifyResponse> {
    let shipped = match open_shipped(shipped, &key)? {
        Ok(s) => s,
        Err(bad) => return Ok(report(Err(bad), None, &[])),
    };
    let anchor = store_anchor(n.store().clone());
    tokio::task::spawn_blocking(move || {
        let cp = match anchor.load(&key) {
            Ok(cp) => cp,
            Err(e) => return report(Err((None, e.to_string())), None, &shipped),
        };
        let checked = verify_files(&files, &key, cp.into_iter().chain(shipped.iter().copied()))
            .map_err(|e| {
                let (line, text) = problem(&e.error);
                let text = match &e.file {
                    Some((path, l)) => format!("{text} (file {}, its line {l})", path.display()),
                    None => text,
                };
                (line, text)
            });
        report(checked, cp, &shipped)
    })
    .await
    .map_err(|e| AppError::internal("audit verify", e))
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
        let files = || o.audit.files().clone();
        match body {
            Ok(JsonBody(mut u)) => match u.log.take() {
                Some(log) => verify_copy(&n, key, u, &log),
                None => verify_live(&n, files(), key, &u.checkpoints).await,
            },
            Err(e) if e.code() == ErrorCode::UnsupportedMediaType => {
                verify_live(&n, files(), key, &[]).await
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

    #[tokio::test]
    async fn logs_are_checked_against_shipped_checkpoints() {
        use spike_core::audit::{AuditLine, AuditMac, Checkpoint};
        let s = served(|_| {}, true).await;
        let key = s.nexus.opened().unwrap().audit_key();
        for _ in 0..3 {
            chain_key(&s, "spike/gateway/a").await;
        }
        let log = std::fs::read_to_string(s.dir.path().join("audit.log")).unwrap();
        let heads: Vec<Checkpoint> = log
            .lines()
            .map(|l| AuditLine::parse(l).unwrap().checkpoint())
            .collect();
        let ship = |cps: &[Checkpoint], key: &AuditKey| {
            cps.iter()
                .map(|c| {
                    format!(
                        "Dec  3 14:08:24 host spike-audit[7]: {}",
                        c.shipped_line(key)
                    )
                })
                .collect::<Vec<_>>()
        };
        // The live log passes through them.
        let r = verify(
            &s,
            serde_json::json!({ "checkpoints": ship(&heads[..3], &key) }),
        )
        .await;
        assert!(r.ok, "{r:?}");
        assert_eq!((r.shipped, r.latest_shipped), (3, Some(heads[2])));
        // A checkpoint the log no longer reaches (the log and the store rolled back
        // together), or one it passes with another MAC (a rewritten chain).
        let last = *heads.last().unwrap();
        let beyond = Checkpoint {
            seq: last.seq + 100,
            mac: AuditMac::from_bytes([1; 32]),
        };
        let r = verify(
            &s,
            serde_json::json!({ "checkpoints": ship(&[heads[0], beyond], &key) }),
        )
        .await;
        assert!(!r.ok, "{r:?}");
        assert!(
            r.problem
                .unwrap()
                .contains("lines were removed from the end")
        );
        let forked = Checkpoint {
            seq: heads[1].seq,
            mac: AuditMac::from_bytes([1; 32]),
        };
        let r = verify(
            &s,
            serde_json::json!({ "checkpoints": ship(&[forked], &key) }),
        )
        .await;
        assert_eq!((r.ok, r.first_bad_line), (false, Some(2)), "{r:?}");
        // An edited sink, or another chain's checkpoint: named, nothing else checked.
        let mut edited = ship(&heads[..2], &key);
        edited[1] = edited[1].replace("sealed=5341433100", "sealed=5341433101");
        let other = ship(&heads[..1], &key.for_gateway(&id("spike/gateway/a")));
        for (name, lines, at) in [
            ("edited", edited, "2 of 2"),
            ("other chain", other, "1 of 1"),
        ] {
            let r = verify(&s, serde_json::json!({ "checkpoints": lines })).await;
            assert!(!r.ok, "{name}: {r:?}");
            let problem = r.problem.unwrap();
            assert!(
                problem.contains(&format!("shipped checkpoint {at}")),
                "{name}: {problem}"
            );
        }
        // A copy in pieces: only the last must reach them.
        let lines: Vec<&str> = log.split_inclusive('\n').collect();
        let first = verify(
            &s,
            serde_json::json!({ "log": lines[..2].concat(), "checkpoints": ship(&[beyond], &key), "more": true }),
        )
        .await;
        assert!(first.ok, "{first:?}");
        let second = verify(
            &s,
            serde_json::json!({
                "log": lines[2..].concat(),
                "after": first.head,
                "linesBefore": first.lines,
                "checkpoints": ship(&[beyond], &key),
            }),
        )
        .await;
        assert!(!second.ok, "{second:?}");
        // Not checkpoints, or too many: refused as a bad request.
        for (body, status) in [
            (
                serde_json::json!({ "checkpoints": ["hello"] }),
                StatusCode::BAD_REQUEST,
            ),
            (
                serde_json::json!({ "checkpoints": vec![ship(&heads[..1], &key)[0].clone(); 513] }),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
        ] {
            let (got, _) = post(
                &s,
                "spike/pilot/role/superuser",
                "/v1/audit/verify",
                Some(body.to_string()),
            )
            .await;
            assert_eq!(got, status);
        }
    }
}
