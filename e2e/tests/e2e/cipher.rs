//! The cipher API end to end: `spike cipher encrypt|decrypt` against real processes, the raw
//! `application/octet-stream` form over real mTLS, refusals, limits and the rate limit.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use spike_agent::PemFiles;
use spike_core::id::Builtin;
use spike_e2e::{Cluster, Proc, identity_args, text, wait_until};
use spike_runtime::svid::{Identity, StaticSource, SvidSource};
use spike_runtime::tls::{PeerRule, client_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// The cipher API's per-call limit (1 MiB).
const MAX: usize = 1 << 20;
/// What a ciphertext adds: header (6), nonce (12), tag (16).
const OVERHEAD: usize = 34;
/// Bound on every raw request.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `spike` with binary stdin, capturing binary stdout. Stderr joins the cluster's CLI log,
/// so the "no secret in any log" check covers it.
fn spike_bin(c: &Cluster, who: &PemFiles, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(&c.bins.spike)
        .args(args)
        .args(identity_args(who))
        .args(["--nexus", &format!("127.0.0.1:{}", c.nexus_port)])
        .args(["--timeout", "10s"])
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env_remove("SPIKE_CIPHER_CONTEXT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    // A thread, so a child that answers before reading everything cannot block us.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(c.dir.path().join("cli-stderr.log"))
    {
        let _ = f.write_all(&out.stderr);
    }
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `error:` line of a failed run.
fn error_line(out: &Output) -> String {
    stderr(out)
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default()
        .to_owned()
}

fn allow_cipher(c: &Cluster, name: &str, ids: &str, paths: &str) {
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let out = c.policy_create(&admin, name, ids, paths, "cipher");
    assert!(out.status.success(), "{}", text(&out));
}

/// Binary test data with a marker that must never show up in a log.
fn data(len: usize) -> Vec<u8> {
    let mut d = b"CIPHER-E2E-CANARY-51c9e0".to_vec();
    d.extend((0..=255u8).cycle().take(len.saturating_sub(d.len())));
    d.truncate(len);
    d
}

#[test]
fn cipher_round_trips_through_the_cli_and_refuses_what_it_should() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    allow_cipher(
        &c,
        "apps-cipher",
        "spiffe://spike.test/app/*",
        "cipher/app/**",
    );
    let alice = c.pki.svid("/app/alice");
    let bob = c.pki.svid("/app/bob");
    let mallory = c.pki.svid("/other/mallory");
    let dir = c.dir.path().join("cipher-files");
    std::fs::create_dir_all(&dir).unwrap();
    let f = |name: &str| dir.join(name).display().to_string();
    let plain = data(5000);
    std::fs::write(f("plain.bin"), &plain).unwrap();

    // File to file.
    let out = c.spike(
        &alice,
        &[
            "cipher",
            "encrypt",
            "--context",
            "cipher/app/one",
            "-f",
            &f("plain.bin"),
            "--out",
            &f("ct.bin"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    let ct = std::fs::read(f("ct.bin")).unwrap();
    assert_eq!(ct.len(), plain.len() + OVERHEAD);
    assert_eq!(ct[0], 1, "format byte");
    assert!(!ct.windows(12).any(|w| w == &plain[..12]));

    // Stdin to stdout.
    let out = spike_bin(
        &c,
        &alice,
        &["cipher", "decrypt", "--context", "cipher/app/one"],
        &ct,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(out.stdout, plain);

    // Stdin to stdout, then file to file with `-` spelled out nowhere: mixed forms.
    let out = spike_bin(
        &c,
        &alice,
        &[
            "cipher",
            "encrypt",
            "--context",
            "cipher/app/one",
            "-f",
            "-",
        ],
        &plain,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(out.stdout, ct, "a fresh nonce every time");
    std::fs::write(f("ct2.bin"), &out.stdout).unwrap();
    let out = c.spike(
        &alice,
        &[
            "cipher",
            "decrypt",
            "--context",
            "cipher/app/one",
            "-f",
            &f("ct2.bin"),
            "--out",
            &f("plain2.bin"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(f("plain2.bin")).unwrap(), plain);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(f("plain2.bin"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "decrypted files are private");
    }

    // Base64 text, and the JSON output, both decrypt.
    let out = spike_bin(
        &c,
        &alice,
        &[
            "cipher",
            "encrypt",
            "--context",
            "cipher/app/one",
            "--base64",
        ],
        &plain,
    );
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.ends_with('\n') && line.trim().len() > plain.len());
    let out = spike_bin(
        &c,
        &alice,
        &["cipher", "decrypt", "--context", "cipher/app/one"],
        line.as_bytes(),
    );
    assert_eq!(out.stdout, plain, "{}", text(&out));
    let out = spike_bin(
        &c,
        &alice,
        &[
            "-o",
            "json",
            "cipher",
            "encrypt",
            "--context",
            "cipher/app/one",
        ],
        &plain,
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["ciphertext"].is_string(), "{}", text(&out));
    let out = spike_bin(
        &c,
        &alice,
        &["cipher", "decrypt", "--context", "cipher/app/one"],
        &out.stdout,
    );
    assert_eq!(out.stdout, plain, "{}", text(&out));

    // The context is what binds: another workload with `cipher` on it decrypts...
    let out = spike_bin(
        &c,
        &bob,
        &["cipher", "decrypt", "--context", "cipher/app/one"],
        &ct,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(out.stdout, plain);
    // ...unless the data was bound to its caller.
    let out = spike_bin(
        &c,
        &alice,
        &[
            "cipher",
            "encrypt",
            "--context",
            "cipher/app/one",
            "--bind-caller",
        ],
        &plain,
    );
    assert!(out.status.success(), "{}", text(&out));
    let bound = out.stdout;
    let out = spike_bin(
        &c,
        &bob,
        &["cipher", "decrypt", "--context", "cipher/app/one"],
        &bound,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(out.stdout.is_empty());
    let generic = error_line(&out);
    assert!(generic.contains("cannot be decrypted"), "{}", text(&out));
    let out = spike_bin(
        &c,
        &alice,
        &["cipher", "decrypt", "--context", "cipher/app/one"],
        &bound,
    );
    assert_eq!(out.stdout, plain, "{}", text(&out));

    // A workload without the permission: refused (exit 4) both ways.
    for (op, input) in [("encrypt", &plain), ("decrypt", &ct)] {
        let out = spike_bin(
            &c,
            &mallory,
            &["cipher", op, "--context", "cipher/app/one"],
            input,
        );
        assert_eq!(out.status.code(), Some(4), "{op}: {}", text(&out));
        assert!(out.stdout.is_empty());
    }
    // Nor may alice use a context outside her policy.
    let out = spike_bin(
        &c,
        &alice,
        &["cipher", "encrypt", "--context", "cipher/other"],
        &plain,
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));

    // Another context she may use does not open it: the same generic message as above.
    let out = spike_bin(
        &c,
        &alice,
        &["cipher", "decrypt", "--context", "cipher/app/two"],
        &ct,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(error_line(&out), generic);

    // Tampering anywhere past the header: the same message, nothing written.
    for at in [6, 20, ct.len() / 2, ct.len() - 1] {
        let mut bad = ct.clone();
        bad[at] ^= 0x20;
        std::fs::write(f("bad.bin"), &bad).unwrap();
        let out = c.spike(
            &alice,
            &[
                "cipher",
                "decrypt",
                "--context",
                "cipher/app/one",
                "-f",
                &f("bad.bin"),
                "--out",
                &f("never.bin"),
            ],
        );
        assert_eq!(out.status.code(), Some(1), "byte {at}: {}", text(&out));
        assert_eq!(error_line(&out), generic, "byte {at}");
        assert!(!Path::new(&f("never.bin")).exists());
    }
    // A newer format: refused with a message saying so.
    let mut newer = ct;
    newer[0] = 2;
    let out = spike_bin(
        &c,
        &alice,
        &["cipher", "decrypt", "--context", "cipher/app/one"],
        &newer,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("format 2"), "{}", text(&out));

    // Exactly the limit works; one byte more is 413.
    let big = data(MAX);
    let out = spike_bin(
        &c,
        &alice,
        &["cipher", "encrypt", "--context", "cipher/app/one"],
        &big,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(out.stdout.len(), MAX + OVERHEAD);
    let out = spike_bin(
        &c,
        &alice,
        &["cipher", "decrypt", "--context", "cipher/app/one"],
        &out.stdout,
    );
    assert!(out.stdout == big, "{}", stderr(&out));
    let out = spike_bin(
        &c,
        &alice,
        &["cipher", "encrypt", "--context", "cipher/app/one"],
        &data(MAX + 1),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("too_large"), "{}", text(&out));
    assert!(out.stdout.is_empty());

    // Audited under the context; no data in any log.
    let audit = std::fs::read_to_string(c.dir.path().join("audit.log")).unwrap();
    assert!(audit.contains("cipher.encrypt"), "{audit}");
    assert!(audit.contains("cipher.decrypt"), "{audit}");
    assert!(audit.contains("cipher/app/one"), "{audit}");
    assert!(!c.all_logs().contains("CIPHER-E2E-CANARY"));
}

/// One HTTP/1.1 request over mTLS as `who`, for the raw (non-JSON) form the CLI does not use.
fn post(c: &Cluster, who: &PemFiles, path: &str, content_type: &str, body: &[u8]) -> Answer {
    let identity = Identity::from_pem(
        &c.pki.td,
        &std::fs::read(&who.cert).unwrap(),
        &std::fs::read(&who.key).unwrap(),
        &std::fs::read(&who.bundle).unwrap(),
    )
    .unwrap();
    let source: Arc<dyn SvidSource> = Arc::new(StaticSource::new(c.pki.td.clone(), identity));
    let config = client_config(source, PeerRule::exactly(Builtin::Nexus.id(&c.pki.td))).unwrap();
    let connector = TlsConnector::from(Arc::new(config));
    let port = c.nexus_port;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let raw = rt.block_on(async {
        tokio::time::timeout(TIMEOUT, async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let name = ServerName::try_from("spike.invalid").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(head.as_bytes()).await.unwrap();
            tls.write_all(body).await.unwrap();
            tls.flush().await.unwrap();
            let mut resp = Vec::new();
            // The server may close without close_notify after `Connection: close`.
            let _ = tls.read_to_end(&mut resp).await;
            resp
        })
        .await
        .expect("raw request timed out")
    });
    Answer::parse(&raw)
}

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn parse(raw: &[u8]) -> Self {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete response head");
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
                .unwrap_or_default()
        };
        let body = raw[end + 4..].to_vec();
        let len: usize = header("content-length").parse().expect("content-length");
        assert_eq!(body.len(), len, "whole body read");
        assert_eq!(header("cache-control"), "no-store");
        Self {
            status,
            content_type: header("content-type"),
            body,
        }
    }

    fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        v["error"]["code"].as_str().unwrap_or_default().to_owned()
    }
}

#[test]
fn raw_octet_stream_calls_over_mtls() {
    spike_runtime::tls::install_crypto_provider();
    let mut c = Cluster::new(3);
    c.start_all(2);
    allow_cipher(
        &c,
        "raw-cipher",
        "spiffe://spike.test/app/raw",
        "cipher/raw/**",
    );
    let app = c.pki.svid("/app/raw");
    let plain = data(70_000);
    let octets = "application/octet-stream";

    let a = post(
        &c,
        &app,
        "/v1/cipher/encrypt?context=cipher/raw/x",
        octets,
        &plain,
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.content_type, octets);
    assert_eq!(a.body.len(), plain.len() + OVERHEAD);
    let ct = a.body;

    let a = post(
        &c,
        &app,
        "/v1/cipher/decrypt?context=cipher/raw/x",
        octets,
        &ct,
    );
    assert_eq!(a.status, 200);
    assert!(a.body == plain);

    // A raw ciphertext is the same format the CLI reads.
    let path = c.dir.path().join("raw.ct");
    std::fs::write(&path, &ct).unwrap();
    let out = c.spike(
        &app,
        &[
            "cipher",
            "decrypt",
            "--context",
            "cipher/raw/x",
            "-f",
            &path.display().to_string(),
        ],
    );
    assert!(out.stdout == plain, "{}", text(&out));

    // Refusals in raw form: 413 past the limit, 415 for other types, 400 without a context,
    // 400 for the wrong context, 403 without the permission.
    let a = post(
        &c,
        &app,
        "/v1/cipher/encrypt?context=cipher/raw/x",
        octets,
        &data(MAX + 1),
    );
    assert_eq!((a.status, a.code().as_str()), (413, "too_large"));
    let a = post(
        &c,
        &app,
        "/v1/cipher/encrypt?context=cipher/raw/x",
        "text/plain",
        b"x",
    );
    assert_eq!(
        (a.status, a.code().as_str()),
        (415, "unsupported_media_type")
    );
    let a = post(&c, &app, "/v1/cipher/encrypt", octets, b"x");
    assert_eq!((a.status, a.code().as_str()), (400, "bad_request"));
    let a = post(
        &c,
        &app,
        "/v1/cipher/decrypt?context=cipher/raw/y",
        octets,
        &ct,
    );
    assert_eq!((a.status, a.code().as_str()), (400, "bad_request"));
    let other = c.pki.svid("/app/other");
    let a = post(
        &c,
        &other,
        "/v1/cipher/decrypt?context=cipher/raw/x",
        octets,
        &ct,
    );
    assert_eq!((a.status, a.code().as_str()), (403, "forbidden"));
}

/// Starts Nexus like [`Cluster::start_nexus`], with extra flags.
fn start_nexus_with(c: &mut Cluster, extra: &[&str]) {
    let svid = c.pki.svid("/spike/nexus");
    let mut args = identity_args(&svid);
    args.extend([
        "--listen".into(),
        format!("127.0.0.1:{}", c.nexus_port),
        "--health-listen".into(),
        format!("127.0.0.1:{}", c.nexus_health),
        "--keeper-interval".into(),
        "300ms".into(),
        "--audit-log".into(),
        c.dir.path().join("audit.log").display().to_string(),
    ]);
    for p in &c.keeper_ports {
        args.extend(["--keeper".into(), format!("127.0.0.1:{}", p.api)]);
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let log = c.dir.path().join("nexus.log");
    c.nexus = Some(Proc::spawn(&c.bins.nexus, &args, log, &c.rust_log));
    let health = c.nexus_health;
    let mut exited = false;
    let started = wait_until(Duration::from_secs(20), || {
        exited = !c.nexus.as_mut().is_some_and(Proc::alive);
        exited || spike_e2e::http_get(health, "/healthz").is_some()
    });
    assert!(started && !exited, "nexus did not start: {}", c.all_logs());
}

#[test]
fn cipher_calls_are_rate_limited_per_caller() {
    let mut c = Cluster::new(3);
    for i in 1..=3 {
        c.start_keeper(i);
    }
    // A burst of 3 and one more per minute: the 4th call in a row is over.
    start_nexus_with(
        &mut c,
        &[
            "--set",
            "rate_limits.cipher.burst=3",
            "--set",
            "rate_limits.cipher.per_minute=1",
        ],
    );
    let out = c.bootstrap(2);
    assert!(out.status.success(), "{}", text(&out));
    assert!(c.wait_ready(Duration::from_secs(20)));
    allow_cipher(&c, "rl-cipher", "spiffe://spike.test/app/*", "cipher/**");
    let alice = c.pki.svid("/app/alice");
    let bob = c.pki.svid("/app/bob");
    let enc = |who: &PemFiles| {
        spike_bin(
            &c,
            who,
            &["cipher", "encrypt", "--context", "cipher/rl"],
            b"x",
        )
    };
    for i in 0..3 {
        let out = enc(&alice);
        assert!(out.status.success(), "call {i}: {}", text(&out));
    }
    let out = enc(&alice);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("rate_limited"), "{}", text(&out));
    // Another caller has its own budget.
    let out = enc(&bob);
    assert!(out.status.success(), "{}", text(&out));
}
