//! Scoped secrets and reference tokens with real processes: the CLI against Nexus and its
//! keepers, and token resolution over mutual TLS with a gateway's SVID, through a restart, a
//! rotation and an edited data directory.

use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use spike_agent::PemFiles;
use spike_e2e::{Cluster, text};
use spike_runtime::net::MtlsClient;

use crate::lifecycle::restart_nexus_and_wait;
use crate::limits::runtime;

const WAIT: Duration = Duration::from_secs(20);
const VALUE: &str = "gsk_real_credential_here";
const AGENT: &str = "spiffe://spike.test/agents/mcp-client/dspy-researcher/dev";

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn exit(out: &Output) -> Option<i32> {
    out.status.code()
}

/// Creates a policy granting `perms` on `ai/**` to `id`.
fn grant(c: &Cluster, admin: &PemFiles, name: &str, id: &str, perms: &str) {
    ok(&c.spike(
        admin,
        &[
            "policy",
            "create",
            name,
            "--spiffe-id-pattern",
            id,
            "--path-pattern",
            "ai/**",
            "--permissions",
            perms,
        ],
    ));
}

/// One resolution by `who` (a path in the trust domain) over mTLS: status and body.
fn resolve(c: &Cluster, rt: &tokio::runtime::Runtime, who: &str, body: &Value) -> (u16, Value) {
    rt.block_on(async {
        let client = MtlsClient::new(
            format!("127.0.0.1:{}", c.nexus_port),
            c.nexus_id(),
            c.svid_source(who, WAIT).await,
        )
        .unwrap()
        .with_timeout(Duration::from_secs(10));
        let r = client
            .send(
                http::Method::POST,
                "/v1/tokens/resolve",
                Some(body.to_string().into_bytes()),
            )
            .await
            .unwrap();
        (
            r.status.as_u16(),
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    })
}

fn ask(token: &str, agent: &str) -> Value {
    json!({
        "token": token, "agentSpiffeId": agent, "destination": "api.groq.com",
        "action": "read", "path": "/openai/v1/chat/completions",
        "location": "header:authorization"
    })
}

#[test]
fn tokens_resolve_only_for_their_agent_and_gateway_and_survive_restart_and_rotation() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let rt = runtime();
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let minter = c.pki.svid("/ops/minter");
    let reader = c.pki.svid("/ops/reader");
    ok(&c.spike(
        &admin,
        &[
            "secret",
            "put",
            "--name",
            "ai/groq",
            "--value",
            VALUE,
            "--ttl",
            "1h",
            "--allowed-spiffe-ids",
            "spiffe://spike.test/agents/**",
            "--allowed-destinations",
            "api.groq.com",
        ],
    ));
    grant(
        &c,
        &admin,
        "mint",
        "spiffe://spike.test/ops/minter",
        "token,list",
    );
    grant(&c, &admin, "read", "spiffe://spike.test/ops/reader", "read");
    grant(
        &c,
        &admin,
        "gw",
        "spiffe://spike.test/spike/gateway/gw",
        "resolve",
    );

    // A caller with `read` but not `token` may not mint; one with `token` may.
    let create = [
        "token",
        "create",
        "--secret",
        "ai/groq",
        "--spiffe-id",
        AGENT,
        "--ttl",
        "30m",
        "--action",
        "read",
        "--max-uses",
        "4",
        "-o",
        "json",
    ];
    let refused = c.spike(&reader, &create);
    assert_eq!(exit(&refused), Some(4), "{}", text(&refused));
    let minted: Value = serde_json::from_str(&ok(&c.spike(&minter, &create))).unwrap();
    let token = minted["token"].as_str().unwrap().to_owned();
    let id = minted["binding"]["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("$SPIKE{ref:"), "{minted}");

    // The gateway resolves for the bound agent.
    let (s, v) = resolve(&c, &rt, "/spike/gateway/gw", &ask(&token, AGENT));
    assert_eq!((s, v["value"].as_str()), (200, Some(VALUE)), "{v}");
    // A workload (holding read on the path), a gateway without `resolve` there, a workload
    // named like a gateway: forbidden, no value.
    for who in [
        "/ops/reader",
        "/spike/gateway/other",
        "/ops/spike/gateway/gw",
    ] {
        let (s, v) = resolve(&c, &rt, who, &ask(&token, AGENT));
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{who}: {v}"
        );
    }
    // Another agent, another trust domain, a made-up token: the same `token_unknown`.
    let stolen = resolve(
        &c,
        &rt,
        "/spike/gateway/gw",
        &ask(&token, "spiffe://spike.test/agents/other"),
    );
    let foreign = resolve(
        &c,
        &rt,
        "/spike/gateway/gw",
        &ask(
            &token,
            "spiffe://evil.test/agents/mcp-client/dspy-researcher/dev",
        ),
    );
    let made_up = resolve(
        &c,
        &rt,
        "/spike/gateway/gw",
        &ask(&format!("$SPIKE{{ref:{}}}", "0".repeat(32)), AGENT),
    );
    assert_eq!(stolen.1["error"]["code"], "token_unknown", "{:?}", stolen);
    assert_eq!(stolen, foreign);
    assert_eq!(stolen, made_up);
    // Outside the binding: destination and action.
    let mut other = ask(&token, AGENT);
    other["destination"] = json!("api.evil.example");
    assert_eq!(
        resolve(&c, &rt, "/spike/gateway/gw", &other).1["error"]["code"],
        "destination_not_allowed"
    );
    other = ask(&token, AGENT);
    other["action"] = json!("write");
    assert_eq!(
        resolve(&c, &rt, "/spike/gateway/gw", &other).1["error"]["code"],
        "action_not_allowed"
    );

    // A restart (keepers unseal it again), then a rotation that destroys the old data key.
    restart_nexus_and_wait(&mut c);
    let (s, v) = resolve(&c, &rt, "/spike/gateway/gw", &ask(&token, AGENT));
    assert_eq!(
        (s, v["value"].as_str()),
        (200, Some(VALUE)),
        "after restart: {v}"
    );
    let rotated = ok(&c.spike(&admin, &["operator", "rotate", "--wait"]));
    assert!(rotated.contains("re-encryption done"), "{rotated}");
    let (s, v) = resolve(&c, &rt, "/spike/gateway/gw", &ask(&token, AGENT));
    assert_eq!(
        (s, v["value"].as_str()),
        (200, Some(VALUE)),
        "after rotation: {v}"
    );

    // The CLI shows the binding, never the token.
    let listed = ok(&c.spike(&minter, &["token", "list"]));
    assert!(
        listed.contains(&id) && listed.contains("(3/4 uses)"),
        "{listed}"
    );
    assert!(!listed.contains(&token[11..43]));
    let inspected = ok(&c.spike(&minter, &["token", "inspect", &id[..8]]));
    assert!(inspected.contains("api.groq.com:443"), "{inspected}");

    // Someone who can write the data directory raises the use limit: the edited binding is
    // refused, and no value comes out.
    c.kill_nexus();
    rt.block_on(async {
        use spike_store::Store as _;
        let store = spike_store::RedbStore::open(c.data_dir.as_ref().unwrap()).unwrap();
        const TOKENS: spike_store::Table = spike_store::Table::new("tokens");
        let (key, raw) = store.scan(TOKENS, b"", None, 1).await.unwrap().remove(0);
        let (tag, body) = raw.split_at(spike_core::crypto::RECORD_TAG_LEN);
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("\"max_uses\":4"), "{body}");
        let mut edited = tag.to_vec();
        edited.extend_from_slice(
            body.replace("\"max_uses\":4", "\"max_uses\":4000")
                .as_bytes(),
        );
        let mut b = spike_store::Batch::new();
        b.put(TOKENS, key, edited);
        store.commit(b).await.unwrap();
    });
    // The store's witness refuses the edit (rollback.rs); accepted on purpose, the binding's
    // own tag still fails closed.
    let reason = c.start_nexus_expecting_refusal("STORE EDITED");
    c.restart_nexus_accepting(&reason);
    assert!(c.wait_ready(Duration::from_secs(30)), "{:?}", c.readyz());
    let (s, v) = resolve(&c, &rt, "/spike/gateway/gw", &ask(&token, AGENT));
    assert_eq!(s, 500, "{v}");
    assert!(v.get("value").is_none());

    let logs = c.all_logs();
    assert!(!logs.contains(VALUE), "a value reached a log");
    assert!(!logs.contains(&token[11..43]), "a token reached a log");
}

#[test]
fn the_cli_mints_lists_inspects_and_revokes_with_its_exit_codes() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let rt = runtime();
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    ok(&c.spike(
        &admin,
        &[
            "secret",
            "put",
            "ai/multi",
            "a=1",
            "b=2",
            "--allowed-destinations",
            "api.example.com,api.groq.com",
        ],
    ));
    grant(
        &c,
        &admin,
        "gw",
        "spiffe://spike.test/spike/gateway/gw",
        "resolve",
    );
    // Two keys: --secret PATH alone is a usage error from Nexus that names PATH:KEY.
    let base = [
        "token",
        "create",
        "--spiffe-id",
        AGENT,
        "--ttl",
        "600",
        "--action",
        "read",
    ];
    let args = |extra: &[&'static str]| {
        base.iter()
            .copied()
            .chain(extra.iter().copied())
            .collect::<Vec<_>>()
    };
    let out = c.spike(&admin, &args(&["--secret", "ai/multi"]));
    assert_eq!(exit(&out), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("--secret ai/multi:KEY"),
        "{}",
        text(&out)
    );
    // Bad flags are usage errors (exit 2), before any request.
    for bad in [
        &["--secret", "ai/multi:a", "--in", "cookie:x"][..],
        &["--secret", "ai/multi:a", "--ttl", "0"],
    ] {
        let out = c.spike(&admin, &args(bad));
        assert_eq!(exit(&out), Some(2), "{bad:?}: {}", text(&out));
    }
    // PATH:KEY, one destination of the secret's, in the body: the token alone on stdout.
    let out = c.spike(
        &admin,
        &args(&[
            "--secret",
            "ai/multi:b",
            "--destination",
            "api.groq.com",
            "--in",
            "body",
        ]),
    );
    let token = ok(&out).trim().to_owned();
    assert!(
        token.starts_with("$SPIKE{ref:") && token.ends_with('}') && !token.contains('\n'),
        "{token}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ai/multi:b"),
        "{}",
        text(&out)
    );
    let mut req = ask(&token, AGENT);
    req["location"] = json!("body");
    let (s, v) = resolve(&c, &rt, "/spike/gateway/gw", &req);
    assert_eq!((s, v["value"].as_str()), (200, Some("2")), "{v}");
    req["location"] = json!("header:authorization");
    assert_eq!(
        resolve(&c, &rt, "/spike/gateway/gw", &req).1["error"]["code"],
        "location_not_allowed"
    );

    let listed: Value =
        serde_json::from_str(&ok(&c.spike(&admin, &["token", "list", "-o", "json"]))).unwrap();
    let id = listed["tokens"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        listed["tokens"][0]["destinations"],
        json!(["api.groq.com:443"])
    );
    let out = c.spike(&admin, &["token", "inspect", "abc"]);
    assert_eq!(exit(&out), Some(1), "too short an id: {}", text(&out));
    let out = c.spike(&admin, &["token", "inspect", "ffffffff"]);
    assert_eq!(exit(&out), Some(3), "{}", text(&out));
    // A token in hand (a leaked one) is found by the token itself, as an argument or on
    // stdin; a caller that may not mint for its secret gets not found, like any other id.
    // Nothing the cluster writes (logs, audit, data) may hold it.
    c.known_value(&token);
    let by_token: Value = serde_json::from_str(&ok(
        &c.spike(&admin, &["token", "inspect", &token, "-o", "json"])
    ))
    .unwrap();
    assert_eq!(by_token["id"], json!(id));
    let by_stdin = ok(&c.spike_stdin(
        &admin,
        &["token", "inspect", "-"],
        Some(&format!("{token}\n")),
    ));
    assert!(by_stdin.contains(&id), "{by_stdin}");
    let stranger = c.pki.svid("/app/stranger");
    let out = c.spike(&stranger, &["token", "inspect", &token]);
    assert_eq!(exit(&out), Some(3), "{}", text(&out));
    assert!(!text(&out).contains("ai/multi"), "{}", text(&out));
    let out = c.spike(&admin, &["token", "inspect", "$SPIKE{ref:nothex}"]);
    assert_eq!(exit(&out), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not a reference token"),
        "{}",
        text(&out)
    );
    let revoked = ok(&c.spike(&admin, &["token", "revoke", &token]));
    assert!(
        revoked.contains(&format!("revoked token {id}")),
        "{revoked}"
    );
    req["location"] = json!("body");
    assert_eq!(
        resolve(&c, &rt, "/spike/gateway/gw", &req).1["error"]["code"],
        "token_revoked"
    );
    let state: Value = serde_json::from_str(&ok(
        &c.spike(&admin, &["token", "inspect", &id, "-o", "json"])
    ))
    .unwrap();
    assert_eq!(state["state"], "revoked");

    // Allowed IDs narrow direct reads, for the superuser too (exit 4, with the scope named);
    // a scope of another trust domain is refused and changes nothing.
    ok(&c.spike(
        &admin,
        &[
            "secret",
            "put",
            "ai/scoped",
            "--value",
            "v",
            "--allowed-spiffe-ids",
            "spiffe://spike.test/agents/**",
        ],
    ));
    let out = c.spike(&admin, &["secret", "get", "ai/scoped"]);
    assert_eq!(exit(&out), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("allowed to read ai/scoped"),
        "{}",
        text(&out)
    );
    let out = c.spike(
        &admin,
        &[
            "secret",
            "put",
            "ai/scoped",
            "--value",
            "w",
            "--allowed-spiffe-ids",
            "spiffe://poc.local/agents/**",
        ],
    );
    assert_eq!(exit(&out), Some(1), "{}", text(&out));
    assert!(text(&out).contains("serves spike.test"), "{}", text(&out));
    let meta = ok(&c.spike(&admin, &["secret", "metadata", "ai/scoped"]));
    assert!(
        meta.contains("allowed ids:     spiffe://spike.test/agents/**")
            && meta.contains("latest version:  1"),
        "{meta}"
    );
    // Clearing the scope lets the superuser read again.
    ok(&c.spike(
        &admin,
        &[
            "secret",
            "put",
            "ai/scoped",
            "--value",
            "v",
            "--allowed-spiffe-ids",
            "",
        ],
    ));
    assert_eq!(
        ok(&c.spike(&admin, &["secret", "get", "ai/scoped"])).trim(),
        "v"
    );
}
