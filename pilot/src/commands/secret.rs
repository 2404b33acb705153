//! `spike secret ...`

use std::io::Read;

use http::Method;
use spike_core::api::{
    GetSecretResponse, ListSecretsResponse, PutSecretRequest, PutSecretResponse, ScopeUpdate,
    SecretMetadata, UpdateScopeRequest, VersionsRequest, VersionsResponse,
};
use spike_core::secret::{SecretMap, SecretString};

use crate::cli::{Output, SecretCmd};
use crate::client::{CliError, CliResult, Nexus, query_escape};
use crate::output::{age, key_value_line, print_structured, print_table, timestamp};

/// Runs a secret subcommand.
pub async fn run(nexus: &Nexus, out: Output, cmd: SecretCmd) -> CliResult<()> {
    match cmd {
        SecretCmd::Put {
            path,
            pairs,
            name,
            keys,
            values,
            cas,
            scope,
        } => {
            let path = path
                .or(name)
                .ok_or_else(|| CliError::Usage("name the secret: a PATH, or --name NAME".into()))?;
            let data = collect_pairs(&pairs, &keys, &values)?;
            let resp = write(nexus, &path, data, cas, scope.update()).await?;
            print_written(out, &path, &resp);
        }
        SecretCmd::Scope { path, cas, scope } => {
            let scope = scope.update().ok_or_else(|| {
                CliError::Usage(
                    "give the scope to set: --ttl, --no-ttl, --allowed-spiffe-ids or --allowed-destinations"
                        .into(),
                )
            })?;
            let resp = update_scope(nexus, &path, cas, scope).await?;
            print_written(out, &path, &resp);
        }
        SecretCmd::Patch { path, pairs, cas } => {
            let current = read(nexus, &path, None).await?;
            if let Some(expected) = cas
                && expected != current.version
            {
                return Err(CliError::Api {
                    code: spike_core::error::ErrorCode::CasMismatch,
                    message: format!("current version is {}, not {expected}", current.version),
                });
            }
            let mut data = current.data;
            for (k, v) in collect_pairs(&pairs, &[], &[])?.iter() {
                data.insert(k.to_owned(), v.clone());
            }
            let resp = write(nexus, &path, data, Some(current.version), None).await?;
            print_written(out, &path, &resp);
        }
        SecretCmd::Rollback { path, to } => {
            let old = read(nexus, &path, Some(to)).await?;
            let meta: SecretMetadata = nexus
                .call(
                    Method::GET,
                    &format!("/v1/secrets/metadata/{path}"),
                    None::<&()>,
                )
                .await?;
            // Only if nothing was written since the metadata was read.
            let resp = write(nexus, &path, old.data, Some(meta.current_version), None).await?;
            match (out, resp.version) {
                (Output::Text, Some(v)) if !resp.unchanged => {
                    println!("rolled back {path}: version {v} has the content of version {to}");
                }
                _ => print_written(out, &path, &resp),
            }
        }
        SecretCmd::Get { path, key, version } => {
            let resp = read(nexus, &path, version).await?;
            match (key, out) {
                (Some(k), _) => {
                    let v = resp.data.get(&k).ok_or_else(|| CliError::Api {
                        code: spike_core::error::ErrorCode::NotFound,
                        message: format!("version {} of {path} has no key `{k}`", resp.version),
                    })?;
                    match out {
                        Output::Text => println!("{}", v.expose_secret()),
                        _ => print_structured(out, &v.expose_secret()),
                    }
                }
                (None, Output::Text) => match resp.data.get(BARE_KEY) {
                    // A secret written as one bare value reads back as it was written.
                    Some(v) if resp.data.len() == 1 => println!("{}", v.expose_secret()),
                    _ => {
                        for (k, v) in resp.data.iter() {
                            println!("{}", key_value_line(k, v.expose_secret()).as_str());
                        }
                    }
                },
                (None, _) => print_structured(out, &resp),
            }
        }
        SecretCmd::List { prefix, page_size } => {
            let mut all = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let mut q = format!("?limit={page_size}");
                if let Some(p) = &prefix {
                    q.push_str(&format!("&prefix={}", query_escape(p)));
                }
                if let Some(a) = &after {
                    q.push_str(&format!("&after={}", query_escape(a)));
                }
                let page: ListSecretsResponse = nexus
                    .call(Method::GET, &format!("/v1/secrets/list{q}"), None::<&()>)
                    .await?;
                all.extend(page.secrets);
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            match out {
                Output::Text if all.is_empty() => match &prefix {
                    Some(p) => println!("no secrets under {p} that you may list"),
                    None => println!("no secrets that you may list"),
                },
                Output::Text => {
                    let now = std::time::SystemTime::now();
                    let rows: Vec<[String; 3]> = all
                        .iter()
                        .map(|s| {
                            [
                                s.path.clone(),
                                s.current_version.to_string(),
                                age(&s.updated_at, now),
                            ]
                        })
                        .collect();
                    print_table(["PATH", "VERSION", "UPDATED"], &rows);
                }
                _ => print_structured(out, &all),
            }
        }
        SecretCmd::Metadata { path } => {
            let m: SecretMetadata = nexus
                .call(
                    Method::GET,
                    &format!("/v1/secrets/metadata/{path}"),
                    None::<&()>,
                )
                .await?;
            match out {
                _ if out != Output::Text => print_structured(out, &m),
                _ => {
                    println!("path:            {}", m.path);
                    println!("current version: {}", m.current_version);
                    println!("latest version:  {}", m.latest_version);
                    println!("max versions:    {}", m.max_versions);
                    println!("created:         {}", timestamp(&m.created_at));
                    println!("updated:         {}", timestamp(&m.updated_at));
                    print_scope(&m);
                    let state = |v: &spike_core::api::VersionMetadata| {
                        if v.destroyed {
                            "destroyed".to_owned()
                        } else if let Some(d) = &v.deleted_at {
                            format!("deleted {}", timestamp(d))
                        } else {
                            "live".to_owned()
                        }
                    };
                    if m.versions.iter().any(|v| v.expires_at.is_some()) {
                        // A secret with a TTL: each version's expiry in a column of its own.
                        let rows: Vec<[String; 4]> = m
                            .versions
                            .iter()
                            .map(|v| {
                                [
                                    v.version.to_string(),
                                    timestamp(&v.created_at),
                                    state(v),
                                    v.expires_at.as_deref().map_or("-".into(), timestamp),
                                ]
                            })
                            .collect();
                        println!();
                        print_table(["VERSION", "CREATED", "STATE", "EXPIRES"], &rows);
                    } else if !m.versions.is_empty() {
                        let rows: Vec<[String; 3]> = m
                            .versions
                            .iter()
                            .map(|v| [v.version.to_string(), timestamp(&v.created_at), state(v)])
                            .collect();
                        println!();
                        print_table(["VERSION", "CREATED", "STATE"], &rows);
                    }
                }
            }
        }
        SecretCmd::Delete { path, versions } => {
            versions_op(nexus, out, "delete", &path, versions).await?;
        }
        SecretCmd::Undelete { path, versions } => {
            versions_op(nexus, out, "undelete", &path, versions).await?;
        }
        SecretCmd::Destroy { path, versions } => {
            versions_op(nexus, out, "destroy", &path, versions).await?;
        }
    }
    Ok(())
}

/// The scope lines of `secret metadata` (none for an unrestricted secret).
fn print_scope(m: &SecretMetadata) {
    if let Some(t) = m.ttl_seconds {
        println!("ttl:             {t}s (each version expires that long after its write)");
    }
    if !m.allowed_spiffe_ids.is_empty() {
        println!("allowed ids:     {}", m.allowed_spiffe_ids.join(", "));
    }
    if !m.allowed_destinations.is_empty() {
        println!("destinations:    {}", m.allowed_destinations.join(", "));
    }
}

async fn versions_op(
    nexus: &Nexus,
    out: Output,
    op: &str,
    path: &str,
    versions: Vec<u64>,
) -> CliResult<()> {
    let resp: VersionsResponse = nexus
        .call(
            Method::POST,
            &format!("/v1/secrets/{op}/{path}"),
            Some(&VersionsRequest { versions }),
        )
        .await?;
    match out {
        _ if out != Output::Text => print_structured(out, &resp),
        _ => {
            let list: Vec<String> = resp.changed.iter().map(u64::to_string).collect();
            match (resp.changed.is_empty(), resp.current_version) {
                (true, Some(_)) => println!("{op}: nothing to change in {path}"),
                (false, Some(v)) => println!(
                    "{op}: {path} versions {}; current version is now {v}",
                    list.join(",")
                ),
                // A caller that may not read or list the path is not told versions it did
                // not name.
                (true, None) => println!("{op}: {path} done"),
                (false, None) => println!("{op}: {path} versions {}", list.join(",")),
            }
        }
    }
    Ok(())
}

async fn read(nexus: &Nexus, path: &str, version: Option<u64>) -> CliResult<GetSecretResponse> {
    let q = version.map(|v| format!("?version={v}")).unwrap_or_default();
    nexus
        .call(
            Method::GET,
            &format!("/v1/secrets/data/{path}{q}"),
            None::<&()>,
        )
        .await
}

async fn write(
    nexus: &Nexus,
    path: &str,
    data: SecretMap,
    cas: Option<u64>,
    scope: Option<ScopeUpdate>,
) -> CliResult<PutSecretResponse> {
    let req = PutSecretRequest { data, cas, scope };
    nexus
        .call(Method::PUT, &format!("/v1/secrets/data/{path}"), Some(&req))
        .await
}

/// `POST /v1/secrets/scope`: a new version with the current values (which never leave Nexus)
/// and `scope` applied.
async fn update_scope(
    nexus: &Nexus,
    path: &str,
    cas: Option<u64>,
    scope: ScopeUpdate,
) -> CliResult<PutSecretResponse> {
    let req = UpdateScopeRequest { cas, scope };
    nexus
        .call(
            Method::POST,
            &format!("/v1/secrets/scope/{path}"),
            Some(&req),
        )
        .await
}

fn print_written(out: Output, path: &str, resp: &PutSecretResponse) {
    match (out, resp.version) {
        (Output::Text, Some(v)) if resp.unchanged => {
            println!("unchanged: {path} is already at version {v}");
        }
        (Output::Text, Some(v)) => println!("wrote {path} version {v}"),
        // Nexus shows version numbers only to callers that may read or list the path.
        (Output::Text, None) => println!("wrote {path} (a new version)"),
        _ => print_structured(out, resp),
    }
}

/// The key a single bare value is stored under.
const BARE_KEY: &str = "value";

/// Builds the secret's map from `KEY=VALUE` pairs and `--key/--value` pairs (one `--value`
/// without `--key` is the secret's one value, under `value`). A value of `-` is read from
/// stdin (once), so credentials need not appear in the process list.
fn collect_pairs(pairs: &[String], keys: &[String], values: &[String]) -> CliResult<SecretMap> {
    if let ([], [only], []) = (keys, values, pairs) {
        return collect_pairs(&[], &[BARE_KEY.to_owned()], std::slice::from_ref(only));
    }
    if keys.len() != values.len() {
        return Err(CliError::Usage(format!(
            "give one --value for each --key ({} keys, {} values); a single --value alone is the secret's one value",
            keys.len(),
            values.len()
        )));
    }
    let mut stdin_used = false;
    let mut map = SecretMap::new();
    let mut add = |k: &str, v: &str| -> CliResult<()> {
        if k.is_empty() {
            return Err(CliError::Usage("a key name cannot be empty".into()));
        }
        let value = if v == "-" {
            if stdin_used {
                return Err(CliError::Usage(
                    "only one value can be read from stdin".into(),
                ));
            }
            stdin_used = true;
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
            let trimmed = s.strip_suffix('\n').unwrap_or(&s).to_owned();
            zeroize::Zeroize::zeroize(&mut s);
            trimmed
        } else {
            v.to_owned()
        };
        if map.insert(k.to_owned(), SecretString::new(value)).is_some() {
            return Err(CliError::Usage(format!("key `{k}` is given twice")));
        }
        Ok(())
    };
    // One bare value (`spike secret put db/password s3cret`, or `-` for stdin) is stored
    // under the key `value`, as other tools do; `get` prints it back bare.
    if let [only] = pairs
        && keys.is_empty()
        && !only.contains('=')
    {
        add(BARE_KEY, only)?;
        return Ok(map);
    }
    for (i, p) in pairs.iter().enumerate() {
        // Never echo the argument: it may be a value typed without its key.
        let (k, v) = p.split_once('=').ok_or_else(|| {
            CliError::Usage(format!(
                "pair {} is not KEY=VALUE; write pairs like user=alice",
                i + 1
            ))
        })?;
        add(k, v)?;
    }
    for (k, v) in keys.iter().zip(values) {
        add(k, v)?;
    }
    if map.is_empty() {
        return Err(CliError::Usage(
            "nothing to write: give KEY=VALUE pairs, --key K --value V, or one --value".into(),
        ));
    }
    Ok(map)
}
