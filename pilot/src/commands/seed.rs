//! `spike seed` and `spike policy apply`: secrets and policies from a YAML file, idempotently.
//!
//! The file is read and checked whole before anything is sent: every path, policy and value
//! source must be valid, or nothing is written. Policies go first (one request each; Nexus
//! answers `unchanged` for an identical one), then secrets in batches through
//! `POST /v1/secrets/batch`, several in flight. Nexus compares each secret with its current
//! version, so seeding the same file twice writes nothing the second time, and `--dry-run`
//! asks Nexus to compare without writing, so no value is ever printed or sent back.
//!
//! The schema is in docs/seeding.md.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use spike_core::api::{
    BatchItemResult, BatchItemStatus, BatchPutItem, BatchPutRequest, BatchPutResponse,
    ListPoliciesResponse, PutPolicyRequest, PutPolicyResponse,
};
use spike_core::error::{ApiError, ErrorCode};
use spike_core::path::SecretPath;
use spike_core::policy::{Permission, Policy};
use spike_core::secret::{SecretMap, SecretString};
use zeroize::Zeroizing;

use crate::cli::{Output, SeedArgs};
use crate::client::{CliError, CliResult, Nexus};
use crate::output::print_structured;

/// Largest seed file read, bytes (1 GiB: about ten million small secrets).
const MAX_FILE_BYTES: u64 = 1 << 30;

/// Largest request body the client builds (estimated); Nexus accepts 4 MiB by default, and a
/// `413` makes the client split the batch and retry anyway.
const MAX_REQUEST_BYTES: usize = 3 << 20;

/// The seed file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedFile {
    /// Schema version; only 1 exists.
    #[serde(default)]
    pub version: Option<u32>,
    /// Policies to create or update.
    #[serde(default)]
    pub policies: Vec<PolicySpec>,
    /// Secrets to create or update.
    #[serde(default)]
    pub secrets: Vec<SecretSpec>,
}

/// A policy, as in the API (`PUT /v1/policies/{name}`) plus its name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// The policy's name.
    pub name: String,
    /// Which callers it applies to.
    pub spiffe_id_pattern: String,
    /// Which paths it covers.
    pub path_pattern: String,
    /// What it allows: read, write, list, delete, token, resolve, cipher, super.
    pub permissions: Vec<String>,
}

/// A secret: its path and the key/value pairs of its current version.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSpec {
    /// The secret's path.
    pub path: String,
    /// Keys and their values (literal, or `valueFrom`).
    pub data: BTreeMap<String, SeedValue>,
}

/// One value of a seed file: a literal string, or where to read it from.
pub enum SeedValue {
    /// The value itself, in the file.
    Literal(SecretString),
    /// `valueFrom: {env: NAME}`: an environment variable of the `spike` process.
    Env(String),
    /// `valueFrom: {file: PATH}`: a file's whole content (UTF-8), relative to the seed file.
    File(PathBuf),
}

impl fmt::Debug for SeedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(_) => f.write_str("Literal([redacted])"),
            Self::Env(n) => write!(f, "Env({n})"),
            Self::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

/// Marks our own deserialization messages, which never quote a value and so may be shown.
const OWN: &str = "spike: ";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ValueFromWrapper {
    value_from: ValueFrom,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum ValueFrom {
    Env(String),
    File(PathBuf),
}

impl<'de> Deserialize<'de> for SeedValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn not_string<E: de::Error>() -> E {
            E::custom(format!(
                "{OWN}a value must be a string or `valueFrom: {{env: NAME}}` / `{{file: PATH}}`; \
                 quote numbers, booleans and empty values (\"5432\", \"true\", \"\") so they are kept exactly"
            ))
        }
        impl<'de> Visitor<'de> for V {
            type Value = SeedValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or valueFrom with env or file")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SeedValue, E> {
                Ok(SeedValue::Literal(SecretString::new(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<SeedValue, E> {
                Ok(SeedValue::Literal(SecretString::new(s)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<SeedValue, E> {
                Err(not_string())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<SeedValue, E> {
                Err(not_string())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<SeedValue, E> {
                Err(not_string())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<SeedValue, E> {
                Err(not_string())
            }
            fn visit_unit<E: de::Error>(self) -> Result<SeedValue, E> {
                Err(not_string())
            }
            fn visit_none<E: de::Error>(self) -> Result<SeedValue, E> {
                Err(not_string())
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<SeedValue, A::Error> {
                Err(not_string())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SeedValue, A::Error> {
                let w = ValueFromWrapper::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map_err(|_| {
                        de::Error::custom(format!(
                            "{OWN}a value given as a map must be exactly `valueFrom: {{env: NAME}}` or `valueFrom: {{file: PATH}}`"
                        ))
                    })?;
                Ok(match w.value_from {
                    ValueFrom::Env(n) => SeedValue::Env(n),
                    ValueFrom::File(p) => SeedValue::File(p),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a seed file. Errors give the line and column and never quote a value from the file.
pub fn parse_seed(text: &str, origin: &str) -> CliResult<SeedFile> {
    let n = text.len();
    // Budgets scale with the file (which the operator chose to run), so a big seed file parses;
    // alias expansion stays bounded by the library's defaults.
    #[allow(deprecated)]
    let options = serde_saphyr::options! {
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(n.saturating_add(1)),
            max_events: n.max(1_000_000),
            max_nodes: n.max(250_000),
            max_total_scalar_bytes: n.max(1 << 20),
        },
    };
    let file: SeedFile = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| CliError::Usage(format!("{origin}: {}", safe_yaml_error(&e))))?;
    if let Some(v) = file.version
        && v != 1
    {
        return Err(CliError::Usage(format!(
            "{origin}: version {v} is not supported; this spike reads version 1"
        )));
    }
    Ok(file)
}

/// Describes a YAML error without quoting the input (which may hold secret values): the
/// position, and the message only when it cannot contain a value.
fn safe_yaml_error(e: &serde_saphyr::Error) -> String {
    let at = e
        .location()
        .map(|l| format!("line {} column {}: ", l.line(), l.column()))
        .unwrap_or_default();
    let full = e.to_string();
    let first = full.lines().next().unwrap_or_default();
    // "error: line 3 column 3: <message>"
    let msg = match first.find(": ") {
        Some(_) if first.starts_with("error: line ") => first
            .splitn(3, ": ")
            .nth(2)
            .unwrap_or(first)
            .trim_start_matches("error: "),
        _ => first.trim_start_matches("error: "),
    };
    if let Some(own) = msg.find(OWN) {
        return format!("{at}{}", &msg[own + OWN.len()..]);
    }
    for marker in [
        "unknown field",
        "missing field",
        "duplicate field",
        "duplicate key",
    ] {
        if let Some(rest) = msg.strip_prefix(marker) {
            let name = rest.split('`').nth(1).unwrap_or("?");
            let hint = if marker == "unknown field" {
                " (fields are camelCase; see docs/seeding.md)"
            } else {
                ""
            };
            return format!("{at}{marker} `{name}`{hint}");
        }
    }
    if !msg.is_empty() && !msg.contains(['`', '"', '\'']) {
        // Structural parser messages ("did not find expected key") quote nothing.
        return format!("{at}{msg}");
    }
    format!("{at}a value has the wrong type or the YAML is malformed (see docs/seeding.md)")
}

/// Reads the seed file (`-` = stdin) into a buffer wiped on drop.
pub fn read_input(path: &Path) -> CliResult<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    let read = if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
    };
    read.map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(CliError::Usage(format!(
            "{} is larger than {MAX_FILE_BYTES} bytes; split it into several files",
            path.display()
        )));
    }
    Ok(text)
}

/// Checks the policies of a file as Nexus will, so a bad one stops the run before any write.
pub fn check_policies(specs: &[PolicySpec], origin: &str) -> CliResult<Vec<Policy>> {
    let mut seen = HashMap::new();
    let mut out = Vec::with_capacity(specs.len());
    for (i, p) in specs.iter().enumerate() {
        if let Some(first) = seen.insert(p.name.as_str(), i) {
            return Err(CliError::Usage(format!(
                "{origin}: policy `{}` is defined twice (policies {} and {})",
                p.name,
                first + 1,
                i + 1
            )));
        }
        let perms = p
            .permissions
            .iter()
            .map(|s| {
                s.trim().parse::<Permission>().map_err(|_| {
                    CliError::Usage(format!(
                        "{origin}: policy `{}`: unknown permission `{s}`; use read, write, list, delete, token, resolve, cipher or super",
                        p.name
                    ))
                })
            })
            .collect::<CliResult<Vec<_>>>()?;
        let policy = Policy::parse(&p.name, &p.spiffe_id_pattern, &p.path_pattern, perms)
            .map_err(|e| CliError::Usage(format!("{origin}: policy `{}`: {e}", p.name)))?;
        out.push(policy);
    }
    Ok(out)
}

/// Resolves every secret of a file into batch items: paths checked, duplicates refused, each
/// `valueFrom` read (`env` from `env`, `file` relative to `base`). Any problem stops the run.
pub fn resolve_secrets(
    specs: Vec<SecretSpec>,
    base: &Path,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> CliResult<Vec<BatchPutItem>> {
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(specs.len());
    let mut out = Vec::with_capacity(specs.len());
    for (i, s) in specs.into_iter().enumerate() {
        let path = SecretPath::parse(&s.path).map_err(|e| {
            CliError::Usage(format!(
                "{origin}: secret {}: path `{}`: {e}",
                i + 1,
                s.path
            ))
        })?;
        if let Some(first) = seen.insert(path.as_str().to_owned(), i) {
            return Err(CliError::Usage(format!(
                "{origin}: secret `{}` is defined twice (secrets {} and {})",
                path.as_str(),
                first + 1,
                i + 1
            )));
        }
        if s.data.is_empty() {
            return Err(CliError::Usage(format!(
                "{origin}: secret `{}` has no data; give at least one key",
                path.as_str()
            )));
        }
        let mut data = SecretMap::new();
        for (k, v) in s.data {
            let where_ = || format!("{origin}: secret `{}` key `{k}`", path.as_str());
            if k.is_empty() {
                return Err(CliError::Usage(format!(
                    "{origin}: secret `{}` has an empty key name",
                    path.as_str()
                )));
            }
            let value = match v {
                SeedValue::Literal(v) => v,
                SeedValue::Env(name) => SecretString::new(env(&name).ok_or_else(|| {
                    CliError::Usage(format!(
                        "{}: environment variable {name} is not set (or not UTF-8)",
                        where_()
                    ))
                })?),
                SeedValue::File(p) => {
                    let full = if p.is_absolute() { p } else { base.join(p) };
                    let bytes = Zeroizing::new(std::fs::read(&full).map_err(|e| {
                        CliError::Usage(format!(
                            "{}: cannot read {}: {e}",
                            where_(),
                            full.display()
                        ))
                    })?);
                    let text = std::str::from_utf8(&bytes).map_err(|_| {
                        CliError::Usage(format!(
                            "{}: {} is not UTF-8 text (values are strings; base64-encode binary data)",
                            where_(),
                            full.display()
                        ))
                    })?;
                    SecretString::new(text.to_owned())
                }
            };
            data.insert(k, value);
        }
        out.push(BatchPutItem {
            path: path.as_str().to_owned(),
            data,
            cas: None,
        });
    }
    Ok(out)
}

/// The outcome of one policy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyResult {
    /// The policy's name.
    pub name: String,
    /// What happened (or would).
    pub status: BatchItemStatus,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// Creates or updates `policies` (never deletes). With `dry_run`, compares them with the stored
/// ones (policies are not secret, so the comparison happens here, with Nexus's own rules).
pub async fn apply_policies(
    nexus: &Nexus,
    specs: &[PolicySpec],
    parsed: &[Policy],
    dry_run: bool,
) -> CliResult<Vec<PolicyResult>> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(specs.len());
    if dry_run {
        let stored: ListPoliciesResponse =
            match nexus.call(Method::GET, "/v1/policies", None::<&()>).await {
                Ok(s) => s,
                // Not an admin (say): each policy would fail the same way.
                Err(CliError::Api { code, message }) => {
                    return Ok(specs
                        .iter()
                        .map(|s| PolicyResult {
                            name: s.name.clone(),
                            status: BatchItemStatus::Failed,
                            error: Some(ApiError::new(code, message.clone())),
                        })
                        .collect());
                }
                Err(e) => return Err(e),
            };
        let stored: HashMap<String, Option<Policy>> = stored
            .policies
            .into_iter()
            .map(|p| {
                let parsed = Policy::parse(
                    &p.name,
                    &p.spiffe_id_pattern,
                    &p.path_pattern,
                    p.permissions.iter().copied(),
                )
                .ok();
                (p.name, parsed)
            })
            .collect();
        for (spec, policy) in specs.iter().zip(parsed) {
            let status = match stored.get(&spec.name) {
                None => BatchItemStatus::Created,
                Some(Some(old)) if old == policy => BatchItemStatus::Unchanged,
                Some(_) => BatchItemStatus::Updated,
            };
            out.push(PolicyResult {
                name: spec.name.clone(),
                status,
                error: None,
            });
        }
        return Ok(out);
    }
    for (spec, policy) in specs.iter().zip(parsed) {
        let req = PutPolicyRequest {
            spiffe_id_pattern: spec.spiffe_id_pattern.clone(),
            path_pattern: spec.path_pattern.clone(),
            permissions: policy.permissions().iter().collect(),
        };
        let r: CliResult<PutPolicyResponse> = nexus
            .call(
                Method::PUT,
                &format!("/v1/policies/{}", spec.name),
                Some(&req),
            )
            .await;
        out.push(match r {
            Ok(r) => PolicyResult {
                name: spec.name.clone(),
                status: if r.unchanged {
                    BatchItemStatus::Unchanged
                } else if r.created {
                    BatchItemStatus::Created
                } else {
                    BatchItemStatus::Updated
                },
                error: None,
            },
            Err(CliError::Api { code, message }) => PolicyResult {
                name: spec.name.clone(),
                status: BatchItemStatus::Failed,
                error: Some(ApiError::new(code, message)),
            },
            Err(e) => return Err(e),
        });
    }
    Ok(out)
}

/// Options of [`upload`].
#[derive(Debug, Clone, Copy)]
pub struct UploadOptions {
    /// Compare only; write nothing.
    pub dry_run: bool,
    /// Items per request.
    pub batch_size: usize,
    /// Show progress on a terminal's stderr.
    pub progress: bool,
    /// Batches in flight at once (at least one), all on the one pooled client.
    pub parallel: usize,
}

/// Sends `items` through `POST /v1/secrets/batch`, `opts.parallel` batches in flight, and
/// returns one result per item, in order. Paths must be distinct. A batch Nexus finds too
/// large (`413`) is split in half and sent again.
pub async fn upload(
    client: &Nexus,
    items: Vec<BatchPutItem>,
    opts: UploadOptions,
) -> CliResult<Vec<BatchItemResult>> {
    let total = items.len();
    let chunks = split(items, opts.batch_size.max(1));
    let n = chunks.len();
    let queue = Mutex::new(chunks.into_iter().enumerate());
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let progress = Progress::new(opts.progress && total >= 10_000, total, opts.dry_run);
    let workers = (0..opts.parallel.clamp(1, n.max(1))).map(|_| async {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let next = queue.lock().ok().and_then(|mut q| q.next());
            let Some((i, chunk)) = next else { break };
            let len = chunk.len();
            match send(client, chunk, opts.dry_run).await {
                Ok(r) => out.push((i, r)),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
            let d = done.fetch_add(len, Ordering::Relaxed) + len;
            progress.tick(d);
        }
        Ok(out)
    });
    let mut slots: Vec<Option<Vec<BatchItemResult>>> = (0..n).map(|_| None).collect();
    for worker in futures::future::join_all(workers).await {
        for (i, r) in worker? {
            slots[i] = Some(r);
        }
    }
    progress.finish();
    let mut results = Vec::with_capacity(total);
    for s in slots {
        results.extend(s.ok_or_else(|| {
            CliError::Other(anyhow::anyhow!(
                "a batch was never sent; nothing is lost: run again"
            ))
        })?);
    }
    Ok(results)
}

/// Splits into batches of at most `max` items and about [`MAX_REQUEST_BYTES`].
fn split(items: Vec<BatchPutItem>, max: usize) -> Vec<Vec<BatchPutItem>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for item in items {
        let size = estimate(&item);
        if !cur.is_empty() && (cur.len() >= max || bytes + size > MAX_REQUEST_BYTES) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += size;
        cur.push(item);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A rough size of an item's JSON (escapes can make it larger; a 413 corrects that).
fn estimate(item: &BatchPutItem) -> usize {
    64 + item.path.len()
        + item
            .data
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len() + v.len() / 8)
            .sum::<usize>()
}

type SendFuture<'a> = Pin<Box<dyn Future<Output = CliResult<Vec<BatchItemResult>>> + Send + 'a>>;

/// Sends one batch; halves it on `413` until it fits (a single item that does not fit fails on
/// its own).
fn send(client: &Nexus, items: Vec<BatchPutItem>, dry_run: bool) -> SendFuture<'_> {
    Box::pin(async move {
        let req = BatchPutRequest { items, dry_run };
        let r: CliResult<BatchPutResponse> = client
            .call(Method::POST, "/v1/secrets/batch", Some(&req))
            .await;
        match r {
            Ok(resp) if resp.results.len() == req.items.len() => Ok(resp.results),
            Ok(_) => Err(CliError::Other(anyhow::anyhow!(
                "Nexus answered a batch with the wrong number of results"
            ))),
            Err(CliError::Api {
                code: ErrorCode::TooLarge,
                message,
            }) => {
                let mut items = req.items;
                if items.len() == 1 {
                    let path = items.remove(0).path;
                    return Ok(vec![BatchItemResult {
                        path,
                        status: BatchItemStatus::Failed,
                        version: None,
                        error: Some(ApiError::new(ErrorCode::TooLarge, message)),
                    }]);
                }
                let rest = items.split_off(items.len() / 2);
                let mut first = send(client, items, dry_run).await?;
                first.extend(send(client, rest, dry_run).await?);
                Ok(first)
            }
            Err(e) => Err(e),
        }
    })
}

/// Progress on stderr for big runs, when stderr is a terminal.
struct Progress {
    on: bool,
    total: usize,
    verb: &'static str,
    started: Instant,
    last: Mutex<Instant>,
}

impl Progress {
    fn new(on: bool, total: usize, dry_run: bool) -> Self {
        let now = Instant::now();
        Self {
            on: on && std::io::stderr().is_terminal(),
            total,
            verb: if dry_run { "compared" } else { "sent" },
            started: now,
            last: Mutex::new(now),
        }
    }

    fn tick(&self, done: usize) {
        if !self.on {
            return;
        }
        if let Ok(mut last) = self.last.lock()
            && last.elapsed() >= Duration::from_secs(2)
        {
            *last = Instant::now();
            eprint!("\r{} {done}/{} secrets", self.verb, self.total);
        }
    }

    fn finish(&self) {
        if self.on {
            eprintln!(
                "\r{} {}/{} secrets in {:.1}s",
                self.verb,
                self.total,
                self.total,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Counts per status.
#[derive(Debug, Default, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// New.
    pub created: usize,
    /// Changed.
    pub updated: usize,
    /// Already as wanted.
    pub unchanged: usize,
    /// Refused.
    pub failed: usize,
}

impl Counts {
    fn of(statuses: impl Iterator<Item = BatchItemStatus>) -> Self {
        let mut c = Self::default();
        for s in statuses {
            match s {
                BatchItemStatus::Created => c.created += 1,
                BatchItemStatus::Updated => c.updated += 1,
                BatchItemStatus::Unchanged => c.unchanged += 1,
                _ => c.failed += 1,
            }
        }
        c
    }

    fn line(&self, dry_run: bool) -> String {
        let (c, u) = if dry_run {
            ("to create", "to update")
        } else {
            ("created", "updated")
        };
        format!(
            "{} {c}, {} {u}, {} unchanged, {} failed",
            self.created, self.updated, self.unchanged, self.failed
        )
    }
}

/// What `spike seed` prints with `-o json|yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedReport<'a> {
    /// True when nothing was written.
    pub dry_run: bool,
    /// Per policy.
    pub policies: &'a [PolicyResult],
    /// Per secret (never a value).
    pub secrets: &'a [BatchItemResult],
    /// Totals.
    pub summary: Summary,
}

/// Totals of a run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Policies.
    pub policies: Counts,
    /// Secrets.
    pub secrets: Counts,
}

/// The word for a status in text output.
pub fn status_word(s: BatchItemStatus, dry_run: bool) -> &'static str {
    match (s, dry_run) {
        (BatchItemStatus::Created, true) => "create",
        (BatchItemStatus::Updated, true) => "update",
        (s, _) => s.as_str(),
    }
}

/// Prints a run's results; fails (with the first failure's code, for the exit code) when any
/// item failed.
pub fn report(
    out: Output,
    dry_run: bool,
    quiet: bool,
    policies: &[PolicyResult],
    secrets: &[BatchItemResult],
) -> CliResult<()> {
    let summary = Summary {
        policies: Counts::of(policies.iter().map(|p| p.status)),
        secrets: Counts::of(secrets.iter().map(|s| s.status)),
    };
    match out {
        Output::Text => {
            if dry_run {
                println!("dry run: nothing is written");
            }
            for p in policies {
                if quiet && p.status != BatchItemStatus::Failed {
                    continue;
                }
                print_line(
                    status_word(p.status, dry_run),
                    "policy",
                    &p.name,
                    None,
                    p.error.as_ref(),
                );
            }
            for s in secrets {
                if quiet && s.status != BatchItemStatus::Failed {
                    continue;
                }
                print_line(
                    status_word(s.status, dry_run),
                    "secret",
                    &s.path,
                    s.version,
                    s.error.as_ref(),
                );
            }
            if !policies.is_empty() {
                println!("policies: {}", summary.policies.line(dry_run));
            }
            if !secrets.is_empty() || policies.is_empty() {
                println!("secrets: {}", summary.secrets.line(dry_run));
            }
        }
        _ => print_structured(
            out,
            &SeedReport {
                dry_run,
                policies,
                secrets,
                summary: Summary {
                    policies: summary.policies,
                    secrets: summary.secrets,
                },
            },
        ),
    }
    let failed = summary.policies.failed + summary.secrets.failed;
    if failed == 0 {
        return Ok(());
    }
    let code = policies
        .iter()
        .filter_map(|p| p.error.as_ref())
        .chain(secrets.iter().filter_map(|s| s.error.as_ref()))
        .map(|e| e.code)
        .next()
        .unwrap_or(ErrorCode::Internal);
    Err(CliError::Api {
        code,
        message: format!(
            "{failed} of {} items failed; the others were applied (running again is safe)",
            policies.len() + secrets.len()
        ),
    })
}

fn print_line(word: &str, kind: &str, name: &str, version: Option<u64>, err: Option<&ApiError>) {
    match (err, version) {
        (Some(e), _) => println!("{word:<9}  {kind} {name}: {} ({})", e.message, e.code),
        (None, Some(v)) => println!("{word:<9}  {kind} {name} (v{v})"),
        (None, None) => println!("{word:<9}  {kind} {name}"),
    }
}

/// The directory `valueFrom: {file: ...}` paths are relative to.
fn base_dir(file: &Path) -> PathBuf {
    if file == Path::new("-") {
        return PathBuf::from(".");
    }
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Reads, checks and resolves a seed file.
pub fn load(file: &Path) -> CliResult<(Vec<PolicySpec>, Vec<Policy>, Vec<BatchPutItem>)> {
    let origin = file.display().to_string();
    let text = read_input(file)?;
    let seed = parse_seed(&text, &origin)?;
    drop(text);
    let parsed = check_policies(&seed.policies, &origin)?;
    let env = |name: &str| std::env::var(name).ok();
    let items = resolve_secrets(seed.secrets, &base_dir(file), &origin, &env)?;
    Ok((seed.policies, parsed, items))
}

/// `spike seed -f FILE`.
pub async fn run(nexus: &Nexus, out: Output, args: SeedArgs) -> CliResult<()> {
    if args.batch_size == 0 || args.parallel == 0 {
        return Err(CliError::Usage(
            "--batch-size and --parallel must be at least 1".into(),
        ));
    }
    let (specs, parsed, items) = load(&args.file)?;
    let policies = apply_policies(nexus, &specs, &parsed, args.dry_run).await?;
    let secrets = if items.is_empty() {
        Vec::new()
    } else {
        upload(
            nexus,
            items,
            UploadOptions {
                dry_run: args.dry_run,
                batch_size: args.batch_size,
                progress: out == Output::Text && !args.quiet,
                parallel: args.parallel,
            },
        )
        .await?
    };
    report(out, args.dry_run, args.quiet, &policies, &secrets)
}

/// `spike policy apply -f FILE`.
pub async fn apply(nexus: &Nexus, out: Output, file: &Path, dry_run: bool) -> CliResult<()> {
    let origin = file.display().to_string();
    let text = read_input(file)?;
    let seed = parse_seed(&text, &origin)?;
    drop(text);
    if !seed.secrets.is_empty() {
        return Err(CliError::Usage(format!(
            "{origin} also has secrets; `spike policy apply` applies policies only: use `spike seed -f {origin}` for both"
        )));
    }
    if seed.policies.is_empty() {
        return Err(CliError::Usage(format!(
            "{origin} has no policies (expected a top-level `policies:` list)"
        )));
    }
    let parsed = check_policies(&seed.policies, &origin)?;
    let policies = apply_policies(nexus, &seed.policies, &parsed, dry_run).await?;
    report(out, dry_run, false, &policies, &[])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "DB_PASS").then(|| "from-env".to_owned())
    }

    #[test]
    fn parses_the_documented_example() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), "-----BEGIN-----\nx\n").unwrap();
        let yaml = r#"
version: 1
policies:
  - name: web-read
    spiffeIdPattern: spiffe://spike.dev/ns/web/**
    pathPattern: apps/web/**
    permissions: [read, list]
secrets:
  - path: apps/web/db
    data:
      user: alice
      port: "5432"
      pass:
        valueFrom: {env: DB_PASS}
      cert:
        valueFrom:
          file: cert.pem
      multi: |
        line one
        line two
"#;
        let seed = parse_seed(yaml, "seed.yaml").unwrap();
        let parsed = check_policies(&seed.policies, "seed.yaml").unwrap();
        assert_eq!(parsed.len(), 1);
        let items = resolve_secrets(seed.secrets, dir.path(), "seed.yaml", &env).unwrap();
        assert_eq!(items.len(), 1);
        let d = &items[0].data;
        assert_eq!(d.get("user").unwrap().expose_secret(), "alice");
        assert_eq!(d.get("port").unwrap().expose_secret(), "5432");
        assert_eq!(d.get("pass").unwrap().expose_secret(), "from-env");
        assert_eq!(
            d.get("cert").unwrap().expose_secret(),
            "-----BEGIN-----\nx\n"
        );
        assert_eq!(
            d.get("multi").unwrap().expose_secret(),
            "line one\nline two\n"
        );
    }

    #[test]
    fn errors_point_at_the_place_and_never_quote_values() {
        for (yaml, expect) in [
            (
                "secrets:\n  - path: a\n    data:\n      k: 12345678\n",
                "quote numbers",
            ),
            (
                "secrets:\n  - path: a\n    data:\n      k: s3cretvalue\n    extra: s3cretvalue\n",
                "unknown field `extra`",
            ),
            (
                "secrets:\n  - path: a\n    data:\n      k: [s3cretvalue]\n",
                "line 4",
            ),
            (
                "secrets:\n  - path: a\n    data:\n      k: {valueFrom: {nope: s3cretvalue}}\n",
                "valueFrom",
            ),
            (
                "secrets:\n  - path: a\n    data:\n      k: \"s3cretvalue\n",
                "line",
            ),
            (
                "secrets:\n  - path: a\n    data:\n      k: s3cretvalue\n      k: s3cretvalue2\n",
                "line 5",
            ),
            ("version: 2\n", "version 2"),
        ] {
            let e = parse_seed(yaml, "f.yaml").unwrap_err().to_string();
            assert!(!e.contains("s3cret"), "{e}");
            assert!(!e.contains("12345678"), "{e}");
            assert!(e.contains(expect), "{e:?} lacks {expect:?}");
        }
    }

    #[test]
    fn bad_secrets_and_policies_stop_the_run() {
        let check = |yaml: &str, expect: &str| {
            let seed = parse_seed(yaml, "f").unwrap();
            let e = check_policies(&seed.policies, "f")
                .and_then(|_| resolve_secrets(seed.secrets, Path::new("."), "f", &env))
                .unwrap_err()
                .to_string();
            assert!(e.contains(expect), "{e:?} lacks {expect:?}");
            assert!(!e.contains("s3cret"), "{e}");
        };
        check(
            "secrets:\n  - {path: a/b, data: {k: s3cret}}\n  - {path: a/b, data: {k: s3cret}}\n",
            "defined twice",
        );
        check("secrets:\n  - {path: '../x', data: {k: s3cret}}\n", "path");
        check("secrets:\n  - {path: a, data: {}}\n", "no data");
        check(
            "secrets:\n  - {path: a, data: {k: {valueFrom: {env: NOPE_NOT_SET}}}}\n",
            "NOPE_NOT_SET is not set",
        );
        check(
            "secrets:\n  - {path: a, data: {k: {valueFrom: {file: /nonexistent/x}}}}\n",
            "cannot read /nonexistent/x",
        );
        check(
            "policies:\n  - {name: p, spiffeIdPattern: 'spiffe://x/**', pathPattern: 'a/**', permissions: [reed]}\n",
            "unknown permission `reed`",
        );
        check(
            "policies:\n  - {name: p, spiffeIdPattern: 'spiffe://x/**', pathPattern: 'a/**', permissions: [read]}\n  - {name: p, spiffeIdPattern: 'spiffe://x/**', pathPattern: 'a/**', permissions: [read]}\n",
            "defined twice",
        );
    }

    #[test]
    fn batches_respect_count_and_size() {
        let item = |i: usize, len: usize| BatchPutItem {
            path: format!("p/{i}"),
            data: [("k", "v".repeat(len).as_str())].into_iter().collect(),
            cas: None,
        };
        let chunks = split((0..1001).map(|i| item(i, 10)).collect(), 500);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![500, 500, 1]
        );
        let chunks = split((0..10).map(|i| item(i, 1 << 20)).collect(), 500);
        assert!(chunks.len() >= 3, "{}", chunks.len());
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 10);
    }
}
