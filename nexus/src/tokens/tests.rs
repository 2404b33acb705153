//! Reference tokens through the `/v1` router: a real store, real keys, the real audit log.
//! Each attack of the issue is a test with the refusal it must get.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use spike_core::id::SpiffeId;
use spike_runtime::tls::PeerIdentity;
use tower::ServiceExt as _;

use super::*;
use crate::fixtures::{Served, served};

const SUPER: &str = "spiffe://spike.test/spike/pilot/role/superuser";
const MINTER: &str = "spiffe://spike.test/ops/minter";
const READER: &str = "spiffe://spike.test/ops/reader";
const NOBODY: &str = "spiffe://spike.test/ops/nobody";
const GATEWAY: &str = "spiffe://spike.test/spike/gateway/gw";
const OTHER_GATEWAY: &str = "spiffe://spike.test/spike/gateway/other";
const AGENT: &str = "spiffe://spike.test/agents/mcp/researcher/dev";
const OTHER_AGENT: &str = "spiffe://spike.test/agents/mcp/writer/dev";
const FAKE_GATEWAY: &str = "spiffe://spike.test/workloads/spike/gateway/gw";

pub(crate) async fn call(
    r: &Router,
    caller: &str,
    method: Method,
    uri: &str,
    body: Value,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .extension(PeerIdentity {
            id: SpiffeId::new(caller).unwrap(),
            not_after: SystemTime::now() + Duration::from_secs(3600),
        });
    if !body.is_null() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let body = if body.is_null() {
        Body::empty()
    } else {
        Body::from(body.to_string())
    };
    let resp = r.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A secret's metadata, as the superuser sees it.
async fn metadata(r: &Router, path: &str) -> (StatusCode, Value) {
    call(
        r,
        SUPER,
        Method::GET,
        &format!("/v1/secrets/metadata/{path}"),
        Value::Null,
    )
    .await
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// A Nexus with secret `ai/groq` (one key) scoped to agents and `api.groq.com`, `ai/multi`
/// (two keys), and policies: MINTER may mint, READER may only read, GATEWAY resolves under
/// `ai/**`, OTHER_GATEWAY under nothing of it.
pub(crate) async fn setup() -> Served {
    let f = served(|_| {}, true).await;
    setup_on(&f.router).await;
    f
}

/// [`setup`]'s secrets and policies, written through `r`.
pub(crate) async fn setup_on(r: &Router) {
    let put = |p: &'static str, body: Value| async move {
        let (s, v) = call(
            r,
            SUPER,
            Method::PUT,
            &format!("/v1/secrets/data/{p}"),
            body,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    };
    put(
        "ai/groq",
        json!({"data": {"value": "gsk_real_credential_here"}, "scope": {
            "ttlSeconds": 3600,
            "allowedSpiffeIds": ["spiffe://spike.test/agents/**"],
            "allowedDestinations": ["api.groq.com"]}}),
    )
    .await;
    put("ai/multi", json!({"data": {"a": "1", "b": "2"}, "scope": {"allowedDestinations": ["api.example.com"]}})).await;
    for (name, id, perms, path) in [
        ("mint", MINTER, json!(["token", "list"]), "ai/**"),
        ("read", READER, json!(["read"]), "ai/**"),
        ("gw", GATEWAY, json!(["resolve"]), "ai/**"),
        (
            "other-gw",
            OTHER_GATEWAY,
            json!(["resolve"]),
            "elsewhere/**",
        ),
    ] {
        let (s, v) = call(
            r,
            SUPER,
            Method::PUT,
            &format!("/v1/policies/{name}"),
            json!({"spiffeIdPattern": id, "pathPattern": path, "permissions": perms}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
}

pub(crate) async fn mint(r: &Router, extra: Value) -> (StatusCode, Value) {
    let mut body =
        json!({"secret": "ai/groq", "spiffeId": AGENT, "ttlSeconds": 1800, "action": "read"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    call(r, MINTER, Method::POST, "/v1/tokens", body).await
}

pub(crate) async fn resolve_as(
    r: &Router,
    gateway: &str,
    token: &str,
    extra: Value,
) -> (StatusCode, Value) {
    let mut body = json!({
        "token": token, "agentSpiffeId": AGENT, "destination": "api.groq.com",
        "action": "read", "path": "/openai/v1/chat/completions", "location": "header:Authorization"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    call(r, gateway, Method::POST, "/v1/tokens/resolve", body).await
}

fn audit_lines(f: &Served) -> String {
    std::fs::read_to_string(f.dir.path().join("audit.log")).unwrap_or_default()
}

#[tokio::test]
async fn a_minted_token_resolves_for_its_agent_and_nexus_keeps_only_its_hash() {
    let f = setup().await;
    let (s, v) = mint(&f.router, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    assert!(
        token.starts_with("$SPIKE{ref:") && token.len() == 44,
        "{token}"
    );
    assert_eq!(
        v["binding"]["destinations"],
        json!(["api.groq.com:443"]),
        "the secret's"
    );
    assert_eq!(v["binding"]["locations"], json!(["header:authorization"]));
    let (s, got) = resolve_as(&f.router, GATEWAY, &token, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["value"], "gsk_real_credential_here");
    assert_eq!(got["cacheable"], true);
    // Neither the reference nor the value is stored or audited; the id is.
    let hex = &token[11..43];
    for (_, raw) in f.nexus.store().scan(TOKENS, b"", None, 100).await.unwrap() {
        assert!(!String::from_utf8_lossy(&raw).contains(hex));
    }
    let log = audit_lines(&f);
    assert!(!log.contains(hex) && !log.contains("gsk_real"), "{log}");
    assert!(log.contains(&format!(
        "\"token\":\"{}\"",
        v["binding"]["id"].as_str().unwrap()
    )));
    // Listing and inspecting show metadata only.
    let (_, l) = call(&f.router, MINTER, Method::GET, "/v1/tokens", Value::Null).await;
    assert_eq!(l["tokens"].as_array().unwrap().len(), 1);
    assert!(!l.to_string().contains(hex));
    let id = v["binding"]["id"].as_str().unwrap();
    let (s, i) = call(
        &f.router,
        MINTER,
        Method::GET,
        &format!("/v1/tokens/{}", &id[..8]),
        Value::Null,
    )
    .await;
    assert_eq!((s, i["state"].as_str()), (StatusCode::OK, Some("active")));
}

#[tokio::test]
async fn minting_needs_the_token_permission() {
    let f = setup().await;
    for caller in [NOBODY, READER] {
        let body =
            json!({"secret": "ai/groq", "spiffeId": AGENT, "ttlSeconds": 60, "action": "read"});
        let (s, v) = call(&f.router, caller, Method::POST, "/v1/tokens", body).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{caller}: {v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains("`token`"),
            "{v}"
        );
    }
    // Nor does either see or revoke tokens that exist.
    let (_, v) = mint(&f.router, json!({})).await;
    let id = v["binding"]["id"].as_str().unwrap();
    let (_, l) = call(&f.router, READER, Method::GET, "/v1/tokens", Value::Null).await;
    assert_eq!(l["tokens"], json!([]));
    let (s, _) = call(
        &f.router,
        READER,
        Method::POST,
        &format!("/v1/tokens/{id}/revoke"),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        f.nexus
            .store()
            .scan(TOKENS, b"", None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_token_is_never_wider_than_its_secret() {
    let f = setup().await;
    let cases = [
        (
            json!({"spiffeId": "spiffe://spike.test/web/app"}),
            "outside the SPIFFE IDs",
        ),
        (
            json!({"spiffeId": "spiffe://other.test/agents/x"}),
            "serves spike.test",
        ),
        (
            json!({"spiffeId": "spiffe://spike.test/agents/*/**"}),
            "outside the SPIFFE IDs",
        ),
        (
            json!({"spiffeId": "spiffe://spike.test/spike/gateway/gw"}),
            "SPIKE's own identities",
        ),
        (json!({"destinations": ["evil.example"]}), "not among those"),
        (json!({"ttlSeconds": 7200}), "outlive the secret"),
        (json!({"ttlSeconds": 0}), "TTL must be"),
        (json!({"maxUses": 0}), "at least 1"),
        (
            json!({"pathPrefixes": ["v1/chat"]}),
            "absolute request path",
        ),
        (
            json!({"secret": "ai/multi", "destinations": []}),
            "name one with --secret ai/multi:KEY",
        ),
        (json!({"secret": "ai/multi", "key": "c"}), "no key `c`"),
    ];
    for (extra, says) in cases {
        let (s, v) = mint(&f.router, extra.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{extra}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{extra}: {v}"
        );
    }
    // A token with no destination at all: the secret has none either.
    let (s, v) = call(
        &f.router,
        SUPER,
        Method::PUT,
        "/v1/secrets/data/ai/bare",
        json!({"data": {"value": "x"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = mint(&f.router, json!({"secret": "ai/bare"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs a destination"),
        "{v}"
    );
    // The single `*` that needed `**` is named.
    let (s, v) = call(&f.router, SUPER, Method::PUT, "/v1/secrets/data/ai/shallow", json!({
        "data": {"value": "x"}, "scope": {"allowedSpiffeIds": ["spiffe://spike.test/agents/*"], "allowedDestinations": ["api.groq.com"]}})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = mint(&f.router, json!({"secret": "ai/shallow"})).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("write `spiffe://spike.test/agents/**`"),
        "{v}"
    );
    assert!(
        f.nexus
            .store()
            .scan(TOKENS, b"", None, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing minted"
    );
    // Within scope: a key of a multi-key secret, its own destination, a pattern the secret names.
    let (s, v) = mint(
        &f.router,
        json!({"secret": "ai/multi", "key": "b", "spiffeId": "spiffe://spike.test/agents/**"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn only_gateways_holding_resolve_on_the_path_resolve() {
    let f = setup().await;
    let (_, v) = mint(&f.router, json!({})).await;
    let token = v["token"].as_str().unwrap();
    // A workload (even one holding read), and one whose ID merely contains spike/gateway.
    for caller in [READER, FAKE_GATEWAY, AGENT, SUPER] {
        let (s, v) = resolve_as(&f.router, caller, token, json!({})).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{caller}: {v}"
        );
        assert!(v.get("value").is_none());
    }
    // A gateway without `resolve` on the secret's path.
    let (s, v) = resolve_as(&f.router, OTHER_GATEWAY, token, json!({})).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"), "{v}");
    assert!(v.get("value").is_none());
}

#[tokio::test]
async fn another_agents_token_is_unknown_like_a_made_up_one_and_the_audit_says_why() {
    let f = setup().await;
    let (_, v) = mint(&f.router, json!({})).await;
    let token = v["token"].as_str().unwrap();
    let made_up = format!("$SPIKE{{ref:{}}}", "ab".repeat(16));
    let stolen = resolve_as(
        &f.router,
        GATEWAY,
        token,
        json!({"agentSpiffeId": OTHER_AGENT}),
    )
    .await;
    let other_td = resolve_as(
        &f.router,
        GATEWAY,
        token,
        json!({"agentSpiffeId": "spiffe://evil.test/agents/mcp/researcher/dev"}),
    )
    .await;
    let unknown = resolve_as(&f.router, GATEWAY, &made_up, json!({})).await;
    let malformed = resolve_as(&f.router, GATEWAY, "sk-not-a-token", json!({})).await;
    assert_eq!(stolen.0, StatusCode::FORBIDDEN);
    assert_eq!(code(&stolen.1), "token_unknown");
    // Byte for byte the same answer, whatever the true reason.
    assert_eq!(stolen, unknown);
    assert_eq!(stolen, other_td);
    assert_eq!(stolen, malformed);
    let log = audit_lines(&f);
    assert!(log.contains("\"reason\":\"token_agent_mismatch\""), "{log}");
    assert!(
        log.contains(&format!("\"agent\":\"{OTHER_AGENT}\"")),
        "{log}"
    );
    assert!(log.contains("\"reason\":\"token_malformed\""), "{log}");
    assert!(!log.contains("sk-not-a-token"));
}

#[tokio::test]
async fn each_constraint_of_the_binding_has_its_refusal() {
    let f = setup().await;
    let (_, v) = mint(
        &f.router,
        json!({"pathPrefixes": ["/openai/v1/chat"], "locations": ["header:Authorization", "body"]}),
    )
    .await;
    let token = v["token"].as_str().unwrap();
    for (extra, expected) in [
        (
            json!({"destination": "api.groq.com:8443"}),
            "destination_not_allowed",
        ),
        (
            json!({"destination": "evil.example"}),
            "destination_not_allowed",
        ),
        (json!({"action": "write"}), "action_not_allowed"),
        (json!({"location": "query:api_key"}), "location_not_allowed"),
        (
            json!({"location": "header:x-api-key"}),
            "location_not_allowed",
        ),
        (json!({"path": "/openai/v1/chatter"}), "path_not_allowed"),
        (json!({"path": "/openai/v1/files"}), "path_not_allowed"),
    ] {
        let (s, v) = resolve_as(&f.router, GATEWAY, token, extra.clone()).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, expected),
            "{extra}: {v}"
        );
        assert!(v.get("value").is_none());
    }
    // Spelling cannot dodge the destination check, and allowed locations pass.
    for extra in [
        json!({"destination": "API.GROQ.COM."}),
        json!({"location": "body"}),
    ] {
        let (s, v) = resolve_as(&f.router, GATEWAY, token, extra.clone()).await;
        assert_eq!(s, StatusCode::OK, "{extra}: {v}");
    }
}

#[tokio::test]
async fn revoked_expired_and_unavailable_tokens_are_refused() {
    let f = setup().await;
    let (_, v) = mint(&f.router, json!({})).await;
    let token = v["token"].as_str().unwrap().to_owned();
    let id = v["binding"]["id"].as_str().unwrap().to_owned();
    // Expiry, checked at a time past it (the engine takes the time, so no test waits).
    let o = f.nexus.opened().unwrap();
    let agent = SpiffeId::new(AGENT).unwrap();
    let found = f
        .nexus
        .tokens()
        .find_for_agent(&o.keys, &token.clone().into(), &agent)
        .await
        .unwrap();
    let dest = Destination::parse("api.groq.com").unwrap();
    let location = TokenLocation::default_header();
    let ask = ResolveAsk {
        agent: &agent,
        destination: &dest,
        action: TokenAction::Read,
        path: "/",
        location: &location,
    };
    let later = found.binding.expires;
    assert_eq!(
        Tokens::check(&found, &ask, later).unwrap_err().error.code(),
        ErrorCode::TokenExpired
    );
    assert!(Tokens::check(&found, &ask, later - 1).is_ok());
    // The secret past its TTL: unavailable to tokens (and `expired` to readers).
    let path = SecretPath::parse("ai/groq").unwrap();
    let secret_end = f
        .nexus
        .secrets()
        .newest_live(&o.keys, &path, 0)
        .await
        .unwrap()
        .unwrap()
        .expires
        .unwrap();
    let live = f
        .nexus
        .secrets()
        .newest_live(&o.keys, &path, secret_end)
        .await
        .unwrap();
    assert_eq!(
        Tokens::value_of(&found, live, &ask)
            .unwrap_err()
            .error
            .code(),
        ErrorCode::SecretUnavailable
    );
    let reader = SpiffeId::new("spiffe://spike.test/agents/x").unwrap();
    let e = f
        .nexus
        .secrets()
        .get(&o.keys, &path, None, &reader, secret_end)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Expired);
    // Deleted secret: unavailable.
    let (s, _) = call(
        &f.router,
        SUPER,
        Method::POST,
        "/v1/secrets/delete/ai/groq",
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = resolve_as(&f.router, GATEWAY, &token, json!({})).await;
    assert_eq!(code(&v), "secret_unavailable", "{v}");
    let (s, _) = call(
        &f.router,
        SUPER,
        Method::POST,
        "/v1/secrets/undelete/ai/groq",
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // A narrowed scope binds tokens minted before it.
    let (s, _) = call(&f.router, SUPER, Method::PUT, "/v1/secrets/data/ai/groq", json!({
        "data": {"value": "gsk_real_credential_here"}, "scope": {"allowedDestinations": ["api.other.com"]}})).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = resolve_as(&f.router, GATEWAY, &token, json!({})).await;
    assert_eq!(code(&v), "secret_unavailable", "{v}");
    // Revoked: said so, from then on.
    let (s, r) = call(
        &f.router,
        MINTER,
        Method::POST,
        &format!("/v1/tokens/{}/revoke", &id[..6]),
        Value::Null,
    )
    .await;
    assert_eq!(
        (s, r["state"].as_str()),
        (StatusCode::OK, Some("revoked")),
        "{r}"
    );
    let (_, v) = resolve_as(&f.router, GATEWAY, &token, json!({})).await;
    assert_eq!(code(&v), "token_revoked", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_uses_hold_under_concurrent_resolutions() {
    let f = setup().await;
    let (_, v) = mint(&f.router, json!({"maxUses": 5})).await;
    let token = v["token"].as_str().unwrap().to_owned();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (r, t) = (f.router.clone(), token.clone());
            tokio::spawn(async move { resolve_as(&r, GATEWAY, &t, json!({})).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let ok = answers
        .iter()
        .filter(|(st, _)| *st == StatusCode::OK)
        .count();
    let spent = answers
        .iter()
        .filter(|(_, v)| code(v) == "uses_exhausted")
        .count();
    assert_eq!((ok, spent), (5, 35));
    assert!(
        answers
            .iter()
            .all(|(st, v)| *st != StatusCode::OK || v["cacheable"] == false)
    );
    let id = v["binding"]["id"].as_str().unwrap();
    let (_, i) = call(
        &f.router,
        MINTER,
        Method::GET,
        &format!("/v1/tokens/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(
        (i["uses"].as_u64(), i["state"].as_str()),
        (Some(5), Some("exhausted"))
    );
}

#[tokio::test]
async fn an_edited_binding_is_refused() {
    let f = setup().await;
    let (_, v) = mint(&f.router, json!({"maxUses": 1})).await;
    let token = v["token"].as_str().unwrap().to_owned();
    let store = f.nexus.store().clone();
    let (key, raw) = store.scan(TOKENS, b"", None, 1).await.unwrap().remove(0);
    // Someone who can write the data directory widens the binding, keeping its tag.
    let (tag, body) = raw.split_at(spike_core::crypto::RECORD_TAG_LEN);
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        body.contains("\"max_uses\":1") && body.contains("api.groq.com:443"),
        "{body}"
    );
    let widened = body
        .replace("\"max_uses\":1", "\"max_uses\":1000")
        .replace("api.groq.com:443", "evil.example:443");
    let mut edited = tag.to_vec();
    edited.extend_from_slice(widened.as_bytes());
    let mut b = spike_store::Batch::new();
    b.put(TOKENS, key.clone(), edited);
    store.commit(b).await.unwrap();
    let (s, v) = resolve_as(
        &f.router,
        GATEWAY,
        &token,
        json!({"destination": "evil.example"}),
    )
    .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert!(v.get("value").is_none());
    // Moved under another hash (another token's key): refused too.
    let mut b = spike_store::Batch::new();
    b.delete(TOKENS, key.clone());
    b.put(TOKENS, b"0".repeat(64), raw);
    store.commit(b).await.unwrap();
    let (_, l) = call(&f.router, MINTER, Method::GET, "/v1/tokens", Value::Null).await;
    assert_eq!(code(&l), "internal", "{l}");
}

#[tokio::test]
async fn allowed_ids_narrow_direct_reads_and_the_ttl_restarts_with_each_version() {
    let f = setup().await;
    // READER holds `read` on ai/**, but ai/groq allows only agents: refused, with the scope
    // named; an agent with a policy reads it.
    let (s, v) = call(
        &f.router,
        READER,
        Method::GET,
        "/v1/secrets/data/ai/groq",
        Value::Null,
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allowed to read ai/groq"),
        "{v}"
    );
    let (s, v) = call(&f.router, SUPER, Method::PUT, "/v1/policies/agents",
        json!({"spiffeIdPattern": "spiffe://spike.test/agents/**", "pathPattern": "ai/**", "permissions": ["read"]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = call(
        &f.router,
        AGENT,
        Method::GET,
        "/v1/secrets/data/ai/groq",
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The metadata shows the scope; each version's expiry is its write time plus the TTL.
    let (_, m) = metadata(&f.router, "ai/groq").await;
    assert_eq!(m["ttlSeconds"], 3600);
    assert_eq!(
        m["allowedSpiffeIds"],
        json!(["spiffe://spike.test/agents/**"])
    );
    assert_eq!(m["allowedDestinations"], json!(["api.groq.com:443"]));
    let first = m["versions"][0]["expiresAt"].as_str().unwrap().to_owned();
    // A new version keeps the scope and gets its own lease; a scope change alone is a write.
    let (s, v) = call(
        &f.router,
        SUPER,
        Method::PUT,
        "/v1/secrets/data/ai/groq",
        json!({"data": {"value": "gsk_real_credential_here"}, "scope": {"ttlSeconds": 7200}}),
    )
    .await;
    assert_eq!(
        (s, v["version"].as_u64(), v["unchanged"].as_bool()),
        (StatusCode::OK, Some(2), Some(false)),
        "{v}"
    );
    let (_, m) = metadata(&f.router, "ai/groq").await;
    assert_eq!(m["ttlSeconds"], 7200);
    assert_eq!(
        m["allowedDestinations"],
        json!(["api.groq.com:443"]),
        "kept"
    );
    assert!(m["versions"][1]["expiresAt"].as_str().unwrap() > first.as_str());
    // Bad scopes change nothing.
    for scope in [
        json!({"allowedSpiffeIds": ["spiffe://elsewhere.test/agents/**"]}),
        json!({"allowedDestinations": ["http://x"]}),
        json!({"ttlSeconds": -1}),
    ] {
        let (s, v) = call(
            &f.router,
            SUPER,
            Method::PUT,
            "/v1/secrets/data/ai/groq",
            json!({"data": {"value": "other"}, "scope": scope}),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{scope}: {v}");
    }
    let (_, m2) = metadata(&f.router, "ai/groq").await;
    assert_eq!(m2, m);
}

#[tokio::test]
async fn resolution_is_rate_limited_per_gateway() {
    let f = served(
        |c| {
            c.rate_limits.resolve = crate::ratelimit::Rate {
                per_minute: 1,
                burst: 2,
            }
        },
        true,
    )
    .await;
    setup_on(&f.router).await;
    let (s, v) = call(
        &f.router,
        SUPER,
        Method::PUT,
        "/v1/policies/gw2",
        json!({"spiffeIdPattern": "spiffe://spike.test/spike/gateway/gw2", "pathPattern": "ai/**", "permissions": ["resolve"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = mint(&f.router, json!({})).await;
    let token = v["token"].as_str().unwrap();
    for _ in 0..2 {
        let (s, v) = resolve_as(&f.router, GATEWAY, token, json!({})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = resolve_as(&f.router, GATEWAY, token, json!({})).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    // Another gateway has its own budget.
    let (s, v) = resolve_as(
        &f.router,
        "spiffe://spike.test/spike/gateway/gw2",
        token,
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
