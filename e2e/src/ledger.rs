//! A ledger of acknowledged writes, for fault tests.
//!
//! A [`Writer`] puts (with and without compare-and-set), deletes and batch-writes secrets
//! through one pooled [`MtlsClient`] and records what Nexus acknowledged. Each writer owns its
//! paths and sends one request at a time, so the state each path must be in is known exactly:
//! what its last acknowledged operation left, or, for the one operation whose answer was lost
//! when Nexus died, either the state before it or the state it would have made.
//! [`Writer::check`] reads every path back after a restart and fails on anything else: an
//! acknowledged write missing, a value or a version no operation made, a refused write that
//! took effect, a newest version neither live nor deleted.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::json;
use spike_core::api::{
    BatchItemStatus, BatchPutResponse, GetSecretResponse, PutSecretResponse, SecretMetadata,
    VersionsResponse,
};
use spike_core::error::{ErrorBody, ErrorCode};
use spike_runtime::net::{MtlsClient, Response};

/// The key every ledger value is stored under.
const KEY: &str = "v";

/// What a path's newest version is, as far as the ledger knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Never written.
    Absent,
    /// The newest version is live and holds `value`.
    Live {
        /// Its version number.
        version: u64,
        /// Its value (under the key `v`).
        value: String,
    },
    /// The newest version is soft-deleted.
    Deleted {
        /// Its version number.
        version: u64,
    },
}

impl State {
    /// The newest version number (0 when absent).
    fn latest(&self) -> u64 {
        match self {
            Self::Absent => 0,
            Self::Live { version, .. } | Self::Deleted { version } => *version,
        }
    }

    /// The version a compare-and-set put must name: the live one, else 0.
    fn cas(&self) -> u64 {
        match self {
            Self::Live { version, .. } => *version,
            Self::Absent | Self::Deleted { .. } => 0,
        }
    }

    /// The state a put of `value` makes.
    fn put(&self, value: &str) -> Self {
        Self::Live {
            version: self.latest() + 1,
            value: value.to_owned(),
        }
    }
}

/// A broken promise: what the ledger expected and what Nexus did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

/// Why [`Writer::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The stop flag was raised, or the operation budget spent.
    Stopped,
    /// An operation's answer was lost (the connection failed: Nexus died); it may or may not
    /// have taken effect.
    Lost(String),
    /// Nexus refused an operation with a server error (503 while sealed, say); nothing was
    /// written.
    Refused(StatusCode, String),
}

/// Counts of what one writer's operations came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Operations Nexus acknowledged.
    pub acked: u64,
    /// Operations whose answer was lost.
    pub lost: u64,
    /// Operations Nexus refused with a server error.
    pub refused: u64,
    /// Compare-and-set puts answered `409` that may be the retry of one that took effect
    /// (a `PUT` is re-sent once when its connection breaks before an answer).
    pub ambiguous_conflicts: u64,
    /// Paths read back and found as the ledger allows.
    pub checked: u64,
}

/// One operation, with the state it makes on each path it writes.
#[derive(Debug, Clone)]
enum Op {
    Put {
        path: usize,
        cas: bool,
        value: String,
    },
    Delete {
        path: usize,
    },
    Batch {
        /// (path, with compare-and-set, value)
        items: Vec<(usize, bool, String)>,
    },
}

/// A small deterministic generator (splitmix64): the seed is printed, so a failing sequence
/// of operations can be replayed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A seed from `SPIKE_FAULT_SEED`, else from the clock.
    pub fn seed_from_env() -> u64 {
        std::env::var("SPIKE_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A writer: its paths, what Nexus acknowledged for each, and its client.
pub struct Writer {
    name: String,
    client: MtlsClient,
    paths: Vec<String>,
    acked: Vec<State>,
    /// The operation whose answer was lost, if any: each path it writes may be in its old
    /// state or the one listed here.
    pending: Vec<(usize, State)>,
    rng: Rng,
    seq: u64,
    tally: Tally,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("name", &self.name)
            .field("tally", &self.tally)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// A writer named `name` owning `count` paths under `prefix`, all absent so far.
    pub fn new(name: &str, prefix: &str, count: usize, client: MtlsClient, seed: u64) -> Self {
        Self {
            name: name.to_owned(),
            client,
            paths: (0..count).map(|i| format!("{prefix}/p{i}")).collect(),
            acked: vec![State::Absent; count],
            pending: Vec::new(),
            rng: Rng::new(seed),
            seq: 0,
            tally: Tally::default(),
        }
    }

    /// What this writer's operations came to so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Every value this writer has sent, so far (for scans of what the processes wrote).
    pub fn values_sent(&self) -> impl Iterator<Item = String> + '_ {
        (1..=self.seq).map(|n| self.value(n))
    }

    fn value(&self, n: u64) -> String {
        format!("ledger-{}-{n}", self.name)
    }

    /// Sends operations one after another until `stop` is raised, `budget` operations were
    /// sent, or one fails. An operation Nexus answered in a way no operation of a sole writer
    /// may be answered is a [`Violation`].
    pub async fn run(&mut self, stop: &AtomicBool, budget: u64) -> Result<RunEnd, Violation> {
        if !self.pending.is_empty() {
            return Err(Violation(format!(
                "{}: run before the lost operation was checked",
                self.name
            )));
        }
        for _ in 0..budget {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let op = self.next_op();
            match self.apply(&op).await? {
                None => self.tally.acked += 1,
                Some(end) => return Ok(end),
            }
        }
        Ok(RunEnd::Stopped)
    }

    /// Reads every path back and checks it against the ledger: the acknowledged state, or for
    /// a path of the lost operation, that or the state it would have made. The state found
    /// becomes the acknowledged one.
    pub async fn check(&mut self) -> Result<(), Violation> {
        let pending = std::mem::take(&mut self.pending);
        for i in 0..self.paths.len() {
            let found = self.observe(i).await?;
            let after = pending.iter().find(|(p, _)| *p == i).map(|(_, s)| s);
            if found != self.acked[i] && Some(&found) != after {
                return Err(Violation(format!(
                    "{}: {} is {found:?}; acknowledged {:?}{}",
                    self.name,
                    self.paths[i],
                    self.acked[i],
                    after.map_or(String::new(), |s| format!(
                        ", or {s:?} if the lost operation took effect"
                    ))
                )));
            }
            self.acked[i] = found;
            self.tally.checked += 1;
        }
        Ok(())
    }

    fn next_op(&mut self) -> Op {
        let n = self.paths.len() as u64;
        let path = self.rng.below(n) as usize;
        let roll = self.rng.below(100);
        if roll < 15 && matches!(self.acked[path], State::Live { .. }) {
            return Op::Delete { path };
        }
        if roll < 35 {
            let take = 2 + self.rng.below(3.min(n - 1)) as usize;
            let start = self.rng.below(n) as usize;
            let items = (0..take.min(self.paths.len()))
                .map(|k| {
                    let cas = self.rng.below(2) == 0;
                    ((start + k) % self.paths.len(), cas, self.fresh_value())
                })
                .collect();
            return Op::Batch { items };
        }
        Op::Put {
            path,
            cas: roll < 65,
            value: self.fresh_value(),
        }
    }

    fn fresh_value(&mut self) -> String {
        self.seq += 1;
        self.value(self.seq)
    }

    /// Sends `op`; `None` when acknowledged (and recorded), else why the run ends.
    async fn apply(&mut self, op: &Op) -> Result<Option<RunEnd>, Violation> {
        let (method, uri, body, after) = match op {
            Op::Put { path, cas, value } => {
                let mut body = json!({ "data": { KEY: value } });
                if *cas {
                    body["cas"] = self.acked[*path].cas().into();
                }
                let uri = format!("/v1/secrets/data/{}", self.paths[*path]);
                let after = vec![(*path, self.acked[*path].put(value))];
                (Method::PUT, uri, body, after)
            }
            Op::Delete { path } => {
                let uri = format!("/v1/secrets/delete/{}", self.paths[*path]);
                let version = self.acked[*path].latest();
                (
                    Method::POST,
                    uri,
                    json!({ "versions": [] }),
                    vec![(*path, State::Deleted { version })],
                )
            }
            Op::Batch { items } => {
                let body: Vec<_> = items
                    .iter()
                    .map(|(p, cas, value)| {
                        let mut item = json!({ "path": self.paths[*p], "data": { KEY: value } });
                        if *cas {
                            item["cas"] = self.acked[*p].cas().into();
                        }
                        item
                    })
                    .collect();
                let after = items
                    .iter()
                    .map(|(p, _, value)| (*p, self.acked[*p].put(value)))
                    .collect();
                (
                    Method::POST,
                    "/v1/secrets/batch".to_owned(),
                    json!({ "items": body }),
                    after,
                )
            }
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| Violation(e.to_string()))?;
        let response = match self.client.send(method.clone(), &uri, Some(bytes)).await {
            Ok(r) => r,
            Err(e) => {
                self.pending = after;
                self.tally.lost += 1;
                return Ok(Some(RunEnd::Lost(e.to_string())));
            }
        };
        if response.status.is_server_error() {
            // Nothing was written: the ledger keeps the old states, which `check` holds it to.
            self.tally.refused += 1;
            let code = error_code(&response).map_or("?".into(), |c| format!("{c:?}"));
            return Ok(Some(RunEnd::Refused(response.status, code)));
        }
        let cas_put = matches!(op, Op::Put { cas: true, .. });
        if cas_put && response.status == StatusCode::CONFLICT {
            self.pending = after;
            self.tally.ambiguous_conflicts += 1;
            // Settle it before the next operation builds on it.
            self.check().await?;
            return Ok(None);
        }
        let unexpected = |what: &str| {
            Violation(format!(
                "{}: {method} {uri} answered {} ({what}): {}",
                self.name,
                response.status,
                String::from_utf8_lossy(&response.body)
            ))
        };
        match op {
            Op::Put { .. } => {
                let r: PutSecretResponse = parse(&response).ok_or_else(|| unexpected("a put"))?;
                let want = after[0].1.latest();
                if r.version != Some(want) {
                    return Err(unexpected(&format!("expected version {want}")));
                }
            }
            Op::Delete { path } => {
                let r: VersionsResponse = parse(&response).ok_or_else(|| unexpected("a delete"))?;
                let latest = self.acked[*path].latest();
                if r.changed != [latest] || r.current_version != Some(0) {
                    return Err(unexpected(&format!("expected version {latest} deleted")));
                }
            }
            Op::Batch { .. } => {
                let r: BatchPutResponse = parse(&response).ok_or_else(|| unexpected("a batch"))?;
                let fine = r.results.len() == after.len()
                    && r.results.iter().zip(&after).all(|(got, (_, s))| {
                        matches!(
                            got.status,
                            BatchItemStatus::Created | BatchItemStatus::Updated
                        ) && got.version == Some(s.latest())
                    });
                if !fine {
                    return Err(unexpected("expected every item written, in order"));
                }
            }
        }
        for (p, s) in after {
            self.acked[p] = s;
        }
        Ok(None)
    }

    /// The state path `i` is in, read through metadata and the newest version.
    async fn observe(&self, i: usize) -> Result<State, Violation> {
        let path = &self.paths[i];
        let meta = self.get(&format!("/v1/secrets/metadata/{path}")).await?;
        if meta.status == StatusCode::NOT_FOUND && error_code(&meta) == Some(ErrorCode::NotFound) {
            return Ok(State::Absent);
        }
        let bad = |r: &Response, what: &str| {
            Violation(format!(
                "{}: {path}: {what}: {} {}",
                self.name,
                r.status,
                String::from_utf8_lossy(&r.body)
            ))
        };
        let m: SecretMetadata = parse(&meta).ok_or_else(|| bad(&meta, "metadata"))?;
        let data = self.get(&format!("/v1/secrets/data/{path}")).await?;
        match m.current_version {
            0 if data.status == StatusCode::NOT_FOUND
                && error_code(&data) == Some(ErrorCode::Deleted) =>
            {
                Ok(State::Deleted {
                    version: m.latest_version,
                })
            }
            v if v == m.latest_version && v > 0 => {
                let got: GetSecretResponse =
                    parse(&data).ok_or_else(|| bad(&data, "the newest version"))?;
                let value = got
                    .data
                    .get(KEY)
                    .map(|s| s.expose_secret().to_owned())
                    .ok_or_else(|| bad(&data, "no value under `v`"))?;
                if got.version != v || got.data.len() != 1 {
                    return Err(bad(&data, "not the newest version, or not only `v`"));
                }
                Ok(State::Live { version: v, value })
            }
            _ => Err(bad(
                &data,
                &format!(
                    "current version {} of latest {}: the newest is neither live nor deleted",
                    m.current_version, m.latest_version
                ),
            )),
        }
    }

    async fn get(&self, uri: &str) -> Result<Response, Violation> {
        self.client
            .send(Method::GET, uri, None)
            .await
            .map_err(|e| Violation(format!("{}: GET {uri}: {e}", self.name)))
    }
}

fn parse<T: DeserializeOwned>(r: &Response) -> Option<T> {
    if !r.status.is_success() {
        return None;
    }
    serde_json::from_slice(&r.body).ok()
}

fn error_code(r: &Response) -> Option<ErrorCode> {
    serde_json::from_slice::<ErrorBody>(&r.body)
        .ok()
        .map(|b| b.error.code)
}
