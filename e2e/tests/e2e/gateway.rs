//! The egress gateway with real processes: `spike dev --gateway` used exactly as it prints,
//! and the `spike-gateway` binary in shared mode, reached over mutual TLS by agents with
//! their SVIDs (curl presents them), resolving through a real Nexus.

use std::process::Command;
use std::time::Duration;

use spike_agent::PemFiles;
use spike_e2e::{Cluster, Proc, bins, free_port, text, wait_until};
use zeroize::Zeroizing;

use crate::limits::runtime;

pub(super) const KEY: &str = "sk-e2e-0123456789abcdefREAL";
pub(super) const AGENT: &str = "/agents/researcher";
pub(super) const OTHER: &str = "/agents/other";
/// The shared gateway's identity.
pub(super) const GATEWAY: &str = "/spike/gateway/e2e";

/// Two consecutive free ports.
fn port_pair() -> u16 {
    (0..50)
        .map(|_| free_port())
        .find(|p| *p < u16::MAX - 4 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok())
        .expect("free port pair")
}

#[test]
fn dev_gateway_serves_a_token_as_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dev.log");
    // Nexus, its health port, the gateway and its health port.
    let port = (0..50)
        .map(|_| free_port())
        .find(|p| {
            *p < u16::MAX - 4
                && (1..4).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok())
        })
        .expect("four free ports");
    let args: Vec<String> = ["dev", "--gateway", "--port", &port.to_string()]
        .map(String::from)
        .to_vec();
    let _dev = Proc::spawn_in(&bins().spike, &args, dir.path(), log.clone(), "info");
    assert!(
        wait_until(Duration::from_secs(60), || std::fs::read_to_string(&log)
            .is_ok_and(|s| s.contains("curl -sN"))),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let printed = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("export ") || l.starts_with("TOKEN=") || l.starts_with("curl -sN")
        })
        .collect();
    assert_eq!(lines.len(), 6, "{printed}");
    let out = Command::new("sh")
        .args(["-c", &lines.join("\n")])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout.contains(r#""content":" gateway""#), "{}", text(&out));
    assert!(stdout.ends_with("data: [DONE]\n\n"), "{}", text(&out));
    // The mock's key never reaches the agent or the log.
    assert!(!stdout.contains("sk-dev-"), "{stdout}");
    assert!(!std::fs::read_to_string(&log).unwrap().contains("sk-dev-"));

    // Request smuggling: ambiguous framing is refused, or answered once and the connection
    // closed, so a second request hidden in the body never runs (the gateway also re-frames
    // every request it sends upstream).
    let gateway = port + 2;
    for (name, raw, want) in [
        (
            "CL.TE",
            "POST /r/llm/v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /r/llm/smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
            None,
        ),
        (
            "TE.TE",
            "POST /r/llm/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n",
            Some("400"),
        ),
        (
            "obfuscated TE",
            "POST /r/llm/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            Some("400"),
        ),
        (
            "obs-fold",
            "GET /r/llm/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
            Some("400"),
        ),
        (
            "two Content-Length",
            "POST /r/llm/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            Some("400"),
        ),
    ] {
        let answer = raw_exchange(gateway, raw);
        let statuses: Vec<&str> = answer
            .lines()
            .filter(|l| l.starts_with("HTTP/1.1 "))
            .collect();
        assert_eq!(statuses.len(), 1, "{name}: one answer only: {answer}");
        if let Some(code) = want {
            assert!(
                statuses[0].starts_with(&format!("HTTP/1.1 {code}")),
                "{name}: {answer}"
            );
        }
    }
}

/// Writes `raw` to 127.0.0.1:`port` and reads until the peer closes (or 5 s pass).
fn raw_exchange(port: u16, raw: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A shared gateway in front of a mock LLM, with a token minted for AGENT; it also forwards
/// absolute-form requests.
pub(super) struct Shared {
    pub(super) c: Cluster,
    pub(super) admin: PemFiles,
    pub(super) gateway: Option<Proc>,
    pub(super) port: u16,
    pub(super) token: String,
    _rt: tokio::runtime::Runtime,
}

pub(super) fn shared() -> Shared {
    shared_with("")
}

/// [`shared`] with `settings` added to the top of the gateway's settings file.
fn shared_with(settings: &str) -> Shared {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let td = c.nexus_id().trust_domain().to_string();
    let rt = runtime();
    let upstream = rt
        .block_on(
            spike_gateway::dev_upstream::DevUpstream::new(Zeroizing::new(KEY.into()))
                .spawn("127.0.0.1:0".parse().unwrap()),
        )
        .unwrap();
    // A second upstream the token is not bound to.
    let elsewhere = rt
        .block_on(
            spike_gateway::dev_upstream::DevUpstream::new(Zeroizing::new(KEY.into()))
                .spawn("127.0.0.1:0".parse().unwrap()),
        )
        .unwrap();
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    ok(c.spike(
        &admin,
        &[
            "policy",
            "create",
            "gw",
            "--spiffe-id-pattern",
            &format!("spiffe://{td}{GATEWAY}"),
            "--path-pattern",
            "ai/**",
            "--permissions",
            "resolve",
        ],
    ));
    ok(c.spike(
        &admin,
        &[
            "secret",
            "put",
            "--name",
            "ai/llm",
            "--value",
            KEY,
            "--allowed-spiffe-ids",
            &format!("spiffe://{td}/agents/**"),
            "--allowed-destinations",
            &upstream.to_string(),
        ],
    ));
    let token = ok(c.spike(
        &admin,
        &[
            "token",
            "create",
            "--secret",
            "ai/llm",
            "--spiffe-id",
            &format!("spiffe://{td}{AGENT}"),
            "--ttl",
            "10m",
            "--action",
            "read",
        ],
    ));
    assert!(token.starts_with("$SPIKE{ref:"), "{token}");
    let port = port_pair();
    let config = c.dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = "127.0.0.1:{port}"
health_listen = "127.0.0.1:{health}"
nexus = "127.0.0.1:{nexus}"
audit_log = "{audit_log}"
forward_proxy = true
{settings}

[[routes]]
name = "llm"
upstream = "http://{upstream}"
allow_networks = ["127.0.0.1/32"]
allow_plain_http = true
rules = [{{ method = "POST", path_prefix = "/v1/chat/completions", action = "read" }}]

[[routes]]
name = "elsewhere"
upstream = "http://{elsewhere}"
allow_networks = ["127.0.0.1/32"]
allow_plain_http = true
"#,
            health = port + 1,
            nexus = c.nexus_port,
            audit_log = c.dir.path().join(AUDIT_LOG).display(),
        ),
    )
    .unwrap();
    let gateway = spawn_gateway(&c, "gateway.log");
    Shared {
        c,
        admin,
        gateway: Some(gateway),
        port,
        token,
        _rt: rt,
    }
}

/// The shared gateway's audit log, in the cluster's directory.
pub(super) const AUDIT_LOG: &str = "gateway-audit.log";

/// Starts the shared gateway (its settings in `gateway.toml`), logging to `log`, and waits
/// until it serves: listening, with its audit log open.
pub(super) fn spawn_gateway(c: &Cluster, log: &str) -> Proc {
    let gateway = spawn_unaudited_gateway(c, log);
    wait_for_log(c, log, "gateway audit log open");
    gateway
}

/// Starts the shared gateway and waits until it listens (its audit log may not be open yet).
pub(super) fn spawn_unaudited_gateway(c: &Cluster, log: &str) -> Proc {
    let config = c.dir.path().join("gateway.toml");
    let mut args = vec!["--config".to_owned(), config.display().to_string()];
    args.extend(spike_e2e::identity_args(&c.pki.svid(GATEWAY)));
    let gateway = Proc::spawn(&bins().gateway, &args, c.dir.path().join(log), "info");
    wait_for_log(c, log, "gateway listening");
    gateway
}

/// Waits until the gateway's log `log` (in the cluster's directory) says `what`.
pub(super) fn wait_for_log(c: &Cluster, log: &str, what: &str) {
    let log = c.dir.path().join(log);
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::read_to_string(&log)
            .is_ok_and(|s| s.contains(what))),
        "no `{what}` in {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

impl Shared {
    /// curl as `who` (an SVID path, or None for no client certificate): status line and body.
    pub(super) fn call(&self, who: Option<&str>, auth: &str, body: &str) -> (Option<i32>, String) {
        self.call_path(who, "/r/llm/v1/chat/completions", auth, body)
    }

    pub(super) fn call_path(
        &self,
        who: Option<&str>,
        path: &str,
        auth: &str,
        body: &str,
    ) -> (Option<i32>, String) {
        let files = who.map(|w| self.c.pki.svid(w));
        self.call_with(files.as_ref(), path, auth, body)
    }

    /// curl presenting the certificate and key `files` (None: no client certificate).
    fn call_with(
        &self,
        files: Option<&PemFiles>,
        path: &str,
        auth: &str,
        body: &str,
    ) -> (Option<i32>, String) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "-N",
            "-k",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
        ]);
        if let Some(files) = files {
            cmd.arg("--cert")
                .arg(&files.cert)
                .arg("--key")
                .arg(&files.key);
        }
        let out = cmd
            .args(["-H", &format!("Authorization: {auth}"), "-d", body])
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .unwrap();
        let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
        if said.ends_with("000") {
            // No HTTP answer at all: say why (curl's error, the gateway's last words), so a
            // rare failure here can be understood from one CI log.
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            said.push_str(&format!(
                "\ncurl: {}\ngateway log (newest first):\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                tail.join("\n")
            ));
        }
        (out.status.code(), said)
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(self.c.dir.path().join("gateway.log")).unwrap_or_default()
    }
}

pub(super) fn has_curl() -> bool {
    Command::new("curl").arg("--version").output().is_ok()
}

/// True (and says so) when curl is missing and the test is skipped.
fn curl_missing() -> bool {
    let missing = !has_curl();
    if missing {
        eprintln!("curl is missing (./test.sh installs it): skipped");
    }
    missing
}

#[test]
fn a_shared_gateway_substitutes_for_the_bound_agent_only() {
    if curl_missing() {
        return;
    }
    let s = shared();
    let bearer = format!("Bearer {}", s.token);
    // The bound agent: the stream comes back, the key never.
    let (code, out) = s.call(Some(AGENT), &bearer, r#"{"stream":true}"#);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.ends_with("data: [DONE]\n\n\n200"), "{out}");
    assert!(!out.contains(KEY), "{out}");
    // Outside its binding: another action (a POST the route does not call `read`), another
    // destination (a route to a host the token is not for).
    let (_, out) = s.call_path(Some(AGENT), "/r/llm/v1/files", &bearer, "{}");
    assert!(out.contains(r#""code":"action_not_allowed""#), "{out}");
    let (_, out) = s.call_path(
        Some(AGENT),
        "/r/elsewhere/v1/chat/completions",
        &bearer,
        "{}",
    );
    assert!(out.contains(r#""code":"destination_not_allowed""#), "{out}");
    // Another agent of the same trust domain holding the stolen token: unknown.
    let (_, out) = s.call(Some(OTHER), &bearer, "{}");
    assert!(
        out.contains(r#""code":"token_unknown""#) && out.ends_with("403"),
        "{out}"
    );
    // Callers without a valid SVID: no client certificate, one from another trust domain, and
    // one that claims the bound agent's own ID but was issued by another CA. Each completes
    // the handshake and gets exactly what the stolen token got.
    let foreign_td = spike_core::id::TrustDomain::new("evil.test").unwrap();
    let foreign = issued_files(
        &s,
        "foreign",
        &spike_agent::CertificateAuthority::new(&foreign_td).unwrap(),
        &foreign_td.id(AGENT).unwrap(),
    );
    let forged = issued_files(
        &s,
        "forged",
        &spike_agent::CertificateAuthority::new(&s.c.pki.td).unwrap(),
        &s.c.pki.id(AGENT),
    );
    let path = "/r/llm/v1/chat/completions";
    for (what, files) in [
        ("no certificate", None),
        ("another trust domain", Some(&foreign)),
        ("a forged SVID", Some(&forged)),
    ] {
        let (code, got) = s.call_with(files, path, &bearer, "{}");
        assert_eq!(code, Some(0), "{what}: {got}");
        assert_eq!(got, out, "{what}: not the stolen token's answer");
        // Without a token: refused for what it lacks.
        let (_, got) = s.call_with(files, path, "none", "{}");
        assert!(
            got.contains(r#""code":"agent_identity_required""#) && got.ends_with("403"),
            "{what}: {got}"
        );
    }
    // The real key sent by the agent itself is refused (the gateway resolved it for it).
    let (_, out) = s.call(Some(AGENT), &format!("Bearer {KEY}"), "{}");
    assert!(out.contains(r#""code":"value_in_request""#), "{out}");
    // Revoked: refused with its reason.
    let list = s.c.spike(&s.admin, &["-o", "json", "token", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let id = v[0]["id"]
        .as_str()
        .or(v["tokens"][0]["id"].as_str())
        .unwrap()
        .to_owned();
    let out = s.c.spike(&s.admin, &["token", "revoke", &id]);
    assert!(out.status.success(), "{}", text(&out));
    // Resolutions are reused for up to `resolve_cache` (2 s): the revocation takes effect
    // within that bound.
    assert!(
        wait_until(Duration::from_secs(10), || s
            .call(Some(AGENT), &bearer, "{}")
            .1
            .contains(r#""code":"token_revoked""#)),
        "still served after a revocation"
    );
    // Neither the key nor a token reference is in the gateway's log.
    let log = s.log();
    assert!(!log.contains(KEY), "{log}");
    assert!(!log.contains(&s.token), "{log}");
    assert!(log.contains("decision=\"refused\""), "{log}");
    // The decision lines keep the true reasons; the caller's claimed ID is nowhere.
    for reason in [
        "unauthenticated",
        "foreign_trust_domain",
        "unverified_certificate",
    ] {
        assert!(
            log.contains(&format!("reason=\"{reason}\"")),
            "{reason}: {log}"
        );
    }
    assert!(!log.contains("evil.test"), "{log}");
    // Metrics count decisions by route and reason, with no token or value in them.
    let (status, metrics) = spike_e2e::http_get(s.port + 1, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"spike_gateway_requests_total{route="llm",decision="refused",reason="token_unknown"} 1"#),
        "{metrics}"
    );
    for reason in [
        "unauthenticated",
        "foreign_trust_domain",
        "unverified_certificate",
    ] {
        assert!(
            metrics.contains(&format!(
                r#"spike_gateway_requests_total{{route="llm",decision="refused",reason="{reason}"}} 1"#
            )),
            "{reason}: {metrics}"
        );
    }
    assert!(metrics.contains(r#"decision="allowed""#), "{metrics}");
    assert!(
        !metrics.contains("SPIKE{ref") && !metrics.contains(KEY),
        "{metrics}"
    );
    // A clean stop (SIGTERM) drains and exits.
    let gateway = s.gateway.unwrap();
    assert!(
        gateway.terminate(Duration::from_secs(20)),
        "the gateway did not stop"
    );
}

/// An SVID for `id` from `ca` (not the cluster's), written under the test's directory.
fn issued_files(
    s: &Shared,
    name: &str,
    ca: &spike_agent::CertificateAuthority,
    id: &spike_core::id::SpiffeId,
) -> PemFiles {
    let dir = s.c.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    ca.issue(id, Duration::from_secs(3600))
        .unwrap()
        .write_pem_files(&dir)
        .unwrap()
}

#[test]
fn the_gateway_limits_each_agent_and_recovers() {
    if curl_missing() {
        return;
    }
    // Three at once, then one a second.
    let s = shared_with("[rate_limits.agent]\nper_minute = 60\nburst = 3\n");
    let bearer = format!("Bearer {}", s.token);
    for i in 0..3 {
        let (_, out) = s.call(Some(AGENT), &bearer, "{}");
        assert!(out.ends_with("200"), "request {i}: {out}");
    }
    let (_, out) = s.call(Some(AGENT), &bearer, "{}");
    assert!(
        out.contains(r#""code":"rate_limited""#) && out.ends_with("429"),
        "{out}"
    );
    // Another agent has its own bucket (its token_unknown is the token's answer, not the
    // limit's).
    let (_, out) = s.call(Some(OTHER), &bearer, "{}");
    assert!(out.contains(r#""code":"token_unknown""#), "{out}");
    // The bucket refills: the agent is served again within a few seconds.
    assert!(
        wait_until(Duration::from_secs(10), || s
            .call(Some(AGENT), &bearer, "{}")
            .1
            .ends_with("200")),
        "the limit did not recover"
    );
    let (status, metrics) = spike_e2e::http_get(s.port + 1, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            r#"spike_gateway_requests_total{route="llm",decision="refused",reason="rate_limited"}"#
        ),
        "{metrics}"
    );
}

#[test]
fn nexus_and_keepers_still_refuse_callers_without_an_svid_in_the_handshake() {
    if curl_missing() {
        return;
    }
    let s = shared();
    let foreign_td = spike_core::id::TrustDomain::new("evil.test").unwrap();
    let foreign = issued_files(
        &s,
        "foreign",
        &spike_agent::CertificateAuthority::new(&foreign_td).unwrap(),
        &foreign_td.id(AGENT).unwrap(),
    );
    let curl = |port: u16, files: Option<&PemFiles>| {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "-k",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ]);
        if let Some(f) = files {
            cmd.arg("--cert").arg(&f.cert).arg("--key").arg(&f.key);
        }
        let out = cmd
            .arg(format!(
                "https://127.0.0.1:{port}/v1/secrets/metadata/ai/llm"
            ))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let keeper = s.c.keeper_ports[0].api;
    for (service, port) in [("nexus", s.c.nexus_port), ("keeper", keeper)] {
        for (what, files) in [
            ("no certificate", None),
            ("another trust domain", Some(&foreign)),
        ] {
            let (code, status) = curl(port, files);
            // curl fails (a refused handshake: exit 35, or 56 when the alert comes after
            // the client's side of the handshake is done); never an HTTP status.
            assert!(
                code != Some(0) && status == "000",
                "{service}, {what}: curl exit {code:?}, status {status}"
            );
        }
        // Positive control: an SVID the service accepts gets an HTTP answer.
        let allowed = match service {
            "nexus" => s.c.pki.svid("/spike/pilot/role/superuser"),
            _ => s.c.pki.svid("/spike/nexus"),
        };
        let (code, status) = curl(port, Some(&allowed));
        assert_eq!(code, Some(0), "{service}: {status}");
        assert_ne!(status, "000", "{service}");
    }
}
