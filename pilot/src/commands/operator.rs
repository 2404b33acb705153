//! `spike operator ...`: break-glass export and restore, root-key rotation and rekey, backups.
//!
//! Custodian files are age files: Nexus encrypts each share to its custodian's X25519 key, so
//! the share is in clear only inside Nexus and, at restore, inside this process (in wiped
//! buffers) on its way back to Nexus over mTLS.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use http::Method;
use serde::Serialize;
use spike_core::api::{
    BreakGlassShare, Custodian, KeyChangeResponse, RecoverRequest, RecoverResponse, RekeyRequest,
    RestoreRequest, RestoreResponse,
};
use zeroize::Zeroizing;

use crate::cli::Output;
use crate::client::{CliError, CliResult, Nexus};
use crate::output::print_structured;

/// `spike operator ...`
#[derive(Debug, Subcommand)]
pub enum OperatorCmd {
    /// Export a new break-glass split of the root key: one file per custodian, each
    /// encrypted to that custodian's age key (role `recover`). Nexus refuses every earlier
    /// export's files from then on.
    Recover(RecoverArgs),
    /// Feed one custodian's break-glass share to a sealed Nexus whose keepers are gone
    /// (role `restore`). Repeat with other custodians' files until Nexus opens.
    Restore(RestoreArgs),
    /// Make a new root key and a new data key (superuser). New writes use the new data key at
    /// once; stored records are re-encrypted in the background, and then the old data key is
    /// destroyed. Keeper shares and break-glass files made before stop working, and with an
    /// old backup of the data directory they read only what that backup holds, never what is
    /// written or re-encrypted later.
    Rotate(WaitArgs),
    /// Deal a new keeper split with new `--shares`/`--threshold` (superuser). Like rotate, it
    /// makes a new root key and data key, so old keeper shares and break-glass files stop
    /// working.
    Rekey(RekeyArgs),
    /// Generate a custodian's age identity file and print its public key (`age1…`), for
    /// custodians without `age-keygen`.
    Keygen(KeygenArgs),
    /// Write a backup of the whole store to a file (superuser or role `backup`): one
    /// consistent snapshot taken while Nexus serves, sealed under the backup key and
    /// authenticated, with a readable manifest. It never holds the root key: reading it needs
    /// threshold shares (keepers' or break-glass) of the same root key.
    Backup(BackupArgs),
}

/// `spike operator backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the backup (mode 0600; an existing file is never overwritten).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

impl OperatorCmd {
    /// True for subcommands that never talk to Nexus (so need no SVID).
    pub fn needs_no_nexus(&self) -> bool {
        matches!(self, Self::Keygen(_))
    }
}

/// `spike operator recover`
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// A custodian as NAME=AGE_PUBLIC_KEY; repeat for each (at least 2). NAME names the file.
    #[arg(
        long = "custodian",
        value_name = "NAME=AGE_PUBLIC_KEY",
        required = true
    )]
    custodians: Vec<String>,
    /// How many custodians' files restore the root key (at least 2).
    #[arg(long)]
    threshold: u8,
    /// Directory for the files, `NAME.share.age` (mode 0600; created if missing; existing
    /// files are never overwritten).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
}

/// `spike operator restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A custodian's share file, as `spike operator recover` wrote it.
    share_file: PathBuf,
    /// The custodian's age identity file (`AGE-SECRET-KEY-1…` lines, as `age-keygen` or
    /// `spike operator keygen` write them).
    #[arg(long, value_name = "AGE_IDENTITY_FILE")]
    identity: PathBuf,
}

/// `spike operator rekey`
#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// Number of keeper shares: the number of keepers Nexus is configured with.
    #[arg(long)]
    shares: u8,
    /// How many keeper shares rebuild the root key.
    #[arg(long)]
    threshold: u8,
    #[command(flatten)]
    wait: WaitArgs,
}

/// Waiting for re-encryption after a rotation or rekey.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Wait until every stored record is re-encrypted under the new data key and the old data
    /// key is destroyed, printing progress (to stderr). Without it the command returns at once
    /// and `spike status` shows the progress.
    #[arg(long)]
    wait: bool,
}

/// `spike operator keygen`
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the identity (mode 0600; never overwritten).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Largest file read as a share or identity file: both are well under 4 KiB.
const MAX_FILE: u64 = 64 << 10;

/// The newest custodian-file format this build reads.
const SHARE_FORMAT: u32 = 1;

/// Runs an operator subcommand.
pub async fn run(nexus: &Nexus, out: Output, cmd: OperatorCmd) -> CliResult<()> {
    match cmd {
        OperatorCmd::Recover(a) => recover(nexus, out, a).await,
        OperatorCmd::Restore(a) => restore(nexus, out, a).await,
        OperatorCmd::Rotate(w) => {
            let r: KeyChangeResponse = nexus
                .call(Method::POST, "/v1/operator/rotate", None::<&()>)
                .await?;
            print_change(out, &r, "root key rotated");
            wait_for_reencryption(nexus, out, &w).await
        }
        OperatorCmd::Rekey(a) => {
            let req = RekeyRequest {
                shares: a.shares,
                threshold: a.threshold,
            };
            let r: KeyChangeResponse = nexus
                .call(Method::POST, "/v1/operator/rekey", Some(&req))
                .await?;
            print_change(out, &r, "rekeyed");
            wait_for_reencryption(nexus, out, &a.wait).await
        }
        OperatorCmd::Keygen(a) => run_local(out, OperatorCmd::Keygen(a)),
        OperatorCmd::Backup(a) => backup(nexus, out, a).await,
    }
}

/// `spike operator backup`: fetches the file, checks that it reads as a backup, writes it.
async fn backup(nexus: &Nexus, out: Output, a: BackupArgs) -> CliResult<()> {
    // Refused before anything is fetched, so an existing file is never touched.
    if a.out.exists() {
        return Err(CliError::Usage(format!(
            "{} exists; backups never overwrite a file",
            a.out.display()
        )));
    }
    let bytes = nexus
        .call_raw(Method::POST, "/v1/operator/backup", None::<&()>)
        .await?;
    let file = spike_core::backup::parse_file(&bytes)
        .map_err(|e| CliError::Other(anyhow::anyhow!("Nexus sent an unreadable backup: {e}")))?;
    write_new(&a.out, &bytes)?;
    let m = &file.manifest;
    match out {
        Output::Text => {
            let entries: u64 = m.tables.values().sum();
            println!(
                "backup written to {} ({} bytes): {entries} records, taken {}, deployment {}",
                a.out.display(),
                bytes.len(),
                m.created,
                m.deployment
            );
            let tables: Vec<String> = m.tables.iter().map(|(t, n)| format!("{t} {n}")).collect();
            println!("  tables: {}", tables.join(", "));
            if let Some(seq) = m.audit_head {
                println!("  audit chain head at the snapshot: seq {seq}");
            }
        }
        _ => print_structured(
            out,
            &serde_json::json!({ "file": a.out, "bytes": bytes.len(), "manifest": m }),
        ),
    }
    Ok(())
}

/// Runs a subcommand that needs no Nexus (see [`OperatorCmd::needs_no_nexus`]).
pub fn run_local(out: Output, cmd: OperatorCmd) -> CliResult<()> {
    let OperatorCmd::Keygen(a) = cmd else {
        return Err(CliError::Usage("this operator command needs Nexus".into()));
    };
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let secret = {
        use age::secrecy::ExposeSecret as _;
        Zeroizing::new(identity.to_string().expose_secret().to_owned())
    };
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let text = Zeroizing::new(format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        secret.as_str()
    ));
    write_new(&a.out, text.as_bytes())?;
    match out {
        Output::Text => println!("{recipient}"),
        _ => print_structured(
            out,
            &serde_json::json!({ "recipient": recipient, "identityFile": a.out }),
        ),
    }
    Ok(())
}

async fn recover(nexus: &Nexus, out: Output, a: RecoverArgs) -> CliResult<()> {
    let mut custodians = Vec::with_capacity(a.custodians.len());
    for c in &a.custodians {
        let Some((name, recipient)) = c.split_once('=') else {
            return Err(CliError::Usage(format!(
                "--custodian {c:?}: expected NAME=AGE_PUBLIC_KEY"
            )));
        };
        if !valid_name(name) {
            return Err(CliError::Usage(format!(
                "--custodian {name:?}: a name is 1 to 64 of [A-Za-z0-9._-], not starting with '.'"
            )));
        }
        custodians.push(Custodian {
            name: name.to_owned(),
            recipient: recipient.trim().to_owned(),
        });
    }
    // Refuse before asking Nexus, so a refusal changes nothing (an export retires the last).
    let paths: Vec<PathBuf> = custodians
        .iter()
        .map(|c| a.out_dir.join(format!("{}.share.age", c.name)))
        .collect();
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        return Err(CliError::Usage(format!(
            "{} already exists: move it away or choose another --out-dir",
            p.display()
        )));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&a.out_dir)
        .map_err(|e| io_error(&a.out_dir, "cannot create", e))?;
    let req = RecoverRequest {
        custodians,
        threshold: a.threshold,
    };
    let r: RecoverResponse = nexus
        .call(Method::POST, "/v1/operator/recover", Some(&req))
        .await?;
    let mut written = Vec::with_capacity(r.files.len());
    for f in &r.files {
        let path = a.out_dir.join(format!("{}.share.age", f.name));
        write_new(&path, f.file.as_bytes()).map_err(|e| {
            CliError::Other(anyhow::anyhow!(
                "{e}; the export (epoch {}) was made: run recover again to replace it",
                r.epoch
            ))
        })?;
        written.push(WrittenFile {
            name: f.name.clone(),
            index: f.index,
            path,
        });
    }
    match out {
        Output::Text => {
            println!(
                "break-glass export {}: {} custodian files; any {} of them restore the root key",
                r.epoch,
                written.len(),
                r.threshold
            );
            for w in &written {
                println!("  {} (share {}, for {})", w.path.display(), w.index, w.name);
            }
            println!(
                "Give each file only to its custodian, and keep them apart. Nexus now refuses \
                 the files of earlier exports, but their custodians could still combine them \
                 offline: to revoke an export, run `spike operator rotate --wait`, then recover \
                 again. Revoked files still open a backup of the data directory made before the \
                 rotation (the data as it was then), never the live data after it."
            );
        }
        _ => print_structured(
            out,
            &Exported {
                epoch: r.epoch,
                threshold: r.threshold,
                files: written,
            },
        ),
    }
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Exported {
    epoch: u32,
    threshold: u8,
    files: Vec<WrittenFile>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WrittenFile {
    name: String,
    index: u8,
    path: PathBuf,
}

async fn restore(nexus: &Nexus, out: Output, a: RestoreArgs) -> CliResult<()> {
    let share = decrypt_share(&a.share_file, &a.identity)?;
    let req = RestoreRequest {
        epoch: share.epoch,
        share: share.share,
    };
    let r: RestoreResponse = nexus
        .call(Method::POST, "/v1/operator/restore", Some(&req))
        .await?;
    match out {
        Output::Text if r.opened => {
            println!(
                "Nexus is open: the root key was rebuilt from {} break-glass shares; {} keepers \
                 received fresh shares.",
                r.received, r.keepers_acknowledged
            );
            println!(
                "The shares used passed through this machine: consider `spike operator rotate` \
                 and a new `spike operator recover`."
            );
        }
        Output::Text => println!(
            "share accepted ({} of {} received); {} more needed within {} s. Nexus stays sealed.",
            r.received, r.threshold, r.remaining, r.expires_in_secs
        ),
        _ => print_structured(out, &r),
    }
    Ok(())
}

/// Decrypts a custodian file with the identities in `identity_file`.
fn decrypt_share(share_file: &Path, identity_file: &Path) -> CliResult<BreakGlassShare> {
    let ids = read_identities(identity_file)?;
    let sealed = read_small(share_file)?;
    let plain = ids
        .iter()
        .find_map(|id| age::decrypt(id, &sealed).ok())
        .map(Zeroizing::new)
        .ok_or_else(|| {
            CliError::Other(anyhow::anyhow!(
                "cannot decrypt {} with {}: the file was encrypted to another custodian's key, \
                 or it is damaged",
                share_file.display(),
                identity_file.display()
            ))
        })?;
    #[derive(serde::Deserialize)]
    struct Probe {
        format: u32,
    }
    let not_a_share = || {
        CliError::Other(anyhow::anyhow!(
            "{} is not a SPIKE break-glass share file",
            share_file.display()
        ))
    };
    let probe: Probe = serde_json::from_slice(&plain).map_err(|_| not_a_share())?;
    if probe.format > SHARE_FORMAT {
        return Err(CliError::Other(anyhow::anyhow!(
            "{} was made by a newer SPIKE (format {}); upgrade spike",
            share_file.display(),
            probe.format
        )));
    }
    // The error never quotes the input: it holds the share.
    serde_json::from_slice(&plain).map_err(|_| not_a_share())
}

/// The X25519 identities of an age identity file (comments and blank lines skipped).
fn read_identities(path: &Path) -> CliResult<Vec<age::x25519::Identity>> {
    let bytes = Zeroizing::new(read_small(path)?);
    let text = std::str::from_utf8(&bytes).map_err(|_| no_identity(path))?;
    let ids: Vec<age::x25519::Identity> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.parse().ok())
        .collect();
    if ids.is_empty() {
        return Err(no_identity(path));
    }
    Ok(ids)
}

fn no_identity(path: &Path) -> CliError {
    CliError::Usage(format!(
        "{} holds no age X25519 identity (a line AGE-SECRET-KEY-1…)",
        path.display()
    ))
}

fn read_small(path: &Path) -> CliResult<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, "cannot read", e))?;
    if meta.len() > MAX_FILE {
        return Err(CliError::Usage(format!(
            "{} is too large to be a share or identity file",
            path.display()
        )));
    }
    std::fs::read(path).map_err(|e| io_error(path, "cannot read", e))
}

/// Creates `path` (mode 0600), refusing to replace an existing file.
fn write_new(path: &Path, bytes: &[u8]) -> CliResult<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error(path, "cannot create", e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_error(path, "cannot write", e))
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> CliError {
    CliError::Other(anyhow::anyhow!("{what} {}: {e}", path.display()))
}

/// A custodian name, as Nexus accepts it: safe as a file name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// How often `--wait` asks Nexus for progress.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// With `--wait`: polls `/v1/status` until no older data key is left, printing progress to
/// stderr whenever it changes.
async fn wait_for_reencryption(nexus: &Nexus, out: Output, w: &WaitArgs) -> CliResult<()> {
    if !w.wait {
        return Ok(());
    }
    let mut last = None;
    loop {
        let s: spike_core::api::StatusResponse =
            nexus.call(Method::GET, "/v1/status", None::<&()>).await?;
        let Some(r) = s.reencryption else {
            return Err(CliError::Other(anyhow::anyhow!(
                "Nexus reports no re-encryption progress (sealed, or too old a Nexus)"
            )));
        };
        if r.older_generations == 0 {
            if out == Output::Text {
                println!(
                    "re-encryption done: {} records moved to data key {}; the older data keys                      are destroyed",
                    r.done, r.generation
                );
            }
            return Ok(());
        }
        let now = (r.remaining, r.done, r.waiting_for.clone());
        if last.as_ref() != Some(&now) {
            match &r.waiting_for {
                Some(w) => eprintln!("re-encrypting: {} moved; waiting for {w}", r.done),
                None => eprintln!(
                    "re-encrypting: {} moved, {} left to check in this pass",
                    r.done, r.remaining
                ),
            }
            last = Some(now);
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

fn print_change(out: Output, r: &KeyChangeResponse, what: &str) {
    if out != Output::Text {
        print_structured(out, r);
        return;
    }
    println!(
        "{what}: new root key and data key, keeper epoch {} ({} shares, threshold {}); {} \
         keepers hold their new share",
        r.epoch, r.shares, r.threshold, r.keepers_acknowledged
    );
    println!(
        "New writes use the new data key; stored records are re-encrypted in the background \
         (`spike status` shows progress), then the old data key is destroyed."
    );
    if !r.complete {
        println!(
            "Fewer than {} keepers acknowledged: Nexus keeps the previous split too (a restart \
             still unseals) and finishes by itself once enough keepers are back.",
            r.threshold
        );
    }
    if r.break_glass_invalidated {
        println!(
            "Break-glass files exported before now no longer work{}: run `spike operator \
             recover` again.",
            if r.complete {
                ""
            } else {
                " once the keepers confirm"
            }
        );
    } else {
        println!("No break-glass export exists yet: run `spike operator recover`.");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_share_decrypts_only_with_its_custodians_identity() {
        let dir = tempfile::tempdir().unwrap();
        let alice = age::x25519::Identity::generate();
        let bob = age::x25519::Identity::generate();
        let write_id = |name: &str, id: &age::x25519::Identity| {
            use age::secrecy::ExposeSecret as _;
            let p = dir.path().join(name);
            let body = format!("# a comment\n\n{}\n", id.to_string().expose_secret());
            std::fs::write(&p, body).unwrap();
            p
        };
        let (alice_key, bob_key) = (write_id("alice.key", &alice), write_id("bob.key", &bob));
        let doc = serde_json::json!({
            "format": 1, "trustDomain": "spike.test", "custodian": "alice", "epoch": 3,
            "shares": 2, "threshold": 2, "createdAt": "2025-01-01T00:00:00Z",
            "share": { "index": 1, "value": "11".repeat(32) },
        });
        let file = age::encrypt_and_armor(&alice.to_public(), doc.to_string().as_bytes()).unwrap();
        let share_file = dir.path().join("alice.share.age");
        std::fs::write(&share_file, file).unwrap();

        let share = decrypt_share(&share_file, &alice_key).unwrap();
        assert_eq!((share.epoch, share.share.index()), (3, 1));
        let e = decrypt_share(&share_file, &bob_key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("another custodian's key"), "{e}");
        let e = decrypt_share(&share_file, &share_file)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no age X25519 identity"), "{e}");
        // Nothing echoes the share's value.
        let mut newer = doc;
        newer["format"] = 2.into();
        let f = age::encrypt_and_armor(&alice.to_public(), newer.to_string().as_bytes()).unwrap();
        std::fs::write(&share_file, f).unwrap();
        let e = decrypt_share(&share_file, &alice_key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("newer SPIKE") && !e.contains("1111"), "{e}");
    }

    #[test]
    fn keygen_writes_a_private_identity_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("custodian.key");
        let args = || OperatorCmd::Keygen(KeygenArgs { out: path.clone() });
        run_local(Output::Json, args()).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read_identities(&path).unwrap().len(), 1);
        let before = std::fs::read(&path).unwrap();
        assert!(run_local(Output::Json, args()).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
