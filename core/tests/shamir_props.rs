//! Property tests of the deterministic Shamir split of the root key ([`split`], [`share_for`],
//! [`combine`]), through the public API only.
//!
//! Root keys are generated from proptest's bytes, so a failure reproduces: a one-share,
//! threshold-one split is documented to be the root key itself, so [`combine`] of that one
//! share builds a root key with given bytes, and [`split`] with those parameters reads a root
//! key's bytes back (both are checked here first).
//!
//! For random root keys, purposes, epochs and valid `(shares, threshold)` with
//! `shares <= 7`, it proves that:
//!
//! - `split` gives `shares` shares with indices `1..=shares`, the same ones every time, and
//!   `share_for(i)` is element `i` of it (indices `0` and `shares + 1` are refused);
//! - every subset of at least `threshold` distinct shares, in any order, recovers exactly the
//!   root key, and every smaller subset is refused with [`CryptoError::TooFewShares`];
//! - a repeated index is refused with [`CryptoError::DuplicateShare`], whatever the count, and
//!   an index above `shares` with [`CryptoError::ShareIndexOutOfRange`];
//! - an altered share (any non-zero change to any byte) in any recovering subset gives a
//!   different key without an error, as `combine` documents, and that key fails the check
//!   [`RootKey::unwrap`] makes on the wrapped data key;
//! - `ShareParams::new` accepts exactly the documented parameters, and shares survive their
//!   serde form.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use spike_core::crypto::{
    CryptoError, DataKey, KEY_LEN, RootKey, Share, ShareParams, SharePurpose, combine, share_for,
    split,
};

const MAX_SHARES: u8 = 7;

const PURPOSES: [SharePurpose; 2] = [SharePurpose::Keepers, SharePurpose::BreakGlass];

/// Proptest's config with `cases` cases and failures saved next to this file (the default
/// looks for a `lib.rs` beside the test, which an integration test does not have).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::with_cases(cases)
    }
}

/// The one-share, threshold-one parameters, whose only share is the root key.
fn whole() -> ShareParams {
    ShareParams::new(1, 1, 0).unwrap()
}

/// The root key with these bytes.
fn root_from(bytes: &[u8; KEY_LEN]) -> RootKey {
    combine(&whole(), &[Share::new(1, bytes).unwrap()]).unwrap()
}

/// The bytes of a root key.
fn bytes_of(root: &RootKey) -> [u8; KEY_LEN] {
    let shares = split(root, SharePurpose::Keepers, &whole()).unwrap();
    *shares[0].expose_secret()
}

/// Valid split parameters with at most [`MAX_SHARES`] shares: threshold 1 only for a single
/// share, otherwise 2 to `shares`.
fn params() -> impl Strategy<Value = ShareParams> {
    (1..=MAX_SHARES, any::<u32>())
        .prop_flat_map(|(n, epoch)| {
            let low = if n == 1 { 1 } else { 2 };
            (Just(n), low..=n, Just(epoch))
        })
        .prop_map(|(n, t, epoch)| ShareParams::new(n, t, epoch).unwrap())
}

fn purpose() -> impl Strategy<Value = SharePurpose> {
    select(&PURPOSES[..])
}

/// A root key's bytes, the purpose and parameters of its split, and a permutation of the
/// share positions (the order shares are handed to `combine` in).
fn setup() -> impl Strategy<Value = ([u8; KEY_LEN], SharePurpose, ShareParams, Vec<usize>)> {
    (any::<[u8; KEY_LEN]>(), purpose(), params()).prop_flat_map(|(key, purpose, p)| {
        let order: Vec<usize> = (0..usize::from(p.shares())).collect();
        (
            Just(key),
            Just(purpose),
            Just(p),
            Just(order).prop_shuffle(),
        )
    })
}

/// The shares at the positions set in `mask`, in the order `order` gives.
fn subset(shares: &[Share], order: &[usize], mask: u32) -> Vec<Share> {
    order
        .iter()
        .filter(|&&i| mask & (1 << i) != 0)
        .map(|&i| shares[i].clone())
        .collect()
}

/// The shares with one byte of one share changed by a non-zero `delta`.
fn altered(shares: &[Share], which: usize, byte: usize, delta: u8) -> Vec<Share> {
    let mut out = shares.to_vec();
    let mut value = *out[which].expose_secret();
    value[byte] ^= delta;
    out[which] = Share::new(out[which].index(), &value).unwrap();
    out
}

fn check_recovers(recovered: &RootKey, root: &RootKey) -> Result<(), TestCaseError> {
    prop_assert_eq!(recovered.key_id(), root.key_id());
    prop_assert_eq!(bytes_of(recovered), bytes_of(root));
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// The two helpers the other properties rely on are inverse, and agree with the split.
    #[test]
    fn one_of_one_share_is_the_root_key(key in any::<[u8; KEY_LEN]>(), purpose in purpose()) {
        let root = root_from(&key);
        prop_assert_eq!(bytes_of(&root), key);
        let shares = split(&root, purpose, &whole()).unwrap();
        prop_assert_eq!(shares.len(), 1);
        prop_assert_eq!(shares[0].index(), 1);
        prop_assert_eq!(shares[0].expose_secret(), &key);
        prop_assert_eq!(&share_for(&root, purpose, &whole(), 1).unwrap(), &shares[0]);
        // The same key through `generate`: wrap under one, unwrap under its rebuilt copy.
        let generated = RootKey::generate().unwrap();
        let copy = root_from(&bytes_of(&generated));
        prop_assert_eq!(copy.key_id(), generated.key_id());
        let dek = DataKey::generate().unwrap();
        let back = copy.unwrap(&generated.wrap(&dek).unwrap()).unwrap();
        prop_assert_eq!(back.key_id(), dek.key_id());
    }

    #[test]
    fn split_is_deterministic_and_share_for_matches_it(
        (key, purpose, p, _order) in setup(),
    ) {
        let root = root_from(&key);
        let shares = split(&root, purpose, &p).unwrap();
        prop_assert_eq!(shares.len(), usize::from(p.shares()));
        for (i, share) in shares.iter().enumerate() {
            prop_assert_eq!(usize::from(share.index()), i + 1);
            let alone = share_for(&root, purpose, &p, share.index()).unwrap();
            prop_assert_eq!(&alone, share);
        }
        prop_assert_eq!(&split(&root, purpose, &p).unwrap(), &shares);
        // Recomputed from a second copy of the same key: the same shares.
        prop_assert_eq!(&split(&root_from(&key), purpose, &p).unwrap(), &shares);
        for bad in [0, p.shares() + 1] {
            let err = share_for(&root, purpose, &p, bad).unwrap_err();
            prop_assert!(
                matches!(err, CryptoError::ShareIndexOutOfRange { index, shares }
                    if index == bad && shares == p.shares()),
                "{:?}",
                err
            );
        }
    }

    /// Every subset of the shares, in a shuffled order: at least `threshold` recovers the
    /// key, fewer is refused.
    #[test]
    fn any_threshold_subset_recovers((key, purpose, p, order) in setup()) {
        let root = root_from(&key);
        let shares = split(&root, purpose, &p).unwrap();
        let need = usize::from(p.threshold());
        for mask in 0u32..(1 << p.shares()) {
            let chosen = subset(&shares, &order, mask);
            let result = combine(&p, &chosen);
            if chosen.len() >= need {
                check_recovers(&result.unwrap(), &root)?;
            } else {
                let err = result.map(drop).unwrap_err();
                prop_assert!(
                    matches!(err, CryptoError::TooFewShares { got, need: t }
                        if got == chosen.len() && t == p.threshold()),
                    "{:?}",
                    err
                );
            }
        }
    }

    /// A repeated index is refused, whether the copy is exact or altered, and whether or not
    /// enough distinct shares are present.
    #[test]
    fn repeated_indices_are_refused(
        (key, purpose, p, order) in setup(),
        mask in any::<u32>(),
        dup in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        delta in any::<u8>(),
    ) {
        let root = root_from(&key);
        let shares = split(&root, purpose, &p).unwrap();
        let mut chosen = subset(&shares, &order, mask | 1);
        let copy = chosen[dup.index(chosen.len())].clone();
        let copy = altered(&[copy], 0, 0, delta).remove(0);
        let index = copy.index();
        chosen.insert(at.index(chosen.len() + 1), copy);
        let err = combine(&p, &chosen).map(drop).unwrap_err();
        prop_assert!(
            matches!(err, CryptoError::DuplicateShare { index: i } if i == index),
            "{:?}",
            err
        );
    }

    /// A share whose index is beyond the split is refused, even among enough good ones.
    #[test]
    fn out_of_range_indices_are_refused(
        (key, purpose, p, order) in setup(),
        index in (MAX_SHARES + 1)..=u8::MAX,
        extra in any::<u8>(),
        value in any::<[u8; KEY_LEN]>(),
        at in any::<prop::sample::Index>(),
    ) {
        let root = root_from(&key);
        let shares = split(&root, purpose, &p).unwrap();
        let mut chosen = subset(&shares, &order, u32::MAX);
        // Any index above `shares`: just above it, or well beyond.
        let index = if extra % 2 == 0 { p.shares() + 1 } else { index };
        chosen.insert(at.index(chosen.len() + 1), Share::new(index, &value).unwrap());
        let err = combine(&p, &chosen).map(drop).unwrap_err();
        prop_assert!(
            matches!(err, CryptoError::ShareIndexOutOfRange { index: i, shares }
                if i == index && shares == p.shares()),
            "{:?}",
            err
        );
        // Index 0 is not a share at all.
        let zero = Share::new(0, &value).map(drop);
        prop_assert!(matches!(zero, Err(CryptoError::Malformed { .. })), "{:?}", zero);
    }

    /// Changing any byte of any share in a recovering subset gives another key, which the
    /// wrapped data key then refuses.
    #[test]
    fn an_altered_share_gives_a_key_that_fails_the_check(
        (key, purpose, p, order) in setup(),
        extra_mask in any::<u32>(),
        which in any::<prop::sample::Index>(),
        byte in 0..KEY_LEN,
        delta in 1..=u8::MAX,
    ) {
        let root = root_from(&key);
        let dek = DataKey::generate().unwrap();
        let wrapped = root.wrap(&dek).unwrap();
        let shares = split(&root, purpose, &p).unwrap();
        // The first `threshold` positions of the order, plus any others.
        let base: u32 = order[..usize::from(p.threshold())].iter().map(|&i| 1 << i).sum();
        let chosen = subset(&shares, &order, base | extra_mask);
        prop_assert!(chosen.len() >= usize::from(p.threshold()));
        let bad = altered(&chosen, which.index(chosen.len()), byte, delta);
        let wrong = combine(&p, &bad).unwrap();
        prop_assert_ne!(bytes_of(&wrong), bytes_of(&root));
        let err = wrong.unwrap(&wrapped).map(drop).unwrap_err();
        prop_assert!(
            matches!(err, CryptoError::KeyMismatch { .. } | CryptoError::Unauthentic),
            "{:?}",
            err
        );
        // The unaltered subset passes the same check.
        let right = combine(&p, &chosen).unwrap();
        prop_assert_eq!(right.unwrap(&wrapped).unwrap().key_id(), dek.key_id());
    }

    /// Shares of another epoch or purpose do not mix in: replacing one share of a recovering
    /// subset by the same-index share of an unrelated split gives another key.
    #[test]
    fn shares_of_another_split_do_not_combine(
        (key, purpose, p, order) in setup(),
        which in any::<prop::sample::Index>(),
        other_epoch in any::<bool>(),
    ) {
        // With threshold 1 the only share is the root key itself, in every split.
        prop_assume!(p.threshold() >= 2);
        let root = root_from(&key);
        let shares = split(&root, purpose, &p).unwrap();
        let other_params = ShareParams::new(p.shares(), p.threshold(), p.epoch().wrapping_add(1))
            .unwrap();
        let (other_purpose, other_params) = if other_epoch {
            (purpose, other_params)
        } else {
            let flipped = if purpose == SharePurpose::Keepers {
                SharePurpose::BreakGlass
            } else {
                SharePurpose::Keepers
            };
            (flipped, p)
        };
        let foreign = split(&root, other_purpose, &other_params).unwrap();
        let base: u32 = order[..usize::from(p.threshold())].iter().map(|&i| 1 << i).sum();
        let mut chosen = subset(&shares, &order, base);
        let w = which.index(chosen.len());
        let index = chosen[w].index();
        chosen[w] = foreign[usize::from(index) - 1].clone();
        prop_assert_eq!(chosen[w].index(), index);
        prop_assert_ne!(bytes_of(&combine(&p, &chosen).unwrap()), bytes_of(&root));
    }

    #[test]
    fn shares_survive_serde((key, purpose, p, _order) in setup()) {
        for share in split(&root_from(&key), purpose, &p).unwrap() {
            let json = serde_json::to_string(&share).unwrap();
            prop_assert_eq!(&serde_json::from_str::<Share>(&json).unwrap(), &share);
        }
        let json = serde_json::to_string(&p).unwrap();
        prop_assert_eq!(serde_json::from_str::<ShareParams>(&json).unwrap(), p);
    }

    /// Valid exactly when `1 <= threshold <= shares` and `threshold >= 2` unless `shares == 1`.
    #[test]
    fn share_params_follow_the_rules(n in any::<u8>(), t in any::<u8>(), epoch in any::<u32>()) {
        let valid = 1 <= t && t <= n && (t >= 2 || n == 1);
        match ShareParams::new(n, t, epoch) {
            Ok(p) => {
                prop_assert!(valid, "{}/{} accepted", n, t);
                prop_assert_eq!((p.shares(), p.threshold(), p.epoch()), (n, t, epoch));
            }
            Err(e) => {
                prop_assert!(!valid, "{}/{} refused: {}", n, t, e);
                prop_assert!(matches!(e, CryptoError::InvalidShareParams(_)), "{:?}", e);
            }
        }
        let json = format!(r#"{{"shares":{n},"threshold":{t},"epoch":{epoch}}}"#);
        prop_assert_eq!(serde_json::from_str::<ShareParams>(&json).is_ok(), valid);
    }
}

/// Beyond the bound the properties use (which keeps all 128 subsets cheap), one larger split:
/// every window of `threshold` consecutive shares recovers the key, one fewer is refused.
#[test]
fn a_large_split_recovers_from_any_window_of_threshold_shares() {
    let root = RootKey::generate().unwrap();
    let p = ShareParams::new(40, 13, 3).unwrap();
    let shares = split(&root, SharePurpose::BreakGlass, &p).unwrap();
    for start in 0..=(shares.len() - 13) {
        let window = &shares[start..start + 13];
        assert_eq!(bytes_of(&combine(&p, window).unwrap()), bytes_of(&root));
        assert!(matches!(
            combine(&p, &window[1..]),
            Err(CryptoError::TooFewShares { got: 12, need: 13 })
        ));
    }
}
