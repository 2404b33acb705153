//! Host-name tricks against a real gateway's forward proxy: case, trailing dots, IDNA forms,
//! look-alike names and ports. A token is bound to `localhost:4443` and `bücher.example`
//! (stored as its IDNA form); each request names a destination in some spelling, and the
//! refusal code shows how far it got: `destination_not_allowed` (the binding refused the
//! name), or past the binding to the egress checks (`address_not_allowed` for `localhost`,
//! which resolves to loopback; `upstream_unavailable` for a name with no address). No request
//! here can reach an upstream, so no value ever leaves.

use std::process::Command;

use spike_e2e::text;

use crate::gateway::{AGENT, Shared, has_curl, shared};

const NAMES_KEY: &str = "sk-e2e-names-0123456789abcdef";

/// A token for AGENT bound to `localhost:4443` and `bücher.example`.
fn names_token(s: &Shared) -> String {
    let td = s.c.nexus_id().trust_domain().to_string();
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    ok(s.c.spike(
        &s.admin,
        &[
            "secret",
            "put",
            "--name",
            "ai/names",
            "--value",
            NAMES_KEY,
            "--allowed-spiffe-ids",
            &format!("spiffe://{td}/agents/**"),
            "--allowed-destinations",
            "localhost:4443,bücher.example",
        ],
    ));
    ok(s.c.spike(
        &s.admin,
        &[
            "token",
            "create",
            "--secret",
            "ai/names",
            "--spiffe-id",
            &format!("spiffe://{td}{AGENT}"),
            "--ttl",
            "10m",
            "--action",
            "read",
        ],
    ))
}

/// `GET target` in absolute form through the gateway as AGENT, with `host` as the Host
/// header: the body, then the status on a line of its own; and curl's whole output, for
/// messages.
fn forward(s: &Shared, target: &str, host: &str, token: &str) -> (String, String) {
    let files = s.c.pki.svid(AGENT);
    let out = Command::new("curl")
        // Absolute form is HTTP/1.1's; HTTP/2 has `:authority` and `:path` instead.
        .args([
            "-sS",
            "-k",
            "--http1.1",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
        ])
        .arg("--cert")
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key)
        .args(["--request-target", target])
        .args(["-H", &format!("Host: {host}")])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("https://127.0.0.1:{}", s.port))
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        text(&out),
    )
}

fn code(out: &str) -> &str {
    out.split(r#""code":""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
}

#[test]
fn host_name_tricks_meet_the_binding_as_their_normal_form() {
    if !has_curl() {
        eprintln!("curl is missing (./test.sh installs it): skipped");
        return;
    }
    let s = shared();
    let token = names_token(&s);
    for (target, host, want) in [
        // Case and one trailing dot are the same name: past the binding, then refused
        // because localhost is a loopback address the forward proxy may not reach.
        (
            "https://localhost:4443/v1",
            "localhost:4443",
            "address_not_allowed",
        ),
        (
            "https://LOCALHOST.:4443/v1",
            "LocalHost.:4443",
            "address_not_allowed",
        ),
        // The IDNA form of bücher.example, in any case, with or without the dot: allowed by
        // the binding; the name has no address.
        (
            "https://xn--bcher-kva.example/v1",
            "xn--bcher-kva.example",
            "upstream_unavailable",
        ),
        (
            "https://XN--BCHER-KVA.EXAMPLE./v1",
            "xn--bcher-kva.example.",
            "upstream_unavailable",
        ),
        // Look-alikes and other ports are other destinations.
        // böcher.example: another name, however alike.
        (
            "https://xn--bcher-jua.example/v1",
            "xn--bcher-jua.example",
            "destination_not_allowed",
        ),
        // A label that is not valid punycode names nothing.
        (
            "https://xn--bcher-kvb.example/v1",
            "xn--bcher-kvb.example",
            "bad_request",
        ),
        (
            "https://bucher.example/v1",
            "bucher.example",
            "destination_not_allowed",
        ),
        (
            "https://localhost.evil.test:4443/v1",
            "localhost.evil.test:4443",
            "destination_not_allowed",
        ),
        (
            "https://evil.test/localhost:4443",
            "evil.test",
            "destination_not_allowed",
        ),
        (
            "https://localhost/v1",
            "localhost",
            "destination_not_allowed",
        ),
        (
            "https://localhost:4444/v1",
            "localhost:4444",
            "destination_not_allowed",
        ),
        (
            "https://127.0.0.1:4443/v1",
            "127.0.0.1:4443",
            "destination_not_allowed",
        ),
        // The Host header must name what the URI names, trailing dot and case aside.
        ("https://localhost:4443/v1", "evil.test", "bad_request"),
        ("https://localhost:4443/v1", "localhost:4444", "bad_request"),
    ] {
        let (out, all) = forward(&s, target, host, &token);
        assert_eq!(code(&out), want, "{target} (Host: {host}): {all}");
    }
    // Forms no URI can carry are refused before any check: raw UTF-8, an empty label, user
    // information.
    for target in [
        "https://bücher.example/v1",
        "https://localhost..:4443/v1",
        "https://user@localhost:4443/v1",
    ] {
        let (out, all) = forward(&s, target, "localhost:4443", &token);
        assert!(out.ends_with("\n400"), "{target}: {all}");
    }
    let log = s.log();
    assert!(!log.contains(NAMES_KEY), "{log}");
    assert!(!log.contains(&token), "{log}");
}
