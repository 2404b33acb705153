//! Harness for end-to-end tests: starts real `spike-nexus` and `spike-keeper` processes on
//! loopback with SVIDs from a test CA (PEM files), and runs the real `spike` CLI.
//!
//! The binaries must be built first (`cargo build --bins`; `./test.sh` does it). Every wait is
//! bounded; every process is killed on drop.
#![warn(missing_docs)]

pub mod ledger;
pub mod readers;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use spike_agent::{CertificateAuthority, PemFiles};
use spike_core::id::{SpiffeId, TrustDomain};

/// The trust domain of test clusters.
pub const TD: &str = "spike.test";

/// Paths of the built binaries.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `spike`
    pub spike: PathBuf,
    /// `spike-nexus`
    pub nexus: PathBuf,
    /// `spike-keeper`
    pub keeper: PathBuf,
    /// `spike-agent`
    pub agent: PathBuf,
    /// `spike-gateway`
    pub gateway: PathBuf,
}

/// Finds the workspace's built binaries next to the test executable.
pub fn bins() -> Bins {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf();
    let find = |name: &str| {
        let p = dir.join(name);
        assert!(
            p.exists(),
            "{} is missing: build the binaries first (cargo build --bins)",
            p.display()
        );
        p
    };
    Bins {
        spike: find("spike"),
        nexus: find("spike-nexus"),
        keeper: find("spike-keeper"),
        agent: find("spike-agent"),
        gateway: find("spike-gateway"),
    }
}

/// Lowest and one past the highest port handed out: below Linux's ephemeral range
/// (32768-60999), so an outgoing connection of another test can never take a port between
/// our check and the server's bind.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free loopback port, claimed across concurrent test processes.
///
/// Tests run in parallel processes (nextest), so a port is claimed by creating a marker file
/// (`create_new`) in a shared directory before it is checked; claims older than 15 minutes
/// are stale and reused.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let dir = std::env::temp_dir().join("spike-e2e-ports");
    std::fs::create_dir_all(&dir).expect("port claim dir");
    let mut rng = std::collections::hash_map::RandomState::new().build_hasher();
    rng.write_u32(std::process::id());
    let span = u64::from(PORTS.end - PORTS.start);
    for attempt in 0..10_000u64 {
        rng.write_u64(attempt);
        let port = PORTS.start + u16::try_from(rng.finish() % span).expect("in range");
        let claim = dir.join(port.to_string());
        if let Ok(m) = std::fs::metadata(&claim)
            && m.modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(900))
        {
            let _ = std::fs::remove_file(&claim);
        }
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&claim)
            .is_err()
        {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?}")
}

/// A test PKI: one CA for the trust domain, SVIDs written as PEM files.
pub struct Pki {
    /// The CA.
    pub ca: CertificateAuthority,
    /// The trust domain.
    pub td: TrustDomain,
    dir: PathBuf,
    issued: std::sync::atomic::AtomicUsize,
}

impl Pki {
    /// A new CA writing files under `dir`.
    pub fn new(dir: &Path) -> Self {
        let td = TrustDomain::new(TD).expect("trust domain");
        let ca = CertificateAuthority::new(&td).expect("CA");
        Self {
            ca,
            td,
            dir: dir.to_path_buf(),
            issued: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Issues an SVID for `path` (e.g. `/spike/nexus`) valid for an hour, written to files.
    pub fn svid(&self, path: &str) -> PemFiles {
        let id = self.td.id(path).expect("SPIFFE ID");
        let svid = self
            .ca
            .issue(&id, Duration::from_secs(3600))
            .expect("issue");
        // A directory per issuance, so concurrent callers never share files.
        let n = self
            .issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = path.trim_start_matches('/').replace('/', "_");
        let dir = self.dir.join(format!("{name}-{n}"));
        std::fs::create_dir_all(&dir).expect("svid dir");
        svid.write_pem_files(&dir).expect("write svid")
    }

    /// The SPIFFE ID for `path`.
    pub fn id(&self, path: &str) -> SpiffeId {
        self.td.id(path).expect("SPIFFE ID")
    }
}

/// Command-line flags selecting PEM-file identity.
pub fn identity_args(files: &PemFiles) -> Vec<String> {
    vec![
        "--trust-domain".into(),
        TD.into(),
        "--svid-cert".into(),
        files.cert.display().to_string(),
        "--svid-key".into(),
        files.key.display().to_string(),
        "--svid-bundle".into(),
        files.bundle.display().to_string(),
    ]
}

/// A child process killed (SIGKILL) on drop, with output in a log file.
pub struct Proc {
    child: Child,
    /// Its combined log file.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `bin args` with stdout+stderr appended to `log` and `RUST_LOG` as given.
    pub fn spawn(bin: &Path, args: &[String], log: PathBuf, rust_log: &str) -> Self {
        Self::spawn_with_env(bin, args, &[], log, rust_log)
    }

    /// Like [`Proc::spawn`], with extra environment variables.
    pub fn spawn_with_env(
        bin: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: PathBuf,
        rust_log: &str,
    ) -> Self {
        Self::spawn_full(bin, args, env, None, log, rust_log)
    }

    /// As [`Proc::spawn`], in working directory `cwd` (so relative paths in `args` land there).
    pub fn spawn_in(bin: &Path, args: &[String], cwd: &Path, log: PathBuf, rust_log: &str) -> Self {
        Self::spawn_full(bin, args, &[], Some(cwd), log, rust_log)
    }

    fn spawn_full(
        bin: &Path,
        args: &[String],
        env: &[(&str, &str)],
        cwd: Option<&Path>,
        log: PathBuf,
        rust_log: &str,
    ) -> Self {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(bin);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let child = cmd
            .args(args)
            .env("RUST_LOG", rust_log)
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log fd"))
            .stderr(f)
            .spawn()
            .expect("spawn");
        Self { child, log }
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `timeout`; returns true if it exited.
    pub fn terminate(mut self, timeout: Duration) -> bool {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Sends `sig` (e.g. SIGSTOP to make a process unreachable while keeping its memory).
    pub fn signal(&self, sig: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// True while running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and returns at once.
    pub fn sigterm(&self) {
        self.signal(rustix::process::Signal::TERM);
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP GET on loopback; returns (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Some((status, body))
}

/// Copies the directory `from` into `to` (created if missing), subdirectories included.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the directory") {
        let entry = entry.expect("read a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy a file");
        }
    }
}

/// Polls `f` every 100 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ports of one keeper.
#[derive(Debug, Clone, Copy)]
pub struct KeeperPorts {
    /// mTLS API.
    pub api: u16,
    /// Health.
    pub health: u16,
}

/// A test system: keepers and Nexus as real processes.
pub struct Cluster {
    /// Scratch directory (logs, SVIDs, data).
    pub dir: tempfile::TempDir,
    /// The binaries.
    pub bins: Bins,
    /// The PKI.
    pub pki: Pki,
    /// Keeper processes (None when stopped).
    pub keepers: Vec<Option<Proc>>,
    /// Keeper ports.
    pub keeper_ports: Vec<KeeperPorts>,
    /// Nexus process.
    pub nexus: Option<Proc>,
    /// Nexus mTLS port.
    pub nexus_port: u16,
    /// Nexus health port.
    pub nexus_health: u16,
    /// `RUST_LOG` for the servers.
    pub rust_log: String,
    /// Persistent data dir, when used.
    pub data_dir: Option<PathBuf>,
    /// Extra arguments for every Nexus start (after the harness's own, so they override
    /// them), e.g. `--config FILE` from [`Cluster::write_config`].
    pub nexus_extra_args: Vec<String>,
    /// Extra environment of later Nexus starts (e.g. a fault hook).
    pub nexus_env: Vec<(String, String)>,
    /// Extra arguments of later keeper starts.
    pub keeper_extra_args: Vec<String>,
    /// The SVID files the running Nexus reads (it re-reads them when they change).
    pub nexus_svid: Option<PemFiles>,
    /// Secret values the test wrote ([`Cluster::known_value`]): on drop, no file the
    /// processes wrote may hold one.
    known: std::sync::Mutex<Vec<String>>,
}

impl Cluster {
    /// Prepares (does not start) a cluster with `keepers` keepers and a redb data dir.
    pub fn new(keepers: usize) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("spike-e2e-")
            .tempdir()
            .expect("temp dir");
        let pki = Pki::new(&dir.path().join("pki"));
        let keeper_ports = (0..keepers)
            .map(|_| KeeperPorts {
                api: free_port(),
                health: free_port(),
            })
            .collect();
        let data_dir = Some(dir.path().join("data"));
        Self {
            bins: bins(),
            pki,
            keepers: (0..keepers).map(|_| None).collect(),
            keeper_ports,
            nexus: None,
            nexus_port: free_port(),
            nexus_health: free_port(),
            rust_log: "info".into(),
            data_dir,
            nexus_extra_args: Vec::new(),
            nexus_env: Vec::new(),
            keeper_extra_args: Vec::new(),
            nexus_svid: None,
            known: std::sync::Mutex::new(Vec::new()),
            dir,
        }
    }

    /// Writes `toml` to `<dir>/<name>` and returns its path, for `--config`.
    pub fn write_config(&self, name: &str, toml: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, toml).expect("write config");
        path
    }

    /// Starts Nexus with `--config` `toml` (written to `<dir>/nexus.toml`); later starts use it
    /// too.
    pub fn start_nexus_with_config(&mut self, toml: &str) {
        let path = self.write_config("nexus.toml", toml);
        self.nexus_extra_args
            .extend(["--config".into(), path.display().to_string()]);
        self.start_nexus();
    }

    /// The Nexus SPIFFE ID.
    pub fn nexus_id(&self) -> SpiffeId {
        self.pki.id("/spike/nexus")
    }

    /// Starts keeper `i` (1-based).
    pub fn start_keeper(&mut self, i: usize) {
        let svid = self.pki.svid(&format!("/spike/keeper/{i}"));
        let ports = self.keeper_ports[i - 1];
        let mut args = identity_args(&svid);
        args.extend([
            "--listen".into(),
            format!("127.0.0.1:{}", ports.api),
            "--health-listen".into(),
            format!("127.0.0.1:{}", ports.health),
        ]);
        args.extend(self.keeper_extra_args.iter().cloned());
        let log = self.dir.path().join(format!("keeper-{i}.log"));
        self.keepers[i - 1] = Some(Proc::spawn(&self.bins.keeper, &args, log, &self.rust_log));
        let health = ports.health;
        assert!(
            wait_until(Duration::from_secs(20), || http_get(health, "/healthz")
                .is_some()),
            "keeper {i} did not start"
        );
    }

    /// SIGKILLs keeper `i`.
    pub fn kill_keeper(&mut self, i: usize) {
        if let Some(p) = self.keepers[i - 1].take() {
            p.kill9();
        }
    }

    /// Freezes keeper `i` (SIGSTOP): unreachable, share kept in memory.
    pub fn stop_keeper(&self, i: usize) {
        if let Some(p) = &self.keepers[i - 1] {
            p.signal(rustix::process::Signal::STOP);
        }
    }

    /// Resumes keeper `i` (SIGCONT).
    pub fn continue_keeper(&self, i: usize) {
        if let Some(p) = &self.keepers[i - 1] {
            p.signal(rustix::process::Signal::CONT);
        }
    }

    /// Starts Nexus and waits for its health port.
    pub fn start_nexus(&mut self) {
        self.spawn_nexus();
        let health = self.nexus_health;
        assert!(
            wait_until(Duration::from_secs(20), || http_get(health, "/healthz")
                .is_some()),
            "nexus did not start; see {}",
            self.dir.path().join("nexus.log").display()
        );
    }

    /// Spawns Nexus without waiting for it (for tests of a Nexus that must refuse to start).
    pub fn spawn_nexus(&mut self) {
        let svid = self.pki.svid("/spike/nexus");
        let mut args = identity_args(&svid);
        args.extend([
            "--listen".into(),
            format!("127.0.0.1:{}", self.nexus_port),
            "--health-listen".into(),
            format!("127.0.0.1:{}", self.nexus_health),
            "--keeper-interval".into(),
            "300ms".into(),
            "--audit-log".into(),
            self.dir.path().join("audit.log").display().to_string(),
        ]);
        for p in &self.keeper_ports {
            args.extend(["--keeper".into(), format!("127.0.0.1:{}", p.api)]);
        }
        if let Some(d) = &self.data_dir {
            args.extend(["--data-dir".into(), d.display().to_string()]);
        }
        args.extend(self.nexus_extra_args.iter().cloned());
        self.nexus_svid = Some(svid);
        let log = self.dir.path().join("nexus.log");
        let env: Vec<(&str, &str)> = self
            .nexus_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.nexus = Some(Proc::spawn_with_env(
            &self.bins.nexus,
            &args,
            &env,
            log,
            &self.rust_log,
        ));
    }

    /// Rotates the running Nexus's SVID: a new key and certificate for the same ID, written
    /// over the files it reads (each file replaced atomically, one after another, as a file
    /// rotator would). Returns the new leaf certificate (DER).
    pub fn rotate_nexus_svid(&self) -> Vec<u8> {
        let files = self.nexus_svid.as_ref().expect("Nexus was started");
        let dir = files.cert.parent().expect("SVID directory");
        let svid = self
            .pki
            .ca
            .issue(&self.nexus_id(), Duration::from_secs(3600))
            .expect("issue");
        svid.write_pem_files(dir).expect("write SVID");
        svid.leaf_der().to_vec()
    }

    /// SIGKILLs Nexus.
    pub fn kill_nexus(&mut self) {
        if let Some(p) = self.nexus.take() {
            p.kill9();
        }
    }

    /// Starts Nexus on a data directory changed behind its back and waits (up to 20 s) until it
    /// stays sealed with a reason containing `what` (`STORE ROLLED BACK`, `STORE EDITED`);
    /// returns the reason. Nexus keeps running.
    pub fn start_nexus_expecting_refusal(&mut self, what: &str) -> String {
        self.start_nexus();
        let mut reason = String::new();
        let refused = wait_until(Duration::from_secs(20), || match self.readyz() {
            Some((503, body)) if body.contains(what) => {
                reason = body;
                true
            }
            _ => false,
        });
        assert!(refused, "expected {what:?}, got {:?}", self.readyz());
        reason
    }

    /// Kills Nexus and starts it again accepting the store generation a freshness `refusal`
    /// names (`--accept-store-generation`, replacing an earlier one), as the rollback runbook
    /// says. Does not wait for it to open.
    pub fn restart_nexus_accepting(&mut self, refusal: &str) {
        let generation: String = refusal
            .split("accept_store_generation = ")
            .nth(1)
            .unwrap_or_else(|| panic!("no generation to accept in {refusal}"))
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        self.kill_nexus();
        self.forget_accepted_generation();
        self.nexus_extra_args
            .extend(["--accept-store-generation".into(), generation]);
        self.start_nexus();
    }

    /// Drops an `--accept-store-generation` given before, for the next start.
    pub fn forget_accepted_generation(&mut self) {
        if let Some(at) = self
            .nexus_extra_args
            .iter()
            .position(|a| a == "--accept-store-generation")
        {
            self.nexus_extra_args.drain(at..at + 2);
        }
    }

    /// Starts every keeper and Nexus, and bootstraps (threshold `t`).
    pub fn start_all(&mut self, threshold: u8) {
        for i in 1..=self.keepers.len() {
            self.start_keeper(i);
        }
        self.start_nexus();
        let out = self.bootstrap(threshold);
        assert!(out.status.success(), "bootstrap failed: {}", text(&out));
        assert!(self.wait_ready(Duration::from_secs(20)), "nexus not ready");
    }

    /// Runs `spike bootstrap` as the bootstrap identity.
    pub fn bootstrap(&self, threshold: u8) -> Output {
        let svid = self.pki.svid("/spike/bootstrap");
        let shares = self.keepers.len().to_string();
        self.spike(
            &svid,
            &[
                "bootstrap",
                "--shares",
                &shares,
                "--threshold",
                &threshold.to_string(),
                "--wait",
                "20s",
            ],
        )
    }

    /// `/readyz` of Nexus.
    pub fn readyz(&self) -> Option<(u16, String)> {
        http_get(self.nexus_health, "/readyz")
    }

    /// Waits for Nexus to be unsealed.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        wait_until(timeout, || matches!(self.readyz(), Some((200, _))))
    }

    /// The SVID source of a fresh SVID for `who` (a path in the trust domain), for clients
    /// the tests drive directly.
    pub async fn svid_source(
        &self,
        who: &str,
        timeout: Duration,
    ) -> std::sync::Arc<dyn spike_runtime::svid::SvidSource> {
        let files = self.pki.svid(who);
        let td = TrustDomain::new(TD).expect("test trust domain");
        spike_runtime::svid::SourceConfig::PemFiles(spike_runtime::svid::PemPaths {
            cert: files.cert,
            key: files.key,
            bundle: files.bundle,
        })
        .open(&td, timeout, spike_runtime::svid::Patience::Service)
        .await
        .expect("SVID source")
    }

    /// Runs the `spike` CLI with `identity`'s SVID files.
    pub fn spike(&self, identity: &PemFiles, args: &[&str]) -> Output {
        self.spike_stdin(identity, args, None)
    }

    /// `spike policy create NAME --spiffe-id-pattern IDS --path-pattern PATHS --permissions
    /// PERMS` as `identity`.
    pub fn policy_create(
        &self,
        identity: &PemFiles,
        name: &str,
        ids: &str,
        paths: &str,
        perms: &str,
    ) -> Output {
        self.spike(
            identity,
            &[
                "policy",
                "create",
                name,
                "--spiffe-id-pattern",
                ids,
                "--path-pattern",
                paths,
                "--permissions",
                perms,
            ],
        )
    }

    /// Runs the `spike` CLI with stdin.
    pub fn spike_stdin(&self, identity: &PemFiles, args: &[&str], stdin: Option<&str>) -> Output {
        for v in values_put(args) {
            self.known_value(v);
        }
        let mut cmd = Command::new(&self.bins.spike);
        cmd.args(args)
            .args(identity_args(identity))
            .args(["--nexus", &format!("127.0.0.1:{}", self.nexus_port)])
            .args(["--timeout", "10s"])
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .env("RUST_LOG", &self.rust_log)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn spike");
        if let (Some(s), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let _ = pipe.write_all(s.as_bytes());
        }
        let out = child.wait_with_output().expect("spike output");
        // Keep CLI output with the server logs, so "no secret in any log" covers it too.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("cli-stderr.log"))
        {
            let _ = f.write_all(&out.stderr);
        }
        out
    }

    /// Registers `value` as a secret the test wrote. When the cluster is dropped, every file
    /// under its directory that the processes wrote (logs, CLI stderr, the data directory, the
    /// audit log) and Nexus's metrics, if it still runs, are scanned for it; finding it fails
    /// the test. Values shorter than 8 bytes are refused: they could occur by chance.
    pub fn known_value(&self, value: &str) {
        assert!(
            value.len() >= 8,
            "a known value needs 8 bytes or more: {value:?}"
        );
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(value.to_owned());
    }

    /// Where a known value shows up: `(file, value)` pairs (the metrics page as `metrics`).
    pub fn leaked_values(&self) -> Vec<(String, String)> {
        let known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if known.is_empty() {
            return Vec::new();
        }
        let matcher = aho_corasick::AhoCorasick::new(&known).expect("known values");
        let mut found = Vec::new();
        let mut scan = |name: String, bytes: &[u8]| {
            for m in matcher.find_overlapping_iter(bytes) {
                let pair = (name.clone(), known[m.pattern().as_usize()].clone());
                if !found.contains(&pair) {
                    found.push(pair);
                }
            }
        };
        if self.nexus.is_some()
            && let Some((_, body)) = http_get(self.nexus_health, "/metrics")
        {
            scan("metrics".into(), body.as_bytes());
        }
        let pki = self.dir.path().join("pki");
        let mut dirs = vec![self.dir.path().to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = e.path();
                if path == pki {
                    continue;
                }
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    scan(path.display().to_string(), &bytes);
                }
            }
        }
        found
    }

    /// Every log file of this cluster, concatenated.
    pub fn all_logs(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.path()) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        s
    }
}

/// The values a `spike secret put` command line writes (`KEY=VALUE` arguments after the path,
/// and `--value V`), 8 bytes or longer: shorter ones could occur in a file by chance.
fn values_put<'a>(args: &[&'a str]) -> Vec<&'a str> {
    if args.len() < 3 || args[..2] != ["secret", "put"] {
        return Vec::new();
    }
    let mut values = Vec::new();
    let mut rest = args[3..].iter();
    while let Some(a) = rest.next() {
        if *a == "--value" {
            values.extend(rest.next().copied());
        } else if a.starts_with("--") {
            // Another flag; a following value of its own is not a secret value.
            if !a.contains('=') {
                rest.next();
            }
        } else if let Some((_, v)) = a.split_once('=') {
            values.push(v);
        }
    }
    values.retain(|v| v.len() >= 8);
    values
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Not while a test is already failing: its own message matters more.
        if std::thread::panicking() {
            return;
        }
        let leaked = self.leaked_values();
        assert!(
            leaked.is_empty(),
            "secret values found in what the processes wrote: {leaked:?}"
        );
    }
}

/// stdout + stderr of a CLI run, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::values_put;

    #[test]
    fn values_put_finds_the_values_of_a_secret_put_and_nothing_else() {
        assert_eq!(
            values_put(&[
                "secret",
                "put",
                "app/db",
                "user=alice-the-admin",
                "pass=short",
                "--ttl",
                "verylongttlvalue",
                "--cas=3",
                "token=tok-0123456789",
            ]),
            ["alice-the-admin", "tok-0123456789"]
        );
        assert_eq!(
            values_put(&[
                "secret",
                "put",
                "--name",
                "groq-api-key",
                "--value",
                "gsk_real_credential_here",
                "--allowed-destinations",
                "api.groq.com=x-looks-like-a-pair",
            ]),
            ["gsk_real_credential_here"]
        );
        assert!(values_put(&["secret", "get", "app/db", "user=alice-the-admin"]).is_empty());
    }
}
