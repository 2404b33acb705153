//! Applying a seed file: policies one request each, secrets in batches with several in
//! flight on the one pooled client, and progress on a terminal.

use std::collections::HashMap;
use std::future::Future;
use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use serde::Serialize;
use spike_core::api::{
    BatchItemResult, BatchItemStatus, BatchPutItem, BatchPutRequest, BatchPutResponse,
    ListPoliciesResponse, PutPolicyRequest, PutPolicyResponse,
};
use spike_core::error::{ApiError, ErrorCode};
use spike_core::policy::Policy;

use super::file::PolicySpec;
use crate::client::{CliError, CliResult, Nexus};

/// Largest request body the client builds (estimated); Nexus accepts 4 MiB by default, and a
/// `413` makes the client split the batch and retry anyway.
pub(super) const MAX_REQUEST_BYTES: usize = 3 << 20;

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
            create_only: false,
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
pub(super) fn split(items: Vec<BatchPutItem>, max: usize) -> Vec<Vec<BatchPutItem>> {
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
pub(super) fn estimate(item: &BatchPutItem) -> usize {
    64 + item.path.len()
        + item
            .data
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len() + v.len() / 8)
            .sum::<usize>()
}

pub(super) type SendFuture<'a> =
    Pin<Box<dyn Future<Output = CliResult<Vec<BatchItemResult>>> + Send + 'a>>;

/// Sends one batch; halves it on `413` until it fits (a single item that does not fit fails on
/// its own).
pub(super) fn send(client: &Nexus, items: Vec<BatchPutItem>, dry_run: bool) -> SendFuture<'_> {
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
pub(super) struct Progress {
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
