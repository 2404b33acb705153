//! Limits and operations against real processes: the configuration format (`--config`,
//! `SPIKE_*` variables, flags, `--print-config`, unknown keys), every limit of a Nexus started
//! from a configuration file crossed and answered as `docs/configuration.md` says, connection
//! timeouts and caps, graceful shutdown on SIGTERM, and the refusal of a newer stored format.
//!
//! Requests go over real mTLS with a small raw HTTP/1.1 client, so headers, partial requests
//! and `Expect: 100-continue` are under the test's control.

use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use spike_e2e::{Cluster, bins, text, wait_until};
use spike_runtime::net::MtlsClient;
use spike_runtime::svid::SvidSource;
use spike_runtime::tls::{PeerRule, client_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(20);

const SUPERUSER: &str = "/spike/pilot/role/superuser";

/// A runtime for the clients these tests drive directly (other modules use it too).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// The SVID source of a fresh SVID for `who`.
async fn source(c: &Cluster, who: &str) -> Arc<dyn SvidSource> {
    c.svid_source(who, WAIT).await
}

/// An HTTP response.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    /// The `error.code` of a JSON error body, or "".
    fn code(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }
}

/// A raw HTTP/1.1-over-mTLS client to Nexus.
struct Raw {
    connector: TlsConnector,
    addr: SocketAddr,
}

impl Raw {
    async fn new(c: &Cluster, who: &str) -> Self {
        let config = client_config(source(c, who).await, PeerRule::exactly(c.nexus_id())).unwrap();
        Self {
            connector: TlsConnector::from(Arc::new(config)),
            addr: SocketAddr::from(([127, 0, 0, 1], c.nexus_port)),
        }
    }

    /// A TCP connection and TLS handshake (fails if either fails).
    async fn connect(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = rustls_pki_types::ServerName::try_from("spike.invalid").unwrap();
        self.connector.connect(name, tcp).await
    }

    /// Sends `request` (which should say `Connection: close`) and reads the whole answer.
    async fn send_raw(&self, request: &[u8]) -> Reply {
        let mut s = bounded("connect", self.connect()).await.unwrap();
        s.write_all(request).await.unwrap();
        s.flush().await.unwrap();
        parse_reply(&bounded("reply", read_all(&mut s)).await)
    }

    /// `method path` with a JSON body and extra header lines.
    async fn call(&self, method: &str, path: &str, body: Option<&str>, extra: &str) -> Reply {
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: nexus\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        );
        self.send_raw(req.as_bytes()).await
    }

    async fn put(&self, path: &str, data: &serde_json::Value) -> Reply {
        let body = serde_json::json!({ "data": data }).to_string();
        self.call("PUT", &format!("/v1/secrets/data/{path}"), Some(&body), "")
            .await
    }

    async fn get(&self, path_and_query: &str) -> Reply {
        self.call("GET", path_and_query, None, "").await
    }
}

/// Reads until the peer closes (an abrupt close after data counts as the end).
async fn read_all<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Reply { status, body }
}

/// True once the peer has closed `s` (EOF or reset), within `WAIT`.
async fn closed_by_peer<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut byte = [0u8; 64];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 or similar before the close is fine; keep reading to the close.
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// Runs a binary with only `env` in its environment.
fn run(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(bin)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The configuration a successful `--print-config` printed.
fn printed_config(out: &Output) -> toml::Table {
    assert!(out.status.success(), "{}", text(out));
    stdout(out).parse().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The configuration format
// ---------------------------------------------------------------------------------------------

#[test]
fn config_layers_print_and_refuse_unknown_keys() {
    let b = bins();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nexus.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1000\"\nkeepers = [\"file:1\"]\n\
         [server]\nidle_timeout = \"5s\"\nmax_connections = 100\n\
         [limits]\nmax_versions = 3\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();

    // File < environment < flags (named and --set).
    let out = run(
        &b.nexus,
        &[
            "--config",
            f,
            "--listen",
            "127.0.0.1:3000",
            "--keeper",
            "flag:1,flag:2",
            "--set",
            "server.max_connections=9",
            "--print-config",
        ],
        &[
            ("SPIKE_NEXUS_LISTEN", "127.0.0.1:2000"),
            ("SPIKE_NEXUS_SERVER_IDLE_TIMEOUT", "7s"),
            ("SPIKE_NEXUS_LIMITS_MAX_PAGE", "50"),
        ],
    );
    let printed = printed_config(&out);
    assert_eq!(
        printed["listen"].as_str(),
        Some("127.0.0.1:3000"),
        "flag wins"
    );
    assert_eq!(
        printed["keepers"].as_array().unwrap().len(),
        2,
        "flag list replaces the file's"
    );
    assert_eq!(
        printed["server"]["idle_timeout"].as_str(),
        Some("7s"),
        "env over file"
    );
    assert_eq!(
        printed["server"]["max_connections"].as_integer(),
        Some(9),
        "--set over file"
    );
    assert_eq!(printed["limits"]["max_versions"].as_integer(), Some(3));
    assert_eq!(printed["limits"]["max_page"].as_integer(), Some(50));
    assert_eq!(
        printed["server"]["max_headers"].as_integer(),
        Some(100),
        "default"
    );

    // SPIKE_NEXUS_CONFIG names the file; the printed configuration is a valid file that
    // prints the same again.
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, stdout(&out)).unwrap();
    let out2 = run(
        &b.nexus,
        &["--print-config"],
        &[("SPIKE_NEXUS_CONFIG", again.to_str().unwrap())],
    );
    assert!(out2.status.success(), "{}", text(&out2));
    assert_eq!(stdout(&out2), stdout(&out));
    // The shared SPIKE_CONFIG of older releases still works for a service, with a warning.
    let out3 = run(
        &b.nexus,
        &["--print-config"],
        &[("SPIKE_CONFIG", again.to_str().unwrap())],
    );
    assert!(out3.status.success(), "{}", text(&out3));
    assert_eq!(stdout(&out3), stdout(&out));
    assert!(
        stderr(&out3).contains("SPIKE_CONFIG is deprecated"),
        "{}",
        text(&out3)
    );

    // A typo in the file: refused with the key, the file and a suggestion; exit status 2.
    std::fs::write(&file, "[server]\nmax_conections = 5\n").unwrap();
    let out = run(&b.nexus, &["--config", f, "--keeper", "k:1"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("unknown configuration key `server.max_conections`"),
        "{err}"
    );
    assert!(
        err.contains("did you mean `server.max_connections`"),
        "{err}"
    );
    assert!(err.contains(f), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A typo in --set, and a value of the wrong type from the environment.
    let out = run(
        &b.nexus,
        &[
            "--keeper",
            "k:1",
            "--set",
            "limits.max_bdy=1",
            "--print-config",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("did you mean `limits.max_body`"));
    let out = run(
        &b.nexus,
        &["--keeper", "k:1", "--print-config"],
        &[("SPIKE_NEXUS_LIMITS_MAX_BODY", "big")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("SPIKE_NEXUS_LIMITS_MAX_BODY"));

    // An unknown variable with the prefix is a warning with a suggestion, not silence.
    let out = run(
        &b.nexus,
        &["--keeper", "k:1", "--print-config"],
        &[
            ("SPIKE_NEXUS_SERVER_MAX_CONECTIONS", "5"),
            ("SPIKE_NEXUS_ADDR", "127.0.0.1:8553"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("SPIKE_NEXUS_SERVER_MAX_CONECTIONS")
            && err.contains("SPIKE_NEXUS_SERVER_MAX_CONNECTIONS"),
        "{err}"
    );
    assert!(
        !err.contains("SPIKE_NEXUS_ADDR "),
        "the CLI's variable is not a typo: {err}"
    );

    // An out-of-range limit stops Nexus before it listens, naming the key.
    let out = run(
        &b.nexus,
        &[
            "--keeper",
            "k:1",
            "--audit-log",
            "/dev/null",
            "--set",
            "server.max_header_bytes=100",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("server.max_header_bytes"));

    // The keeper and the agent share the format.
    let kf = dir.path().join("keeper.toml");
    std::fs::write(&kf, "[server]\nmax_connections = 7\n").unwrap();
    let out = run(
        &b.keeper,
        &["--config", kf.to_str().unwrap(), "--print-config"],
        &[("SPIKE_KEEPER_SERVER_DRAIN_TIMEOUT", "3s")],
    );
    let printed = printed_config(&out);
    assert_eq!(printed["server"]["max_connections"].as_integer(), Some(7));
    assert_eq!(printed["server"]["drain_timeout"].as_str(), Some("3s"));
    std::fs::write(&kf, "listn = \"127.0.0.1:1\"\n").unwrap();
    let out = run(&b.keeper, &["--config", kf.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("did you mean `listen`"));

    let out = run(
        &b.agent,
        &["--svid-ttl", "10m", "--print-config"],
        &[("SPIKE_TRUST_DOMAIN", "example.org")],
    );
    let printed = printed_config(&out);
    assert_eq!(printed["svid_ttl"].as_str(), Some("10m"));
    assert_eq!(printed["trust_domain"].as_str(), Some("example.org"));
}

/// Each binary reads its own configuration variable: a shell exporting `SPIKE_CONFIG` or
/// `SPIKE_NEXUS_CONFIG` for `spike-nexus` leaves the CLI alone.
#[test]
fn a_services_config_variable_does_not_reach_the_cli() {
    let b = bins();
    let dir = tempfile::tempdir().unwrap();
    let nexus_file = dir.path().join("nexus.toml");
    std::fs::write(&nexus_file, "keepers = [\"127.0.0.1:1\"]\n").unwrap();
    let nf = nexus_file.to_str().unwrap();
    let out = run(
        &b.spike,
        &["--print-config"],
        &[("SPIKE_CONFIG", nf), ("SPIKE_NEXUS_CONFIG", nf)],
    );
    let printed = printed_config(&out);
    assert_eq!(printed["nexus"].as_str(), Some("127.0.0.1:8553"));
    let cli_file = dir.path().join("cli.toml");
    std::fs::write(&cli_file, "nexus = \"127.0.0.1:9\"\n").unwrap();
    let out = run(
        &b.spike,
        &["--print-config"],
        &[
            ("SPIKE_CLI_CONFIG", cli_file.to_str().unwrap()),
            ("SPIKE_CONFIG", nf),
        ],
    );
    let printed = printed_config(&out);
    assert_eq!(printed["nexus"].as_str(), Some("127.0.0.1:9"));
}

/// The PEM files of an identity may come from different layers, key by key; relative paths
/// in a file are relative to the file.
#[test]
fn identity_files_combine_across_layers() {
    let b = bins();
    let dir = tempfile::tempdir().unwrap();
    let identity = |printed: &toml::Table| {
        let id = &printed["identity"];
        ["svid_cert", "svid_key", "svid_bundle"].map(|k| id[k].as_str().unwrap().to_owned())
    };
    let d = dir.path().display();
    // The bundle from the environment, cert and key as flags.
    let out = run(
        &b.spike,
        &[
            "--svid-cert",
            "/c.pem",
            "--svid-key",
            "/k.pem",
            "--print-config",
        ],
        &[("SPIKE_SVID_BUNDLE", "/b.pem")],
    );
    let printed = printed_config(&out);
    assert_eq!(identity(&printed), ["/c.pem", "/k.pem", "/b.pem"]);
    // The same with a command that needs the SVID: no usage error (exit 2) about required
    // arguments; it fails on the missing files instead.
    let out = run(
        &b.spike,
        &[
            "--svid-cert",
            "/nonexistent/c.pem",
            "--svid-key",
            "/nonexistent/k.pem",
            "status",
        ],
        &[("SPIKE_SVID_BUNDLE", "/nonexistent/b.pem")],
    );
    assert_ne!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        !stderr(&out).contains("required arguments"),
        "{}",
        text(&out)
    );
    // The bundle from --set.
    let out = run(
        &b.spike,
        &[
            "--svid-cert",
            "/c.pem",
            "--svid-key",
            "/k.pem",
            "--set",
            "identity.svid_bundle=/b.pem",
            "--print-config",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    // Nexus: cert and key in the file (relative to it), the bundle as a flag.
    let file = dir.path().join("nexus.toml");
    std::fs::write(
        &file,
        "keepers = [\"127.0.0.1:1\"]\ndata_dir = \"data\"\n\
         [identity]\nsvid_cert = \"tls/svid.pem\"\nsvid_key = \"tls/svid_key.pem\"\n",
    )
    .unwrap();
    let out = run(
        &b.nexus,
        &[
            "--config",
            file.to_str().unwrap(),
            "--svid-bundle",
            "/b.pem",
            "--print-config",
        ],
        &[],
    );
    let printed = printed_config(&out);
    assert_eq!(
        identity(&printed),
        [
            format!("{d}/tls/svid.pem"),
            format!("{d}/tls/svid_key.pem"),
            "/b.pem".into()
        ]
    );
    assert_eq!(
        printed["data_dir"].as_str(),
        Some(format!("{d}/data").as_str())
    );
}

/// A service that cannot start says why on one line, each cause once.
#[test]
fn a_failure_to_start_is_said_once() {
    let b = bins();
    let dir = tempfile::tempdir().unwrap();
    let pki = spike_e2e::Pki::new(dir.path());
    let svid = pki.svid("/spike/keeper/1");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut args = spike_e2e::identity_args(&svid);
    args.extend([
        "--listen".into(),
        taken.local_addr().unwrap().to_string(),
        "--health-listen".into(),
        "127.0.0.1:0".into(),
    ]);
    let log = dir.path().join("keeper.log");
    let mut keeper = spike_e2e::Proc::spawn(&b.keeper, &args, log.clone(), "info");
    let status = keeper.wait_exit(WAIT).expect("the keeper exits");
    assert_eq!(status.code(), Some(1));
    let out = std::fs::read_to_string(&log).unwrap();
    let failures: Vec<&str> = out.lines().filter(|l| l.contains("in use")).collect();
    assert_eq!(failures.len(), 1, "one line for the failure:\n{out}");
    assert_eq!(
        failures[0].matches("in use").count(),
        1,
        "each cause once:\n{out}"
    );
    assert!(failures[0].contains("ERROR"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Request and secret limits
// ---------------------------------------------------------------------------------------------

const SMALL_LIMITS: &str = r#"
[server]
max_header_bytes = 8192
max_headers = 16

[limits]
max_body = 4096
max_keys = 2
max_key_len = 8
max_value_len = 16
max_versions = 2
max_page = 2
max_path_len = 24
max_path_depth = 3
max_batch_items = 2
max_batch_bytes = 2048

[rate_limits.cipher]
per_minute = 1
burst = 2
"#;

/// An unsealed one-keeper cluster whose Nexus runs with [`SMALL_LIMITS`].
fn small_limits_cluster() -> Cluster {
    let mut c = Cluster::new(1);
    c.start_keeper(1);
    c.start_nexus_with_config(SMALL_LIMITS);
    let out = c.bootstrap(1);
    assert!(out.status.success(), "{}", text(&out));
    assert!(c.wait_ready(WAIT), "nexus not ready");
    c
}

#[test]
fn path_length_and_depth_limits_answer_invalid_path() {
    let c = small_limits_cluster();
    runtime().block_on(async {
        let su = Raw::new(&c, SUPERUSER).await;
        let ok = serde_json::json!({ "k": "v" });
        let long = format!("p/{}", "x".repeat(23));
        assert_eq!(long.len(), 25);
        let r = su.put(&long, &ok).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_path"),
            "{r:?}"
        );
        let r = su.get(&format!("/v1/secrets/data/{long}")).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_path"),
            "{r:?}"
        );
        let r = su.put(&long[..24], &ok).await;
        assert_eq!(r.status, 200, "at the length limit: {r:?}");
        let r = su.put("d1/d2/d3/d4", &ok).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_path"),
            "{r:?}"
        );
        let r = su.get("/v1/secrets/list?prefix=d1/d2/d3/d4").await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_path"),
            "{r:?}"
        );
        let r = su.put("d1/d2/d3", &ok).await;
        assert_eq!(r.status, 200, "at the depth limit: {r:?}");
    });
}

#[test]
fn batch_limits_answer_too_large() {
    let c = small_limits_cluster();
    runtime().block_on(async {
        let su = Raw::new(&c, SUPERUSER).await;
        let batch = |n: usize, pad: usize| {
            let items: Vec<_> = (0..n)
                .map(|i| serde_json::json!({ "path": format!("b/{i}"), "data": { "k": "v" } }))
                .collect();
            format!(
                "{}{}",
                serde_json::json!({ "items": items }),
                " ".repeat(pad)
            )
        };
        let r = su
            .call("POST", "/v1/secrets/batch", Some(&batch(2, 0)), "")
            .await;
        assert_eq!(r.status, 200, "within the limits: {r:?}");
        let r = su
            .call("POST", "/v1/secrets/batch", Some(&batch(3, 0)), "")
            .await;
        assert_eq!((r.status, r.code().as_str()), (413, "too_large"), "{r:?}");
        let r = su
            .call("POST", "/v1/secrets/batch", Some(&batch(2, 3000)), "")
            .await;
        assert_eq!((r.status, r.code().as_str()), (413, "too_large"), "{r:?}");
    });
}

#[test]
fn every_request_limit_answers_as_documented() {
    let mut c = small_limits_cluster();
    let rt = runtime();
    rt.block_on(async {
        let su = Raw::new(&c, SUPERUSER).await;
        let ok = serde_json::json!({ "k": "v" });

        // Positive control: a request within every limit.
        let r = su.put("a/b", &ok).await;
        assert_eq!(r.status, 200, "{r:?}");

        // Body size: the same content padded past max_body.
        let padded = format!("{{\"data\":{{\"k\":\"v\"}}{}}}", " ".repeat(5000));
        let r = su
            .call("PUT", "/v1/secrets/data/a/b", Some(&padded), "")
            .await;
        assert_eq!((r.status, r.code().as_str()), (413, "too_large"), "{r:?}");

        // Keys per secret, key length, value size.
        let r = su
            .put("a/b", &serde_json::json!({ "a": "1", "b": "2", "c": "3" }))
            .await;
        assert_eq!((r.status, r.code().as_str()), (413, "too_large"), "{r:?}");
        let r = su
            .put("a/b", &serde_json::json!({ "k23456789": "v" }))
            .await;
        assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{r:?}");
        let r = su
            .put("a/b", &serde_json::json!({ "k": "x".repeat(17) }))
            .await;
        assert_eq!((r.status, r.code().as_str()), (413, "too_large"), "{r:?}");
        let r = su
            .put(
                "a/b",
                &serde_json::json!({ "k": "x".repeat(16), "k2": "y" }),
            )
            .await;
        assert_eq!(r.status, 200, "at the limits: {r:?}");

        // Versions: only the newest max_versions are kept.
        for v in ["1", "2", "3"] {
            let r = su.put("ver/x", &serde_json::json!({ "v": v })).await;
            assert_eq!(r.status, 200, "{r:?}");
        }
        let r = su.get("/v1/secrets/data/ver/x?version=1").await;
        assert_eq!((r.status, r.code().as_str()), (404, "not_found"), "{r:?}");
        let r = su.get("/v1/secrets/data/ver/x?version=2").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["data"]["v"], "2");

        // List page size: a larger requested page is cut to max_page, with a cursor.
        for i in 0..5 {
            assert_eq!(su.put(&format!("pg/s{i}"), &ok).await.status, 200);
        }
        let r = su.get("/v1/secrets/list?prefix=pg&limit=100").await;
        assert_eq!(r.status, 200, "{r:?}");
        let page = r.json();
        assert_eq!(page["secrets"].as_array().unwrap().len(), 2, "{page}");
        assert!(page["next"].is_string(), "{page}");

        // Header count: 10 extra headers pass, 20 are answered 431.
        let headers = |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: v\r\n")).collect() };
        let r = su.call("GET", "/v1/status", None, &headers(8)).await;
        assert_eq!(r.status, 200, "{r:?}");
        let r = su.call("GET", "/v1/status", None, &headers(20)).await;
        assert_eq!(r.status, 431, "{r:?}");
        assert_eq!(
            r.code(),
            "too_large",
            "431 carries the JSON error body: {r:?}"
        );
        // Far over the count, hyper's parser refuses the head itself: still a 431.
        let r = su.call("GET", "/v1/status", None, &headers(60)).await;
        assert_eq!(r.status, 431, "{r:?}");

        // Header size: a 6000-byte header passes, a 9000-byte one is answered 431.
        let big = |n: usize| format!("X-Big: {}\r\n", "b".repeat(n));
        let r = su.call("GET", "/v1/status", None, &big(6000)).await;
        assert_eq!(r.status, 200, "{r:?}");
        let r = su.call("GET", "/v1/status", None, &big(9000)).await;
        assert_eq!(r.status, 431, "{r:?}");
        assert_eq!(
            r.code(),
            "too_large",
            "431 carries the JSON error body: {r:?}"
        );
        // Far over the size, past hyper's read buffer, hyper refuses the head itself: a 431.
        let r = su.call("GET", "/v1/status", None, &big(40_000)).await;
        assert_eq!(r.status, 431, "{r:?}");

        // Rate limit per SPIFFE ID on the cipher API: a burst of 2, then 429.
        let encrypt = r#"{"context":"a/b","plaintext":"aGk="}"#;
        for _ in 0..2 {
            let r = su
                .call("POST", "/v1/cipher/encrypt", Some(encrypt), "")
                .await;
            assert_ne!(r.status, 429, "{r:?}");
        }
        let r = su
            .call("POST", "/v1/cipher/encrypt", Some(encrypt), "")
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (429, "rate_limited"),
            "{r:?}"
        );
        // Another SPIFFE ID has its own bucket.
        let other = Raw::new(&c, "/app/other").await;
        let r = other
            .call("POST", "/v1/cipher/encrypt", Some(encrypt), "")
            .await;
        assert_ne!(r.status, 429, "{r:?}");

        // Nothing crashed: Nexus still answers.
        assert_eq!(su.get("/v1/secrets/data/a/b").await.status, 200);
    });
    assert!(c.nexus.as_mut().unwrap().alive());
}

// ---------------------------------------------------------------------------------------------
// Connection limits
// ---------------------------------------------------------------------------------------------

#[test]
fn handshake_and_idle_timeouts_close_connections_but_not_requests_in_flight() {
    let mut c = Cluster::new(1);
    // No keeper: Nexus stays sealed, which is enough for connection-level limits.
    c.start_nexus_with_config(
        "[server]\nhandshake_timeout = \"300ms\"\nidle_timeout = \"300ms\"\n\
         header_timeout = \"60s\"\n",
    );
    let rt = runtime();
    rt.block_on(async {
        let raw = Raw::new(&c, SUPERUSER).await;

        // A TCP connection that never starts TLS is closed after the handshake timeout.
        let mut tcp = TcpStream::connect(raw.addr).await.unwrap();
        assert!(
            closed_by_peer(&mut tcp).await,
            "a silent TCP connection stayed open"
        );

        // A TLS connection that sends no request is closed as idle (the 60s header timeout
        // cannot have done it within the wait).
        let mut idle = bounded("handshake", raw.connect()).await.unwrap();
        assert!(
            closed_by_peer(&mut idle).await,
            "an idle connection stayed open"
        );

        // A request in flight (its body sent only after several idle periods) is answered.
        let mut s = bounded("handshake", raw.connect()).await.unwrap();
        let body = r#"{"data":{"k":"v"}}"#;
        let head = format!(
            "PUT /v1/secrets/data/slow/x HTTP/1.1\r\nHost: nexus\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        s.write_all(body.as_bytes()).await.unwrap();
        s.flush().await.unwrap();
        let reply = parse_reply(&bounded("reply", read_all(&mut s)).await);
        // Sealed: 503, but an answer, not a dropped connection.
        assert_eq!(reply.status, 503, "{reply:?}");
    });
}

#[test]
fn connection_cap_queues_and_header_timeout_closes() {
    let mut c = Cluster::new(1);
    c.start_nexus_with_config(
        "[server]\nmax_connections = 2\nhandshake_timeout = \"60s\"\n\
         idle_timeout = \"60s\"\nheader_timeout = \"300ms\"\n",
    );
    let rt = runtime();
    rt.block_on(async {
        let raw = Arc::new(Raw::new(&c, SUPERUSER).await);

        // Two connections take both slots (they sit in the handshake, which has 60s).
        let a = TcpStream::connect(raw.addr).await.unwrap();
        let _b = TcpStream::connect(raw.addr).await.unwrap();
        // A third waits: its handshake cannot finish while both slots are taken.
        let r = raw.clone();
        let mut third = tokio::spawn(async move { r.connect().await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !third.is_finished(),
            "a third connection was served past max_connections = 2"
        );
        // Freeing one slot lets it through.
        drop(a);
        let mut s = bounded("the queued handshake", &mut third)
            .await
            .unwrap()
            .unwrap();
        s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: nexus\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let reply = parse_reply(&bounded("reply", read_all(&mut s)).await);
        assert_eq!(reply.status, 200, "{reply:?}");
        drop(_b);

        // A request head that never completes is cut off by the header timeout.
        let mut slow = bounded("handshake", raw.connect()).await.unwrap();
        slow.write_all(b"GET /v1/status HTTP/1.1\r\nHost: nexus\r\n")
            .await
            .unwrap();
        slow.flush().await.unwrap();
        assert!(
            closed_by_peer(&mut slow).await,
            "an incomplete request head kept the connection open"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

#[test]
fn sigterm_drains_in_flight_requests_exits_zero_and_keeps_every_acknowledged_write() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let mut c = Cluster::new(3);
    let cfg = c.write_config("nexus.toml", "[server]\ndrain_timeout = \"30s\"\n");
    c.nexus_extra_args
        .extend(["--config".into(), cfg.display().to_string()]);
    c.start_all(2);
    let rt = runtime();
    let nexus_addr = format!("127.0.0.1:{}", c.nexus_port);

    // A stream of writes from four callers, each over its own kept-alive connection.
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = rt.block_on(async {
            MtlsClient::new(
                nexus_addr.clone(),
                c.nexus_id(),
                source(&c, SUPERUSER).await,
            )
            .unwrap()
            .with_timeout(Duration::from_secs(10))
        });
        let (stop, progress) = (stop.clone(), progress.clone());
        writers.push(rt.spawn(async move {
            let (mut acked, mut bad) = (Vec::new(), Vec::new());
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let path = format!("stream/w{w}-{i}");
                let body = serde_json::json!({ "data": { "v": path } }).to_string();
                match client
                    .send(
                        http::Method::PUT,
                        &format!("/v1/secrets/data/{path}"),
                        Some(body.into_bytes()),
                    )
                    .await
                {
                    Ok(r) if r.status == 200 => {
                        acked.push(path);
                        progress.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => bad.push(format!("{path}: {}", r.status)),
                    // Connection closed or refused: Nexus is going away.
                    Err(_) => break,
                }
            }
            (acked, bad)
        }));
    }

    // A request in flight at SIGTERM: headers sent and Nexus reading the body (it has
    // answered `100 Continue`), the body not sent yet.
    let body = r#"{"data":{"v":"in-flight"}}"#;
    let mut s = rt.block_on(async {
        let raw = Raw::new(&c, SUPERUSER).await;
        let mut s = bounded("handshake", raw.connect()).await.unwrap();
        let head = format!(
            "PUT /v1/secrets/data/drain/inflight HTTP/1.1\r\nHost: nexus\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Expect: 100-continue\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.flush().await.unwrap();
        let mut seen = Vec::new();
        bounded("100 Continue", async {
            let mut buf = [0u8; 256];
            while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed before 100 Continue");
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        let seen = String::from_utf8_lossy(&seen).into_owned();
        assert!(seen.starts_with("HTTP/1.1 100"), "{seen}");
        s
    });

    assert!(
        wait_until(WAIT, || progress.load(Ordering::Relaxed) >= 20),
        "the writers made no progress"
    );
    c.nexus.as_ref().unwrap().sigterm();
    // New connections are refused at once, while the in-flight request is still open.
    let port = c.nexus_port;
    assert!(
        wait_until(WAIT, || StdTcpStream::connect(("127.0.0.1", port)).is_err()),
        "Nexus kept accepting connections after SIGTERM"
    );
    assert!(
        c.nexus.as_mut().unwrap().alive(),
        "Nexus exited with a request in flight"
    );
    let (acked, bad, inflight) = rt.block_on(async {
        // The in-flight request finishes.
        s.write_all(body.as_bytes()).await.unwrap();
        s.flush().await.unwrap();
        let reply = parse_reply(&bounded("in-flight reply", read_all(&mut s)).await);
        stop.store(true, Ordering::Relaxed);
        let (mut acked, mut bad) = (Vec::new(), Vec::new());
        for w in writers {
            let (a, b) = bounded("writer", w).await.unwrap();
            acked.extend(a);
            bad.extend(b);
        }
        (acked, bad, reply)
    });

    assert_eq!(inflight.status, 200, "in-flight request: {inflight:?}");
    assert!(
        bad.is_empty(),
        "answers other than 200 while draining: {bad:?}"
    );
    let status = c
        .nexus
        .as_mut()
        .unwrap()
        .wait_exit(WAIT)
        .expect("Nexus did not exit after SIGTERM");
    assert!(status.success(), "Nexus exit status {status:?}");
    let log = std::fs::read_to_string(c.dir.path().join("nexus.log")).unwrap();
    assert!(log.contains("keys dropped"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    // A restart unseals from the keepers and has every acknowledged write.
    c.nexus = None;
    c.start_nexus();
    assert!(c.wait_ready(WAIT), "Nexus did not unseal after the restart");
    rt.block_on(async {
        let su = Raw::new(&c, SUPERUSER).await;
        let r = su.get("/v1/secrets/data/drain/inflight").await;
        assert_eq!(r.status, 200, "the in-flight write was lost: {r:?}");
        assert_eq!(r.json()["data"]["v"], "in-flight");
        for path in &acked {
            let r = su.get(&format!("/v1/secrets/data/{path}")).await;
            assert_eq!(r.status, 200, "{path} lost: {r:?}");
            assert_eq!(r.json()["data"]["v"], path.as_str());
        }
    });

    // Keepers stop cleanly on SIGTERM too.
    for i in 1..=3 {
        let k = c.keepers[i - 1].as_mut().unwrap();
        k.sigterm();
        let status = k
            .wait_exit(WAIT)
            .expect("keeper did not exit after SIGTERM");
        assert!(status.success(), "keeper {i} exit status {status:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Stored format
// ---------------------------------------------------------------------------------------------

#[test]
fn a_newer_store_format_is_refused_with_a_clear_message() {
    let mut c = Cluster::new(1);
    let data = c.data_dir.clone().unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let file = data.join("spike.redb");
    // A store stamped by a future SPIKE.
    const INTERNAL: redb::TableDefinition<&[u8], &[u8]> =
        redb::TableDefinition::new("__spike_store");
    {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(INTERNAL)
            .unwrap()
            .insert(b"format_version".as_slice(), 99u32.to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    c.spawn_nexus();
    let status = c
        .nexus
        .as_mut()
        .unwrap()
        .wait_exit(WAIT)
        .expect("Nexus kept running on a newer store format");
    assert_eq!(status.code(), Some(1), "a refusal, not a crash: {status:?}");
    let log = std::fs::read_to_string(c.dir.path().join("nexus.log")).unwrap();
    assert!(
        log.contains("written by a newer SPIKE (format 99)"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    // Nothing was changed: the stamp is still the future one.
    use redb::ReadableDatabase as _;
    let db = redb::Database::open(&file).unwrap();
    let txn = db.begin_read().unwrap();
    let stamp = txn
        .open_table(INTERNAL)
        .unwrap()
        .get(b"format_version".as_slice())
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    assert_eq!(stamp, 99u32.to_be_bytes());
}

#[test]
fn a_newer_init_record_keeps_nexus_sealed_with_a_clear_reason() {
    let mut c = Cluster::new(1);
    let data = c.data_dir.clone().unwrap();
    let rt = runtime();
    rt.block_on(async {
        use spike_store::Store as _;
        let store = spike_store::RedbStore::open(&data).unwrap();
        let record = serde_json::json!({
            "format": 99, "shares": 1, "threshold": 1, "epoch": 1,
            "wrapped_data_key": "x", "created": "2100-01-01T00:00:00Z"
        });
        let mut batch = spike_store::Batch::new();
        batch.put(
            spike_store::Table::new("meta"),
            b"init".to_vec(),
            record.to_string().into_bytes(),
        );
        store.commit(batch).await.unwrap();
        store.close().await.unwrap();
    });
    c.start_keeper(1);
    c.start_nexus();
    let expected = "initialized by a newer SPIKE (init format 99)";
    assert!(
        wait_until(WAIT, || c
            .readyz()
            .is_some_and(|(s, b)| s == 503 && b.contains(expected))),
        "readyz: {:?}",
        c.readyz()
    );
    rt.block_on(async {
        let su = Raw::new(&c, SUPERUSER).await;
        let r = su.get("/v1/secrets/data/a/b").await;
        assert_eq!((r.status, r.code().as_str()), (503, "sealed"), "{r:?}");
        assert!(r.body.contains(expected), "{r:?}");
    });
    // Still sealed after several keeper rounds, and still running.
    std::thread::sleep(Duration::from_secs(1));
    assert!(matches!(c.readyz(), Some((503, _))));
    assert!(c.nexus.as_mut().unwrap().alive());
    let log = std::fs::read_to_string(c.dir.path().join("nexus.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_stalled_upload_is_answered_408_and_its_connection_closed() {
    let mut c = Cluster::new(1);
    c.start_nexus_with_config(
        "[server]\nrequest_timeout = \"700ms\"\nidle_timeout = \"60s\"\nheader_timeout = \"60s\"\n",
    );
    let rt = runtime();
    rt.block_on(async {
        let raw = Raw::new(&c, SUPERUSER).await;
        // Headers promise a body that never comes: the request cannot hold the connection.
        let mut s = bounded("handshake", raw.connect()).await.unwrap();
        s.write_all(
            b"PUT /v1/secrets/data/stall/x HTTP/1.1\r\nHost: nexus\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"data\":",
        )
        .await
        .unwrap();
        s.flush().await.unwrap();
        let reply = parse_reply(&bounded("reply", read_all(&mut s)).await);
        assert_eq!(reply.status, 408, "{reply:?}");
        assert!(
            closed_by_peer(&mut s).await,
            "the stalled connection stayed open"
        );
    });
}

/// One request with `curl --http2` (ALPN h2) and the SVID in `files`; returns (HTTP version,
/// status, body). curl cannot verify a SPIFFE server certificate by name, hence `-k`: the test
/// is about the server's limits, not the client's checks.
fn curl_h2(
    c: &Cluster,
    files: &spike_agent::PemFiles,
    method: &str,
    path: &str,
    extra: &[String],
    body: Option<&str>,
) -> (String, u16, String) {
    let url = format!("https://127.0.0.1:{}{path}", c.nexus_port);
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--http2", "--max-time", "20", "-X", method])
        .arg("--cert")
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key)
        .args(["-H", "Content-Type: application/json"])
        .args(["-w", "\n%{http_version} %{http_code}"]);
    for h in extra {
        cmd.args(["-H", h]);
    }
    if let Some(b) = body {
        cmd.args(["--data-binary", b]);
    }
    let out = cmd.arg(url).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (version, status) = tail.split_once(' ').unwrap_or((tail, "0"));
    (
        version.to_owned(),
        status.parse().unwrap_or(0),
        body.to_owned(),
    )
}

fn error_code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn http2_requests_meet_the_same_limits_as_http1() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl with HTTP/2 is needed for this test");
    }
    let c = small_limits_cluster();
    let su = c.pki.svid(SUPERUSER);
    let headers = |n: usize| -> Vec<String> { (0..n).map(|i| format!("X-H{i}: v")).collect() };

    // Positive control: within every limit, over HTTP/2.
    let (v, status, body) = curl_h2(&c, &su, "GET", "/v1/status", &headers(8), None);
    assert_eq!((v.as_str(), status), ("2", 200), "{body}");

    // Header count and header size: 431 with the JSON error body.
    let (v, status, body) = curl_h2(&c, &su, "GET", "/v1/status", &headers(20), None);
    assert_eq!((v.as_str(), status), ("2", 431), "{body}");
    assert_eq!(error_code(&body), "too_large", "{body}");
    let big = |n: usize| vec![format!("X-Big: {}", "b".repeat(n))];
    let (v, status, body) = curl_h2(&c, &su, "GET", "/v1/status", &big(9000), None);
    assert_eq!((v.as_str(), status), ("2", 431), "{body}");
    assert_eq!(error_code(&body), "too_large", "{body}");
    // Far over the limit, past what the server lets h2 decode: still a 431, not a drop.
    let (v, status, body) = curl_h2(&c, &su, "GET", "/v1/status", &big(40_000), None);
    assert_eq!((v.as_str(), status), ("2", 431), "{body}");

    // A body over max_body: 413 too_large every time.
    let padded = format!("{{\"data\":{{\"k\":\"v\"}}{}}}", " ".repeat(5000));
    for _ in 0..5 {
        let (v, status, body) = curl_h2(&c, &su, "PUT", "/v1/secrets/data/a/b", &[], Some(&padded));
        assert_eq!((v.as_str(), status), ("2", 413), "{body}");
        assert_eq!(error_code(&body), "too_large", "{body}");
    }
    // The server is fine afterwards.
    let (_, status, body) = curl_h2(&c, &su, "GET", "/v1/status", &[], None);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_declared_body_over_the_limit_is_answered_413_at_once() {
    let c = small_limits_cluster();
    let rt = runtime();
    rt.block_on(async {
        let su = Raw::new(&c, SUPERUSER).await;
        // Headers that declare 100000 bytes, and no body: the answer cannot wait for it
        // (before, the request sat until request_timeout and got a 408).
        let r = su
            .send_raw(
                b"PUT /v1/secrets/data/a/b HTTP/1.1\r\nHost: nexus\r\nConnection: close\r\n\
                  Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
            )
            .await;
        assert_eq!((r.status, r.code().as_str()), (413, "too_large"), "{r:?}");
        // Positive control: a declared length within the limit is read and served.
        let ok = r#"{"data":{"k":"v"}}"#;
        let r = su.call("PUT", "/v1/secrets/data/a/b", Some(ok), "").await;
        assert_eq!(r.status, 200, "{r:?}");
    });
}

#[test]
fn an_http2_body_over_the_limit_gets_413_every_time_with_a_hyper_client() {
    use http_body_util::{BodyExt, Full};
    let c = small_limits_cluster();
    let rt = runtime();
    rt.block_on(async {
        let mut config =
            client_config(source(&c, SUPERUSER).await, PeerRule::exactly(c.nexus_id())).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(("127.0.0.1", c.nexus_port))
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("spike.invalid").unwrap();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        // Just over the limit, and far over it (more than one HTTP/2 flow-control window, so
        // the client is still sending when the answer comes).
        let padded = |n: usize| format!("{{\"data\":{{\"k\":\"v\"}}{}}}", " ".repeat(n));
        let put = |body: String| {
            http::Request::put("https://nexus/v1/secrets/data/a/b")
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from(body)))
                .unwrap()
        };
        for i in 0..20 {
            let resp = bounded(
                "h2 response",
                sender.send_request(put(padded(if i % 2 == 0 { 5000 } else { 300_000 }))),
            )
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
            let status = resp.status().as_u16();
            let body = bounded("h2 body", resp.into_body().collect())
                .await
                .unwrap_or_else(|e| panic!("request {i} body: {e}"))
                .to_bytes();
            let reply = Reply {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            assert_eq!(
                (reply.status, reply.code().as_str()),
                (413, "too_large"),
                "{i}: {reply:?}"
            );
        }
        // Positive control on the same connection.
        let resp = bounded(
            "h2 response",
            sender.send_request(put(r#"{"data":{"k":"v"}}"#.into())),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
    });
}
