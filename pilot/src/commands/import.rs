//! `spike import openbao`: copy an OpenBao (or HashiCorp Vault) KV version 2 mount into SPIKE,
//! with its version history where possible.
//!
//! How versions map (also in docs/seeding.md): SPIKE numbers versions itself. A secret that
//! does not exist in SPIKE yet gets every source version that can still be read (not deleted,
//! not destroyed), oldest first, so with an intact history version N in the source is version N
//! in SPIKE; gaps (destroyed, deleted or pruned versions) close up, and consecutive identical
//! versions collapse into one (SPIKE answers "unchanged"). A secret that already exists in SPIKE
//! gets only the source's current version, and only when it differs, so importing twice
//! changes nothing. The first write of a new secret carries `cas: 0`, and each later one the
//! version just written, so a secret someone else writes meanwhile is never interleaved.
//!
//! The source is read over its HTTP API with a token (`BAO_TOKEN` or `VAULT_TOKEN`), or from an
//! export file whose JSON shape is [`ExportFile`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use spike_core::api::{BatchItemResult, BatchItemStatus, BatchPutItem};
use spike_core::error::{ApiError, ErrorCode};
use spike_core::path::SecretPath;
use spike_core::secret::{SecretMap, SecretString};
use spike_runtime::net::{ClientError, WebClient, WebClientError};
use zeroize::Zeroizing;

use crate::cli::{ImportArgs, ImportCmd, Output};
use crate::client::{CliError, CliResult, Nexus, query_escape};
use crate::commands::seed::{UploadOptions, report, upload};

/// Most secrets one import reads (a bound on a runaway listing).
const MAX_SECRETS: usize = 10_000_000;
/// Deepest folder nesting followed.
const MAX_DEPTH: usize = 64;
/// Largest answer accepted from the source server.
const MAX_RESPONSE: usize = 64 << 20;
/// Per-request timeout towards the source server.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(30);

/// A KV v2 export file.
///
/// ```json
/// {
///   "mount": "secret",
///   "secrets": [
///     { "path": "apps/web/db",
///       "versions": [
///         { "version": 1, "createdTime": "2025-01-01T00:00:00Z", "data": { "user": "alice" } },
///         { "version": 2, "destroyed": true },
///         { "version": 3, "data": { "user": "bob" } } ] } ]
/// }
/// ```
///
/// Versions are applied in `version` order; those marked `deleted` or `destroyed`, or without
/// `data`, are skipped. A non-string value is stored as its compact JSON text.
#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportFile {
    /// The mount it came from (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// The secrets, by path relative to the mount.
    pub secrets: Vec<ExportSecret>,
}

/// Shows the shape only: an export holds secret values.
impl std::fmt::Debug for ExportFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportFile")
            .field("mount", &self.mount)
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

/// One secret of an [`ExportFile`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportSecret {
    /// Path relative to the mount.
    pub path: String,
    /// Its versions.
    pub versions: Vec<ExportVersion>,
    /// The source's `delete_version_after` in seconds, if set: each version is removed that
    /// long after its write, which SPIKE keeps as the secret's TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// One version of an [`ExportSecret`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportVersion {
    /// The source's version number.
    pub version: u64,
    /// When the source wrote it (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<String>,
    /// Soft-deleted in the source: skipped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Destroyed in the source: skipped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub destroyed: bool,
    /// The key/value pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<BTreeMap<String, serde_json::Value>>,
}

/// Runs an import subcommand.
pub async fn run(nexus: Option<&Nexus>, out: Output, cmd: ImportCmd) -> CliResult<()> {
    let ImportCmd::Openbao(args) = cmd;
    let export = match &args.from_file {
        Some(f) => read_export(f)?,
        None => read_server(&args).await?,
    };
    if let Some(to) = &args.export_to {
        write_export(to, &export)?;
        let versions: usize = export.secrets.iter().map(|s| s.versions.len()).sum();
        if out == Output::Text {
            println!(
                "exported {} secrets ({versions} versions) to {}",
                export.secrets.len(),
                to.display()
            );
        } else {
            crate::output::print_structured(
                out,
                &serde_json::json!({"exported": export.secrets.len(), "versions": versions, "file": to}),
            );
        }
        return Ok(());
    }
    let nexus = nexus.ok_or_else(|| CliError::Usage("no Nexus client".into()))?;
    let (sources, mut failed) = to_sources(export, args.into.as_deref());
    let empty = sources.iter().filter(|s| s.versions.is_empty()).count();
    if empty > 0 {
        eprintln!(
            "note: {empty} secrets have no readable version (every version deleted or destroyed) and are skipped"
        );
    }
    let opts = |dry_run| UploadOptions {
        dry_run,
        batch_size: args.upload.batch_size,
        progress: out == Output::Text && !args.upload.no_progress,
        parallel: args.upload.parallel,
    };
    // Compare each secret's current source version with SPIKE, writing nothing: this decides
    // which secrets are new (full history) and which exist (current version only).
    let latest: Vec<BatchPutItem> = sources
        .iter()
        .filter_map(|s| {
            s.versions.last().map(|d| BatchPutItem {
                path: s.path.clone(),
                data: d.clone(),
                cas: None,
                scope: s.scope(),
            })
        })
        .collect();
    let check = if latest.is_empty() {
        Vec::new()
    } else {
        upload(nexus, latest, opts(true)).await?
    };
    let mut results = Vec::with_capacity(check.len() + failed.len());
    if args.upload.dry_run {
        results.extend(check);
    } else {
        let mut fresh = Vec::new();
        let mut update = Vec::new();
        for (src, r) in sources
            .into_iter()
            .filter(|s| !s.versions.is_empty())
            .zip(check)
        {
            match r.status {
                BatchItemStatus::Created => fresh.push(src),
                BatchItemStatus::Updated => update.push(src),
                _ => results.push(r),
            }
        }
        // Existing secrets: the current version only.
        let items: Vec<BatchPutItem> = update
            .into_iter()
            .filter_map(|mut s| {
                let scope = s.scope();
                s.versions.pop().map(|d| BatchPutItem {
                    path: s.path,
                    data: d,
                    cas: None,
                    scope,
                })
            })
            .collect();
        if !items.is_empty() {
            results.extend(upload(nexus, items, opts(false)).await?);
        }
        results.extend(import_histories(nexus, fresh, opts(false)).await?);
    }
    results.append(&mut failed);
    results.sort_by(|a, b| a.path.cmp(&b.path));
    report(out, args.upload.dry_run, args.upload.quiet, &[], &results)
}

/// A secret to import: its SPIKE path, its readable versions, oldest first, and its TTL.
struct Source {
    path: String,
    versions: Vec<SecretMap>,
    ttl_seconds: Option<u64>,
}

impl Source {
    /// The scope the source has: its TTL (KV v2 has no allowed IDs or destinations).
    fn scope(&self) -> Option<spike_core::api::ScopeUpdate> {
        self.ttl_seconds.map(|t| spike_core::api::ScopeUpdate {
            ttl_seconds: Some(t),
            ..spike_core::api::ScopeUpdate::default()
        })
    }
}

/// Writes the full history of secrets new to SPIKE, one round per version depth, each write
/// conditioned on the version the previous round wrote.
async fn import_histories(
    nexus: &Nexus,
    fresh: Vec<Source>,
    opts: UploadOptions,
) -> CliResult<Vec<BatchItemResult>> {
    let mut state: Vec<(Source, Option<BatchItemResult>)> =
        fresh.into_iter().map(|s| (s, None)).collect();
    let depth = state
        .iter()
        .map(|(s, _)| s.versions.len())
        .max()
        .unwrap_or(0);
    for round in 0..depth {
        let mut idx = Vec::new();
        let mut items = Vec::new();
        for (i, (src, last)) in state.iter().enumerate() {
            let cas = match last {
                None if round == 0 => Some(0),
                Some(r) if r.status != BatchItemStatus::Failed => r.version,
                _ => continue,
            };
            if let Some(d) = src.versions.get(round) {
                idx.push(i);
                items.push(BatchPutItem {
                    path: src.path.clone(),
                    data: d.clone(),
                    cas,
                    scope: src.scope(),
                });
            }
        }
        if items.is_empty() {
            break;
        }
        let got = upload(nexus, items, opts).await?;
        for (i, mut r) in idx.into_iter().zip(got) {
            let slot = &mut state[i].1;
            // Report the secret as created (by the first round), at its final version.
            if slot.is_some() && r.status != BatchItemStatus::Failed {
                r.status = BatchItemStatus::Created;
            }
            *slot = Some(r);
        }
    }
    Ok(state.into_iter().filter_map(|(_, r)| r).collect())
}

/// Turns an export into sources, with a failed result for each path SPIKE cannot take.
fn to_sources(export: ExportFile, into: Option<&str>) -> (Vec<Source>, Vec<BatchItemResult>) {
    let into = into.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty());
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for s in export.secrets {
        let rel = s.path.trim_matches('/');
        let target = match into {
            Some(p) => format!("{p}/{rel}"),
            None => rel.to_owned(),
        };
        let fail = |code, message: String| BatchItemResult {
            path: target.clone(),
            status: BatchItemStatus::Failed,
            version: None,
            error: Some(ApiError::new(code, message)),
        };
        if let Err(e) = SecretPath::parse(&target) {
            failed.push(fail(
                ErrorCode::InvalidPath,
                format!("`{}` cannot be a SPIKE path: {e}", s.path),
            ));
            continue;
        }
        let mut versions: Vec<ExportVersion> = s.versions;
        versions.sort_by_key(|v| v.version);
        let mut maps = Vec::new();
        let mut bad = None;
        for v in versions {
            if v.deleted || v.destroyed {
                continue;
            }
            let Some(data) = v.data else { continue };
            match to_map(data) {
                Some(m) => maps.push(m),
                None => {
                    bad = Some(v.version);
                    break;
                }
            }
        }
        if let Some(v) = bad {
            failed.push(fail(
                ErrorCode::BadRequest,
                format!("version {v} has no keys; SPIKE secrets need at least one"),
            ));
            continue;
        }
        ok.push(Source {
            path: target,
            versions: maps,
            ttl_seconds: s.ttl_seconds,
        });
    }
    (ok, failed)
}

/// KV v2 data as a SPIKE map: strings as they are, anything else as its compact JSON text.
fn to_map(data: BTreeMap<String, serde_json::Value>) -> Option<SecretMap> {
    if data.is_empty() {
        return None;
    }
    let mut m = SecretMap::new();
    for (k, v) in data {
        let s = match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        m.insert(k, SecretString::new(s));
    }
    Some(m)
}

fn read_export(path: &Path) -> CliResult<ExportFile> {
    let bytes = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?,
    );
    // serde_json's messages can quote the input: report the position only.
    serde_json::from_slice(&bytes).map_err(|e| {
        CliError::Usage(format!(
            "{}: not a KV v2 export file (line {} column {}); see docs/seeding.md for the shape",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}

fn write_export(path: &Path, export: &ExportFile) -> CliResult<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes =
        Zeroizing::new(serde_json::to_vec_pretty(export).map_err(|e| CliError::Other(e.into()))?);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot create {} (it must not exist yet): {e}",
                path.display()
            ))
        })?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))
}

// ---- the source server ----

/// Reads every secret under `args.prefix` of the KV v2 mount from a live server.
async fn read_server(args: &ImportArgs) -> CliResult<ExportFile> {
    let token = std::env::var("BAO_TOKEN")
        .or_else(|_| std::env::var("VAULT_TOKEN"))
        .map_err(|_| {
            CliError::Usage(
                "set BAO_TOKEN (or VAULT_TOKEN) to a token that may list and read the mount".into(),
            )
        })?;
    let token = SecretString::new(token);
    let mount = args.mount.trim_matches('/').to_owned();
    if mount.is_empty() {
        return Err(CliError::Usage("--mount cannot be empty".into()));
    }
    let client = KvClient::new(&args.addr, args.ca_cert.as_deref(), token, &mount)?;
    let prefix = args
        .prefix
        .as_deref()
        .map(|p| p.trim_matches('/'))
        .unwrap_or("");
    let paths = client.walk(prefix).await?;
    // Read metadata and versions with `--parallel` requests in flight on the one pool.
    let queue = Mutex::new(paths.into_iter().enumerate());
    let workers = (0..args.upload.parallel.max(1)).map(|_| async {
        let mut out = Vec::new();
        loop {
            let next = queue.lock().ok().and_then(|mut q| q.next());
            let Some((i, path)) = next else { break };
            out.push((i, client.read_secret(&path).await?));
        }
        Ok::<_, CliError>(out)
    });
    let mut all = Vec::new();
    for w in futures::future::join_all(workers).await {
        all.extend(w?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(ExportFile {
        mount: Some(mount),
        secrets: all.into_iter().filter_map(|(_, s)| s).collect(),
    })
}

/// A client of the KV v2 API (the pooled [`WebClient`]), token in `X-Vault-Token`. Clones
/// share the pool, so parallel readers share its connections.
#[derive(Clone)]
struct KvClient {
    http: WebClient,
    token: SecretString,
    mount: String,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Deserialize)]
struct ListData {
    keys: Vec<String>,
}

#[derive(Deserialize)]
struct MetaData {
    #[serde(default)]
    versions: BTreeMap<String, VersionMeta>,
    /// A Go duration such as `1h0m0s`; `0s` (the default) means never.
    #[serde(default)]
    delete_version_after: Option<String>,
}

#[derive(Deserialize)]
struct VersionMeta {
    #[serde(default)]
    created_time: Option<String>,
    #[serde(default)]
    deletion_time: Option<String>,
    #[serde(default)]
    destroyed: bool,
}

#[derive(Deserialize)]
struct ReadData {
    data: Option<BTreeMap<String, serde_json::Value>>,
}

impl KvClient {
    fn new(addr: &str, ca: Option<&Path>, token: SecretString, mount: &str) -> CliResult<Self> {
        let roots = ca.map(roots_from).transpose()?;
        let http = WebClient::new(addr, roots)
            .map_err(|e| match e {
                WebClientError::NoRoots => CliError::Usage(
                    "an https:// source needs --ca-cert FILE (BAO_CACERT): the PEM CA that signed its certificate"
                        .into(),
                ),
                e => CliError::Usage(format!("--addr {addr}: {e}")),
            })?
            .with_timeout(SOURCE_TIMEOUT)
            .with_max_response(MAX_RESPONSE);
        Ok(Self {
            http,
            token,
            mount: mount.to_owned(),
        })
    }

    /// GETs `path_and_query`; `None` on 404.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path_and_query: &str,
    ) -> CliResult<Option<T>> {
        let authority = self.http.authority();
        let resp = self
            .http
            .send(
                Method::GET,
                path_and_query,
                &[("X-Vault-Token", self.token.expose_secret())],
                None,
            )
            .await
            .map_err(|e| match e {
                ClientError::Timeout { secs, .. } => CliError::Other(anyhow::anyhow!(
                    "the source at {authority} did not answer within {secs}s"
                )),
                ClientError::TooLarge { limit, .. } => CliError::Other(anyhow::anyhow!(
                    "an answer from the source is larger than {limit} bytes"
                )),
                e => CliError::Other(anyhow::anyhow!(
                    "cannot reach the source at {authority}: {e}"
                )),
            })?;
        let status = resp.status;
        let body = Zeroizing::new(resp.body.to_vec());
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => serde_json::from_slice(&body).map(Some).map_err(|e| {
                CliError::Other(anyhow::anyhow!(
                    "unexpected answer from the source (is --mount a KV version 2 mount?): line {} column {}",
                    e.line(),
                    e.column()
                ))
            }),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Err(CliError::Usage(format!(
                "the source refused the token ({status}) for {}: it needs list and read on the mount",
                path_only(path_and_query)
            ))),
            s => Err(CliError::Other(anyhow::anyhow!(
                "the source answered {s} for {}",
                path_only(path_and_query)
            ))),
        }
    }

    /// Every secret path under `prefix` (the prefix itself too, if it is a secret).
    async fn walk(&self, prefix: &str) -> CliResult<Vec<String>> {
        let mut out = Vec::new();
        if !prefix.is_empty()
            && self
                .get::<Envelope<MetaData>>(&self.url("metadata", prefix, ""))
                .await?
                .is_some()
        {
            out.push(prefix.to_owned());
        }
        let mut folders = vec![(
            if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            0usize,
        )];
        while let Some((folder, depth)) = folders.pop() {
            if depth > MAX_DEPTH {
                return Err(CliError::Other(anyhow::anyhow!(
                    "folders under {folder} nest deeper than {MAX_DEPTH}; import a narrower --prefix"
                )));
            }
            let Some(list) = self
                .get::<Envelope<ListData>>(&self.url("metadata", &folder, "?list=true"))
                .await?
            else {
                continue;
            };
            for key in list.data.keys {
                let full = format!("{folder}{key}");
                if key.ends_with('/') {
                    folders.push((full, depth + 1));
                } else {
                    out.push(full);
                }
                if out.len() > MAX_SECRETS {
                    return Err(CliError::Other(anyhow::anyhow!(
                        "more than {MAX_SECRETS} secrets; import a narrower --prefix at a time"
                    )));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reads one secret's readable versions, oldest first (`None` if it vanished meanwhile).
    async fn read_secret(&self, path: &str) -> CliResult<Option<ExportSecret>> {
        let Some(meta) = self
            .get::<Envelope<MetaData>>(&self.url("metadata", path, ""))
            .await?
        else {
            return Ok(None);
        };
        let mut numbered: Vec<(u64, VersionMeta)> = meta
            .data
            .versions
            .into_iter()
            .filter_map(|(k, v)| k.parse().ok().map(|n| (n, v)))
            .collect();
        numbered.sort_by_key(|(n, _)| *n);
        let mut versions = Vec::with_capacity(numbered.len());
        for (n, vm) in numbered {
            let deleted = vm.deletion_time.as_deref().is_some_and(|t| !t.is_empty());
            let mut v = ExportVersion {
                version: n,
                created_time: vm.created_time,
                deleted,
                destroyed: vm.destroyed,
                data: None,
            };
            if !deleted && !vm.destroyed {
                // A version deleted meanwhile (404 or null data) is skipped like a deleted one.
                match self
                    .get::<Envelope<ReadData>>(&self.url("data", path, &format!("?version={n}")))
                    .await?
                {
                    Some(r) => v.data = r.data.data,
                    None => v.deleted = true,
                }
            }
            versions.push(v);
        }
        let ttl_seconds = meta
            .data
            .delete_version_after
            .as_deref()
            .and_then(go_duration_seconds);
        Ok(Some(ExportSecret {
            path: path.to_owned(),
            versions,
            ttl_seconds,
        }))
    }

    fn url(&self, kind: &str, path: &str, query: &str) -> String {
        format!(
            "/v1/{}/{kind}/{}{query}",
            query_escape(&self.mount),
            query_escape(path)
        )
    }
}

/// Whole seconds of a Go duration (`1h30m0s`, `45s`); `None` for zero or what does not parse.
fn go_duration_seconds(d: &str) -> Option<u64> {
    let secs = humantime::parse_duration(d).ok()?.as_secs();
    (secs > 0).then_some(secs)
}

fn path_only(path_and_query: &str) -> &str {
    path_and_query.split('?').next().unwrap_or(path_and_query)
}

/// The CA certificates of the PEM file `ca`, the roots an `https://` source must chain to.
fn roots_from(ca: &Path) -> CliResult<rustls::RootCertStore> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(ca)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", ca.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            CliError::Usage(format!("{}: not a PEM certificate: {e}", ca.display()))
        })?;
        roots.add(cert).map_err(|e| {
            CliError::Usage(format!("{}: unusable CA certificate: {e}", ca.display()))
        })?;
    }
    if roots.is_empty() {
        return Err(CliError::Usage(format!(
            "{} holds no PEM certificate",
            ca.display()
        )));
    }
    Ok(roots)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn export_files_map_to_ordered_histories() {
        let json = r#"{
          "mount": "secret",
          "secrets": [
            {"path": "apps/web/db", "versions": [
              {"version": 3, "data": {"user": "carol", "port": 5432, "tls": true, "cfg": {"a": 1}}},
              {"version": 1, "data": {"user": "alice"}},
              {"version": 2, "destroyed": true},
              {"version": 4, "deleted": true, "data": {"user": "dave"}}
            ]},
            {"path": "has space/x", "versions": [{"version": 1, "data": {"k": "v"}}]},
            {"path": "empty", "versions": [{"version": 1, "data": {}}]}
          ]
        }"#;
        let export: ExportFile = serde_json::from_str(json).unwrap();
        let (ok, failed) = to_sources(export, Some("/imported/"));
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].path, "imported/apps/web/db");
        let users: Vec<&str> = ok[0]
            .versions
            .iter()
            .map(|m| m.get("user").unwrap().expose_secret())
            .collect();
        assert_eq!(users, ["alice", "carol"]);
        let v = &ok[0].versions[1];
        assert_eq!(v.get("port").unwrap().expose_secret(), "5432");
        assert_eq!(v.get("tls").unwrap().expose_secret(), "true");
        assert_eq!(v.get("cfg").unwrap().expose_secret(), r#"{"a":1}"#);
        let mut paths: Vec<&str> = failed.iter().map(|f| f.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["imported/empty", "imported/has space/x"]);
        assert!(failed.iter().all(|f| f.status == BatchItemStatus::Failed));
    }

    #[test]
    fn export_parse_errors_do_not_quote_values() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.json");
        std::fs::write(
            &f,
            r#"{"secrets": [{"path": "a", "versions": [{"version": "s3cret"}]}]}"#,
        )
        .unwrap();
        let e = read_export(&f).unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn source_addresses() {
        let t = SecretString::new("t".into());
        assert!(KvClient::new("http://127.0.0.1:8200", None, t.clone(), "secret").is_ok());
        assert!(KvClient::new("ftp://x", None, t.clone(), "secret").is_err());
        assert!(KvClient::new("https://x:8200", None, t.clone(), "secret").is_err());
        assert!(KvClient::new("http://x:1/v1", None, t, "secret").is_err());
    }
}
