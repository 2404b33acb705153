//! Break-glass: a second split of the root key, held by people.
//!
//! `recover` (role `recover`, while open) deals a fresh split of the root key
//! ([`SharePurpose::BreakGlass`](spike_core::crypto::SharePurpose), a new break-glass epoch,
//! the custodians' own count and threshold) and returns each share encrypted to its custodian's
//! age X25519 key, so Nexus never hands out a plaintext share and no one file rebuilds the key.
//! The record stores the split's parameters and a digest of each share (the shares derive
//! from the root key). Nexus accepts only the newest export's shares. An older export of the
//! same root key is refused but not revoked: its custodians could still combine their shares
//! offline, as with any Shamir split of an unchanged secret. Only a rotation (or rekey), which
//! replaces the root key, makes earlier files useless; export again after one.
//!
//! `restore` (role `restore`, only while sealed) takes one decrypted share per call and keeps
//! them in memory until `threshold` rebuild a root key that opens the wrapped data key; then
//! Nexus opens and deals fresh keeper shares. Shares received so far expire [`RESTORE_TTL`](crate::restore_shares::RESTORE_TTL)
//! after the last one. Any refusal leaves the received shares as they were.

use std::time::Instant;

use age::x25519::Recipient;
use spike_core::api::{
    BreakGlassShare, CustodianFile, RecoverRequest, RecoverResponse, RestoreRequest,
    RestoreResponse,
};
use spike_core::crypto::ShareParams;
use spike_core::error::ErrorCode;
use zeroize::Zeroizing;

use crate::error::{AppError, AppResult};
use crate::keys::BreakGlassExport;
use crate::restore_shares::{Added, PendingRestore};
use crate::state::{Nexus, Status};
use crate::unseal;

/// Format of [`BreakGlassShare`] documents this build writes and reads.
const SHARE_FORMAT: u32 = 1;

/// Longest custodian name.
const MAX_NAME: usize = 64;

/// `POST /v1/operator/recover`.
pub(crate) async fn export(nexus: &Nexus, req: RecoverRequest) -> AppResult<RecoverResponse> {
    let opened = nexus.opened()?;
    let custodians = check_custodians(&req)?;
    let count = u8::try_from(custodians.len()).map_err(|_| bad("at most 255 custodians"))?;
    if req.threshold < 2 {
        return Err(bad(
            "threshold must be at least 2, so no single custodian file rebuilds the root key",
        ));
    }
    let _guard = nexus.open_lock().lock().await;
    let (raw, record) = nexus.read_init().await?;
    if record.previous().is_some() {
        // A crash before the pending change completes makes Nexus redo it under yet another
        // root key, which would silently void an export made now.
        return Err(AppError::new(
            ErrorCode::Unavailable,
            "a root-key rotation or rekey is still waiting for keepers; retry once it completes",
        ));
    }
    let epoch = record
        .next_break_glass_epoch()
        .map_err(|e| bad(&e.to_string()))?;
    let params = ShareParams::new(count, req.threshold, epoch).map_err(|e| bad(&e.to_string()))?;
    let shares = opened
        .keys
        .break_glass_shares(&params)
        .map_err(|e| AppError::internal("break-glass split", e))?;
    let created_at = crate::clock::now();
    let export = BreakGlassExport::new(params, &shares);
    let mut files = Vec::with_capacity(shares.len());
    for ((name, recipient), share) in custodians.into_iter().zip(shares) {
        let index = share.index();
        let doc = BreakGlassShare {
            format: SHARE_FORMAT,
            trust_domain: nexus.trust_domain().to_string(),
            custodian: name.clone(),
            epoch,
            shares: count,
            threshold: req.threshold,
            share,
            created_at: created_at.clone(),
        };
        // Serialized into a wiped buffer sized up front, so no reallocation leaves a copy.
        let mut plain = Zeroizing::new(Vec::with_capacity(1024));
        serde_json::to_writer(&mut *plain, &doc)
            .map_err(|e| AppError::internal("break-glass encode", e))?;
        let file = age::encrypt_and_armor(&recipient, &plain)
            .map_err(|e| AppError::internal("age encryption", e))?;
        files.push(CustodianFile { name, index, file });
    }
    // Only once every file is made: this commit retires the previous export.
    nexus
        .commit_init(&raw, &record.with_break_glass(export))
        .await?;
    tracing::info!(
        epoch,
        custodians = count,
        threshold = req.threshold,
        "break-glass shares exported"
    );
    Ok(RecoverResponse {
        epoch,
        threshold: req.threshold,
        files,
    })
}

/// Validates names (they become file names) and parses the recipients.
fn check_custodians(req: &RecoverRequest) -> AppResult<Vec<(String, Recipient)>> {
    if req.custodians.len() < 2 {
        return Err(bad(
            "name at least 2 custodians, so no single custodian file rebuilds the root key",
        ));
    }
    let mut out: Vec<(String, Recipient)> = Vec::with_capacity(req.custodians.len());
    for c in &req.custodians {
        if !valid_name(&c.name) {
            return Err(bad(&format!(
                "custodian name {:?} is invalid: use 1 to {MAX_NAME} of [A-Za-z0-9._-], not starting with '.'",
                c.name.chars().take(MAX_NAME + 1).collect::<String>()
            )));
        }
        if out.iter().any(|(n, _)| *n == c.name) {
            return Err(bad(&format!("custodian {} is named twice", c.name)));
        }
        let recipient: Recipient = c.recipient.trim().parse().map_err(|_| {
            bad(&format!(
                "custodian {}: the recipient is not an age X25519 public key (age1…)",
                c.name
            ))
        })?;
        // Compared in canonical form, so a key written in other letter case is the same key.
        if let Some((other, _)) = out
            .iter()
            .find(|(_, r)| r.to_string() == recipient.to_string())
        {
            return Err(bad(&format!(
                "custodians {other} and {} have the same public key: whoever holds it could decrypt both shares, so each custodian needs a key of their own",
                c.name
            )));
        }
        out.push((c.name.clone(), recipient));
    }
    Ok(out)
}

/// A custodian name: safe as a file name on every platform.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn bad(message: &str) -> AppError {
    AppError::new(ErrorCode::BadRequest, message)
}

/// Drops pending restore shares that have expired, so they do not sit in memory until the
/// next restore call. Called from the recovery loop's sealed tick.
pub(crate) fn drop_expired(nexus: &Nexus, now: Instant) {
    let mut slot = nexus
        .pending_restore()
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    *slot = PendingRestore::live(slot.take(), now);
}

/// `POST /v1/operator/restore`.
pub(crate) async fn restore(nexus: &Nexus, req: RestoreRequest) -> AppResult<RestoreResponse> {
    let _guard = nexus.open_lock().lock().await;
    match nexus.status() {
        Status::Open(_) => {
            return Err(bad(
                "Nexus is unsealed: restore is only for a sealed Nexus whose keepers are gone; nothing changed",
            ));
        }
        Status::Uninitialized => {
            return Err(AppError::new(
                ErrorCode::NotInitialized,
                "Nexus has no init record: restore needs the data directory the shares were exported from",
            ));
        }
        Status::Sealed(_) => {}
    }
    let (raw, record) = nexus.read_init().await?;
    let Some((split, export, via_previous)) = record.break_glass_split(req.epoch) else {
        return Err(bad(&match record.live_break_glass_epoch() {
            Some(live) => format!(
                "this share is from break-glass export {}, which no longer works (a newer \
                 export, a rotation or a rekey replaced it); use the files of export {live}",
                req.epoch
            ),
            None => format!(
                "this share is from break-glass export {}, which no longer works (a rotation \
                 or a rekey replaced it), and no newer export exists",
                req.epoch
            ),
        }));
    };
    if !export.accepts(&req.share) {
        return Err(bad(&format!(
            "this share is not one of break-glass export {}'s (altered, or from an earlier \
             export of the same root key); nothing changed",
            req.epoch
        )));
    }
    let params = export
        .params()
        .map_err(|e| AppError::internal("init record", e))?;
    let now = Instant::now();
    // Taken out of the mutex (the open lock serializes restores) and put back unless Nexus
    // opens, so no refusal loses the shares received before.
    let taken = nexus
        .pending_restore()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let mut pending =
        PendingRestore::live(taken, now).unwrap_or_else(|| PendingRestore::new(req.epoch, now));
    let put_back = |p: PendingRestore| {
        *nexus
            .pending_restore()
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(p);
    };
    if pending.epoch != req.epoch && !pending.shares.is_empty() {
        let msg = format!(
            "shares of break-glass export {} are being collected ({} received): send shares of \
             that export, or wait {} s for them to expire; nothing changed",
            pending.epoch,
            pending.received(),
            pending.expires_in(now)
        );
        put_back(pending);
        return Err(bad(&msg));
    }
    pending.epoch = req.epoch;
    let added = match pending.add(req.share, now) {
        Ok(a) => a,
        Err(e) => {
            put_back(pending);
            return Err(e);
        }
    };
    let threshold = params.threshold();
    if pending.shares.len() < usize::from(threshold) {
        let answer = RestoreResponse {
            opened: false,
            received: pending.received(),
            threshold,
            remaining: threshold.saturating_sub(pending.received()),
            expires_in_secs: pending.expires_in(now),
            keepers_acknowledged: 0,
        };
        tracing::info!(
            epoch = req.epoch,
            received = answer.received,
            threshold,
            "break-glass share received"
        );
        put_back(pending);
        return Ok(answer);
    }
    match split.rebuild(&params, &pending.shares) {
        Ok((root, ring)) => {
            match unseal::open_rebuilt(nexus, &raw, &record, via_previous, root, ring).await {
                Ok(acked) => {
                    tracing::info!(
                        epoch = req.epoch,
                        keepers_acknowledged = acked,
                        "root key rebuilt from break-glass shares; Nexus is open"
                    );
                    Ok(RestoreResponse {
                        opened: true,
                        received: pending.received(),
                        threshold,
                        remaining: 0,
                        expires_in_secs: 0,
                        keepers_acknowledged: acked,
                    })
                }
                Err(unseal::UnsealError::Stale(e)) => {
                    put_back(pending);
                    // The operator restoring must see why (the rollback runbook applies).
                    Err(AppError::new(ErrorCode::Unavailable, e.to_string()))
                }
                Err(e) => {
                    put_back(pending);
                    Err(AppError::internal("open after restore", e))
                }
            }
        }
        Err(e) => {
            // Every share matched its digest, so the record itself is inconsistent.
            if added == Added::New {
                pending.shares.pop();
            }
            put_back(pending);
            Err(AppError::internal(
                "break-glass shares do not rebuild the root key",
                e,
            ))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use spike_core::api::Custodian;
    use spike_core::crypto::Share;

    use super::*;
    use crate::fixtures::{keeper_answers, open_nexus, restart};
    use crate::restore_shares::RESTORE_TTL;
    use crate::rotation::{Change, change};

    fn custodians(n: usize) -> (Vec<age::x25519::Identity>, Vec<Custodian>) {
        let ids: Vec<_> = (0..n).map(|_| age::x25519::Identity::generate()).collect();
        let cs = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Custodian {
                name: format!("c{i}"),
                recipient: id.to_public().to_string(),
            })
            .collect();
        (ids, cs)
    }

    /// What `spike operator restore` sends for a custodian's file.
    fn decrypt(file: &CustodianFile, id: &age::x25519::Identity) -> RestoreRequest {
        let plain = Zeroizing::new(age::decrypt(id, file.file.as_bytes()).unwrap());
        let doc: BreakGlassShare = serde_json::from_slice(&plain).unwrap();
        assert_eq!(doc.custodian, file.name);
        assert_eq!(doc.trust_domain, crate::fixtures::TD);
        RestoreRequest {
            epoch: doc.epoch,
            share: doc.share,
        }
    }

    #[tokio::test]
    async fn recover_refuses_bad_input_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, n) = open_nexus(dir.path()).await;
        let (raw, _) = n.read_init().await.unwrap();
        let (_, cs) = custodians(3);
        let mut dup = cs.clone();
        dup[1].name = dup[0].name.clone();
        let mut not_age = cs.clone();
        not_age[2].recipient = "ssh-ed25519 AAAA".into();
        let mut bad_name = cs.clone();
        bad_name[0].name = "../etc".into();

        for (custodians, threshold, needle) in [
            (cs[..1].to_vec(), 1, "at least 2 custodians"),
            (cs.clone(), 1, "at least 2"),
            (cs.clone(), 4, "threshold cannot exceed"),
            (dup, 2, "named twice"),
            (not_age, 2, "not an age X25519 public key"),
            (bad_name, 2, "is invalid"),
        ] {
            let e = export(
                &n,
                RecoverRequest {
                    custodians,
                    threshold,
                },
            )
            .await
            .unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadRequest);
            assert!(e.0.message.contains(needle), "{}", e.0.message);
            assert_eq!(n.read_init().await.unwrap().0, raw);
        }
    }

    /// Two custodian "names" for one key: whoever holds it decrypts two shares, which with a
    /// threshold of 2 rebuilds the root key alone.
    #[tokio::test]
    async fn recover_refuses_one_public_key_for_two_custodians() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, n) = open_nexus(dir.path()).await;
        let (raw, _) = n.read_init().await.unwrap();
        let (_, cs) = custodians(3);
        let same = cs[0].recipient.clone();
        // The same key verbatim, and in upper case (the same key in bech32).
        for recipient in [same.clone(), same.to_uppercase()] {
            let mut shared = cs.clone();
            shared[2].recipient = recipient;
            let e = export(
                &n,
                RecoverRequest {
                    custodians: shared,
                    threshold: 2,
                },
            )
            .await
            .unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadRequest);
            assert!(
                e.0.message.contains("have the same public key"),
                "{}",
                e.0.message
            );
            assert_eq!(n.read_init().await.unwrap().0, raw, "nothing was exported");
        }
    }

    #[tokio::test]
    async fn restore_opens_a_sealed_nexus_one_share_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (store, n1) = open_nexus(dir.path()).await;
        let ciphertext = n1
            .opened()
            .unwrap()
            .keys
            .encrypt_value("app/db", 1, 1, b"s3cret")
            .unwrap();
        let (ids, cs) = custodians(3);
        let first = export(
            &n1,
            RecoverRequest {
                custodians: cs.clone(),
                threshold: 2,
            },
        )
        .await
        .unwrap();
        let second = export(
            &n1,
            RecoverRequest {
                custodians: cs,
                threshold: 2,
            },
        )
        .await
        .unwrap();
        assert_eq!((first.epoch, second.epoch), (1, 2));
        assert_eq!(second.files.len(), 3);
        for f in &second.files {
            assert!(f.file.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        }
        // Only the custodian's key opens their file.
        assert!(age::decrypt(&ids[1], second.files[0].file.as_bytes()).is_err());

        // Every keeper is gone: a new Nexus on the same data stays sealed.
        let (n2, still) = restart(&store, dir.path(), &[]).await;
        assert!(still.is_err());
        let refused = |e: AppError, needle: &str| {
            assert_eq!(e.code(), ErrorCode::BadRequest);
            assert!(e.0.message.contains(needle), "{}", e.0.message);
        };
        // A file of the first export is refused, also relabelled as the second.
        refused(
            restore(&n2, decrypt(&first.files[0], &ids[0]))
                .await
                .unwrap_err(),
            "use the files of export 2",
        );
        let mut relabelled = decrypt(&first.files[0], &ids[0]);
        relabelled.epoch = 2;
        refused(
            restore(&n2, relabelled).await.unwrap_err(),
            "not one of break-glass export 2",
        );
        let a = restore(&n2, decrypt(&second.files[0], &ids[0]))
            .await
            .unwrap();
        assert_eq!((a.opened, a.received, a.remaining), (false, 1, 1));
        assert!(a.expires_in_secs > 0 && a.expires_in_secs <= RESTORE_TTL.as_secs());
        // The same share again changes nothing; the refusals above changed nothing either.
        let again = restore(&n2, decrypt(&second.files[0], &ids[0]))
            .await
            .unwrap();
        assert_eq!((again.received, again.remaining), (1, 1));
        assert!(n2.is_sealed());

        let b = restore(&n2, decrypt(&second.files[2], &ids[2]))
            .await
            .unwrap();
        assert!(b.opened);
        assert_eq!((b.received, b.remaining), (2, 0));
        let keys = &n2.opened().unwrap().keys;
        assert_eq!(
            keys.decrypt_value("app/db", 1, 1, &ciphertext)
                .unwrap()
                .expose_secret(),
            b"s3cret"
        );
        refused(
            restore(&n2, decrypt(&second.files[1], &ids[1]))
                .await
                .unwrap_err(),
            "unsealed",
        );
        // Keepers (here: played by hand) get fresh shares that unseal on their own.
        let answers = keeper_answers(keys);
        let (_, opened) = restart(&store, dir.path(), &answers).await;
        opened.unwrap();
    }

    #[tokio::test]
    async fn a_rotation_retires_the_export_once_the_keepers_confirm() {
        let dir = tempfile::tempdir().unwrap();
        let (store, n1) = open_nexus(dir.path()).await;
        let (ids, cs) = custodians(2);
        let files = export(
            &n1,
            RecoverRequest {
                custodians: cs,
                threshold: 2,
            },
        )
        .await
        .unwrap()
        .files;
        let r = change(&n1, Change::Rotate).await.unwrap();
        assert!(r.break_glass_invalidated && !r.complete);
        // While the rotation is pending (no keeper confirmed), the old export still restores.
        let (n2, _) = restart(&store, dir.path(), &[]).await;
        assert!(
            !restore(&n2, decrypt(&files[0], &ids[0]))
                .await
                .unwrap()
                .opened
        );
        assert!(
            restore(&n2, decrypt(&files[1], &ids[1]))
                .await
                .unwrap()
                .opened
        );
        // Once the keepers confirm, it no longer does.
        let answers = keeper_answers(&n2.opened().unwrap().keys);
        let epoch = answers[0].1.epoch;
        {
            let _guard = n2.open_lock().lock().await;
            assert!(
                crate::unseal::finish_if_confirmed(&n2, epoch, 3)
                    .await
                    .unwrap()
            );
        }
        let (n3, _) = restart(&store, dir.path(), &[]).await;
        let e = restore(&n3, decrypt(&files[0], &ids[0])).await.unwrap_err();
        assert!(e.0.message.contains("no newer export"), "{}", e.0.message);
    }

    fn share(i: u8, v: u8) -> Share {
        Share::new(i, &[v; 32]).unwrap()
    }

    #[test]
    fn pending_shares_expire_after_the_last_one() {
        let t0 = Instant::now();
        let mut p = PendingRestore::new(3, t0);
        assert_eq!(p.add(share(1, 1), t0).unwrap(), Added::New);
        let t1 = t0 + Duration::from_secs(500);
        let mut p = PendingRestore::live(Some(p), t1).unwrap();
        assert_eq!(p.add(share(2, 2), t1).unwrap(), Added::New);
        // 10 minutes after the first share but not after the last: still there.
        let t2 = t0 + RESTORE_TTL + Duration::from_secs(1);
        let p = PendingRestore::live(Some(p), t2).unwrap();
        assert_eq!(p.received(), 2);
        assert!(PendingRestore::live(Some(p), t1 + RESTORE_TTL).is_none());
    }

    #[tokio::test]
    async fn expired_pending_shares_are_dropped_without_another_restore_call() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, n) = open_nexus(dir.path()).await;
        let t0 = Instant::now();
        let mut p = PendingRestore::new(1, t0);
        p.add(share(1, 1), t0).unwrap();
        *n.pending_restore().lock().unwrap() = Some(p);
        drop_expired(&n, t0 + Duration::from_secs(1));
        assert!(
            n.pending_restore().lock().unwrap().is_some(),
            "not expired yet"
        );
        drop_expired(&n, t0 + RESTORE_TTL + Duration::from_secs(1));
        assert!(
            n.pending_restore().lock().unwrap().is_none(),
            "expired shares stay in memory"
        );
    }

    #[test]
    fn a_repeated_share_changes_nothing_and_a_conflicting_one_is_refused() {
        let t0 = Instant::now();
        let mut p = PendingRestore::new(1, t0);
        p.add(share(1, 1), t0).unwrap();
        assert_eq!(p.add(share(1, 1), t0).unwrap(), Added::Again);
        let e = p.add(share(1, 9), t0).unwrap_err();
        assert!(e.0.message.contains("index 1"), "{}", e.0.message);
        assert_eq!(p.received(), 1);
        assert!(p.shares[0] == share(1, 1));
    }

    #[test]
    fn custodian_names_are_safe_file_names() {
        for ok in ["alice", "bob.smith", "ops-1", "A_B"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "..", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
