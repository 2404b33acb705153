//! Bulk and tooling routes: `POST /v1/secrets/batch` (many puts in one request, for seeding
//! and imports) and `POST /v1/access/explain` (`spike policy test`).
//!
//! A batch is not a transaction: each item is authorized (`write` on its path), decided and
//! audited on its own, exactly like a single put, and one forbidden or invalid item does not
//! stop the others. Only a malformed or oversized request is refused whole, before anything
//! is written.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use spike_core::api::{BatchItemResult, BatchItemStatus, BatchPutRequest, BatchPutResponse};
use spike_core::audit::{AuditRecord, Decision};
use spike_core::error::{ApiError, ErrorCode};
use spike_core::path::SecretPath;
use spike_core::policy::Permission;

use super::N;
use crate::error::{AppError, AppResult};
use crate::extract::{Caller, parse_json};
use crate::scope::ScopeChange;
use crate::secrets::{BatchEntry, Sight};
use crate::state::Nexus;

/// The batch routes, merged into the `/v1` router.
pub(super) fn routes() -> Router<Arc<Nexus>> {
    Router::new()
        .route("/v1/secrets/batch", post(put))
        .route("/v1/access/explain", post(super::policies::explain))
}

/// Audit action of a written batch item.
const ITEM_ACTION: &str = "secret.batch.put";
/// Audit action of a dry-run batch item.
const DRY_RUN_ACTION: &str = "secret.batch.check";
/// Audit action of the summary line of a batch's failed items.
const REFUSED_ACTION: &str = "secret.batch.put.refused";
/// Audit action of the summary line of a dry run's failed items.
const REFUSED_DRY_RUN_ACTION: &str = "secret.batch.check.refused";

async fn put(State(n): N, Caller(c): Caller, headers: HeaderMap, body: Body) -> Response {
    n.respond("secret.batch", &c, None, async {
        let o = n.opened()?;
        let limits = n.secrets().batch_limits();
        let req: BatchPutRequest = read_json(&headers, body, limits.max_bytes).await?;
        if req.items.len() > limits.max_items {
            return Err(AppError::new(
                ErrorCode::TooLarge,
                format!(
                    "a batch may carry at most {} items ({} sent); split it",
                    limits.max_items,
                    req.items.len()
                ),
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(req.items.len());
        for (i, item) in req.items.iter().enumerate() {
            if let Some(first) = seen.insert(item.path.as_str(), i) {
                return Err(AppError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "items {} and {} both write `{}`; a batch writes each path once",
                        first + 1,
                        i + 1,
                        item.path
                    ),
                ));
            }
        }
        // Parse and authorize each item; the valid ones go to the engine together.
        let checked: Vec<AppResult<(SecretPath, Sight, Option<ScopeChange>)>> = req
            .items
            .iter()
            .map(|item| {
                let path = n.parse_path(&item.path)?;
                n.authorize(&c, &path, Permission::Write)?;
                let scope = n.scope_change(item.scope.as_ref())?;
                // A dry run answers whether the content equals what is stored, writing
                // nothing: without `read` that would be a free, repeatable guessing oracle.
                if req.dry_run {
                    n.authorize(&c, &path, Permission::Read)?;
                }
                let sight = n.put_sight(&c, &path);
                Ok((path, sight, scope))
            })
            .collect();
        // Two spellings of one path would parse to the same path: refuse those too.
        let mut canonical: HashMap<&str, usize> = HashMap::new();
        for (i, p) in checked.iter().enumerate() {
            if let Ok((p, _, _)) = p
                && let Some(first) = canonical.insert(p.as_str(), i)
            {
                return Err(AppError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "items {} and {} both write `{}`; a batch writes each path once",
                        first + 1,
                        i + 1,
                        p.as_str()
                    ),
                ));
            }
        }
        let mut entries = Vec::new();
        let mut slots = Vec::with_capacity(checked.len());
        for (item, p) in req.items.iter().zip(&checked) {
            match p {
                Ok((path, sight, scope)) => {
                    slots.push(Ok(entries.len()));
                    entries.push(BatchEntry {
                        path,
                        data: &item.data,
                        cas: item.cas,
                        scope: scope.as_ref(),
                        sight: *sight,
                    });
                }
                Err(e) => slots.push(Err(ApiError::new(e.code(), e.0.message.clone()))),
            }
        }
        let mut outcomes: Vec<Option<AppResult<crate::secrets::PutOutcome>>> = n
            .secrets()
            .put_batch(&o.keys, &entries, req.dry_run)
            .await
            .into_iter()
            .map(Some)
            .collect();
        let results: Vec<BatchItemResult> = req
            .items
            .iter()
            .zip(slots)
            .map(|(item, slot)| {
                let outcome = match slot {
                    Ok(j) => outcomes
                        .get_mut(j)
                        .and_then(Option::take)
                        .unwrap_or_else(|| Err(AppError::internal("batch", "missing outcome")))
                        .map_err(|e| e.0),
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(o) => BatchItemResult {
                        path: item.path.clone(),
                        status: o.status,
                        version: o.version,
                        error: None,
                    },
                    Err(e) => BatchItemResult {
                        path: item.path.clone(),
                        status: BatchItemStatus::Failed,
                        version: None,
                        error: Some(e),
                    },
                }
            })
            .collect();
        // One audit line per written item, like single puts (never a value); the lines of
        // one batch share the audit log's group commit. The refused or invalid items get one
        // summary line, counted per reason, so a batch of junk cannot flood the log. Fail
        // closed like every other request.
        let action = if req.dry_run {
            DRY_RUN_ACTION
        } else {
            ITEM_ACTION
        };
        let audited =
            futures::future::join_all(results.iter().filter(|r| r.error.is_none()).map(|r| {
                let n = &n;
                let o = &o;
                let c = &c;
                async move { n.audit(Some(o), c, action, Some(&r.path), &Ok(())).await }
            }))
            .await;
        if let Some(Err(e)) = audited.into_iter().find(Result::is_err) {
            return Err(e);
        }
        if let Some(summary) = refused_summary(&c, action, &results) {
            n.audit_refusal(&o, summary).await?;
        }
        Ok(BatchPutResponse {
            dry_run: req.dry_run,
            results,
        })
    })
    .await
}

/// The one audit line of a batch's failed items: counts per reason code, and the first one's
/// path (abbreviated when it is not a valid path). `None` when every item succeeded.
fn refused_summary(
    caller: &spike_core::id::SpiffeId,
    action: &'static str,
    results: &[BatchItemResult],
) -> Option<AuditRecord> {
    let mut failed = results
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| (r, e.code)));
    let (first, first_code) = failed.next()?;
    let summary_action = if action == DRY_RUN_ACTION {
        REFUSED_DRY_RUN_ACTION
    } else {
        REFUSED_ACTION
    };
    let any_denied = results
        .iter()
        .any(|r| r.error.as_ref().is_some_and(|e| e.code.denies_access()));
    let decision = if any_denied {
        Decision::Deny
    } else {
        Decision::Error
    };
    let record = AuditRecord::new(summary_action, decision, "batch_items_refused")
        .with_caller(caller.clone());
    let record = if first_code == ErrorCode::InvalidPath {
        record.with_raw_path(&first.path)
    } else {
        record.with_path(first.path.as_str())
    };
    let record = std::iter::once(first_code)
        .chain(failed.map(|(_, c)| c))
        .fold(record, |r, code| r.with_count(code.as_str(), 1));
    Some(record)
}

/// Reads a JSON body of at most `limit` bytes, with value-free errors.
async fn read_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> AppResult<T> {
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim() == "application/json");
    if !is_json {
        return Err(AppError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        AppError::new(
            ErrorCode::TooLarge,
            format!("a batch body may be at most {limit} bytes; split it"),
        )
    })?;
    parse_json(&bytes)
}
