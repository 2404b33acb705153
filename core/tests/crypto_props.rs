//! Property tests of the at-rest crypto formats, through the public API only: the stored-value
//! envelope ([`EnvelopeKey`]: `seal`/`open`, `seal_map`/`open_map`), the cipher API's messages
//! ([`CipherKey`], AES-256-GCM-SIV), the wrapped data key ([`RootKey::wrap`]/`unwrap`,
//! [`WrappedKey`]), the sealed key ring ([`RootKey::seal_ring`]/`open_ring`) and the record
//! MAC ([`RecordMac`], [`RecordTag`]).
//!
//! For each of them, as far as it applies, it proves over generated inputs that:
//!
//! - any plaintext (empty, binary, up to 1 KiB) and any associated data round-trip (a record
//!   tag verifies), and the sealed bytes have the documented length and header;
//! - opening succeeds exactly when the associated data is the one sealed for (and changing any
//!   single AAD field makes it fail);
//! - flipping any single bit anywhere in the sealed bytes fails with the error the format
//!   documents for that region: [`CryptoError::UnsupportedFormat`] for the format byte,
//!   [`CryptoError::KeyMismatch`] for the key id, and the one generic
//!   [`CryptoError::Unauthentic`] everywhere else (nonce, flags, ciphertext, tag);
//! - truncating to any shorter length (a random one, and the edges) fails
//!   ([`CryptoError::Malformed`] below the overhead, otherwise `Unauthentic`; the fixed-length
//!   wrapped key and record tag refuse every other length as `Malformed`), and appending any
//!   bytes fails;
//! - another key fails, with `KeyMismatch`, and still with `Unauthentic` when its id is forged
//!   to match;
//! - sealing the same input twice gives different bytes (a fresh random nonce every time; the
//!   record MAC, which is deterministic by design, gives the same tag instead);
//! - a message of one kind never opens as another kind under the same key material.
//!
//! None of these may panic: every failure is an `Err`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::LazyLock;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::string::{RegexGeneratorStrategy, string_regex};
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use spike_core::crypto::{
    Aad, CIPHER_FORMAT, CIPHER_OVERHEAD, CipherAad, CipherBinding, CipherKey, CryptoError, DataKey,
    ENVELOPE_FORMAT, ENVELOPE_OVERHEAD, EnvelopeKey, KeyId, KeyPurpose, KeyRing, RECORD_TAG_FORMAT,
    RECORD_TAG_LEN, RING_FORMAT, RecordMac, RecordTag, RecordType, RootKey, WRAP_FORMAT,
    WRAPPED_KEY_LEN, WrappedKey,
};
use spike_core::id::SpiffeId;
use spike_core::secret::SecretMap;

/// The one message every authentication failure carries.
const GENERIC: &str = "integrity check failed: wrong key, wrong context, or altered data";

/// Bytes a sealed key ring adds to its plaintext (module docs of `ring`: format, root key id,
/// nonce, tag). Not exported by the crate; the layout test below pins it.
const RING_OVERHEAD: usize = 1 + 4 + 12 + 16;

/// Every record type (the enum is non-exhaustive; these are the ones this build has).
const RECORDS: [RecordType; 5] = [
    RecordType::SecretValue,
    RecordType::SecretMetadata,
    RecordType::Policy,
    RecordType::TokenBinding,
    RecordType::System,
];

const BINDINGS: [CipherBinding; 2] = [CipherBinding::Context, CipherBinding::ContextAndCaller];

/// The keys most properties use, made once per run (fresh random keys every run).
struct Keys {
    data: DataKey,
    root: RootKey,
    envelope: EnvelopeKey,
    cipher: CipherKey,
    mac: RecordMac,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let data = DataKey::generate().unwrap();
    Keys {
        envelope: EnvelopeKey::new(&data),
        cipher: CipherKey::new(&data.derive(KeyPurpose::Cipher)).unwrap(),
        mac: RecordMac::new(&data),
        root: RootKey::generate().unwrap(),
        data,
    }
});

// --- strategies ---

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

/// A string strategy for `regex`, compiled once (a bare `&str` strategy compiles its regex
/// again for every value it generates).
fn re(regex: &str) -> RegexGeneratorStrategy<String> {
    string_regex(regex).unwrap()
}

/// Plaintexts: empty, short binary, and longer binary.
fn plaintext() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        6 => vec(any::<u8>(), 1..64),
        2 => vec(any::<u8>(), 64..1024),
    ]
}

/// Strings for paths and contexts: a few close relatives (so equal and near-equal values
/// occur often) and arbitrary Unicode, newlines included.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        select(&["", "apps/db", "apps/db/", "apps/dc", "Apps/db", "a"][..]).prop_map(String::from),
        re("(?s).{0,24}"),
    ]
}

/// Small integers (so equal values occur often) and arbitrary ones.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![0..3u64, any::<u64>()]
}

/// The owned parts of an [`Aad`]: record type index, path, version, incarnation.
type AadParts = (usize, String, u64, u64);

fn aad_parts() -> impl Strategy<Value = AadParts> {
    (0..RECORDS.len(), text(), number(), number())
}

fn aad(p: &AadParts) -> Aad<'_> {
    Aad {
        record: RECORDS[p.0],
        path: &p.1,
        version: p.2,
        incarnation: p.3,
    }
}

/// SPIFFE IDs over two trust domains and a small path alphabet (the trust domain's own ID
/// included), so equal callers occur often.
fn spiffe_id() -> impl Strategy<Value = SpiffeId> {
    let segment = re("[ab.]{1,2}").prop_filter("not a dot segment", |s| s != "." && s != "..");
    (select(&["a.test", "b.test"][..]), vec(segment, 0..3)).prop_map(|(td, segs)| {
        let path: String = segs.iter().map(|s| format!("/{s}")).collect();
        SpiffeId::new(&format!("spiffe://{td}{path}")).unwrap()
    })
}

fn binding() -> impl Strategy<Value = CipherBinding> {
    select(&BINDINGS[..])
}

/// Whether a derived input keeps a field of the original (true 70% of the time).
fn keep() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.7)
}

/// A bit to flip: where (scaled to the message) and which.
fn flip() -> impl Strategy<Value = (Index, u8)> {
    (any::<Index>(), 0..8u8)
}

fn flipped(sealed: &[u8], at: &Index, bit: u8) -> (usize, Vec<u8>) {
    let i = at.index(sealed.len());
    let mut bad = sealed.to_vec();
    bad[i] ^= 1 << bit;
    (i, bad)
}

/// Lengths to truncate a `len`-byte message to: one drawn at random, plus the edges (nothing,
/// one byte, just below and at the format's `overhead`, one byte short), all below `len`.
fn cut_lengths(cut: &Index, len: usize, overhead: usize) -> Vec<usize> {
    let mut lengths = vec![cut.index(len), 0, 1, overhead - 1, overhead, len - 1];
    lengths.retain(|&l| l < len);
    lengths.sort_unstable();
    lengths.dedup();
    lengths
}

// --- expected failures ---

/// `result` is the outcome of opening `tampered`, the sealed bytes with one bit of byte `i`
/// flipped, under a key whose id is `key_id`. Checks the error the format documents for that
/// region: format byte, key id (bytes 1..5), everything else.
fn check_flip(
    result: Result<(), CryptoError>,
    tampered: &[u8],
    i: usize,
    format: u8,
    key_id: KeyId,
) -> Result<(), TestCaseError> {
    let Err(err) = result else {
        return Err(TestCaseError::fail(format!(
            "opened with a bit of byte {i} flipped"
        )));
    };
    match i {
        0 => prop_assert!(
            matches!(err, CryptoError::UnsupportedFormat { found, supported }
                if found == tampered[0] && supported == format),
            "byte {}: {:?}",
            i,
            err
        ),
        1..=4 => {
            let id = KeyId::from_bytes([tampered[1], tampered[2], tampered[3], tampered[4]]);
            prop_assert!(
                matches!(err, CryptoError::KeyMismatch { expected, found }
                    if expected == key_id && found == id),
                "byte {}: {:?}",
                i,
                err
            );
        }
        _ => check_generic(&err)?,
    }
    Ok(())
}

/// `err` is the one generic authentication failure.
fn check_generic(err: &CryptoError) -> Result<(), TestCaseError> {
    prop_assert!(matches!(err, CryptoError::Unauthentic), "{:?}", err);
    prop_assert_eq!(err.to_string(), GENERIC);
    Ok(())
}

/// `result` is the outcome of opening the first `len` bytes of a message of a format whose
/// overhead is `overhead`: too short to be a message is malformed, anything longer (with the
/// header intact) fails authentication.
fn check_truncated(
    result: Result<(), CryptoError>,
    len: usize,
    overhead: usize,
) -> Result<(), TestCaseError> {
    let Err(err) = result else {
        return Err(TestCaseError::fail(format!("opened truncated to {len}")));
    };
    if len < overhead {
        prop_assert!(
            matches!(err, CryptoError::Malformed { .. }),
            "len {}: {:?}",
            len,
            err
        );
        Ok(())
    } else {
        check_generic(&err)
    }
}

/// Two data keys are the same key: the same id and the same subkey for every purpose (HKDF
/// outputs, so equal subkeys mean equal keys).
fn same_data_key(a: &DataKey, b: &DataKey) -> bool {
    a.key_id() == b.key_id()
        && KeyPurpose::ALL
            .iter()
            .all(|p| a.derive(*p).expose_secret() == b.derive(*p).expose_secret())
}

// --- the envelope ---

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn envelope_round_trips(plain in plaintext(), parts in aad_parts()) {
        let k = &KEYS.envelope;
        let a = aad(&parts);
        let sealed = k.seal(&a, &plain).unwrap();
        prop_assert_eq!(sealed.len(), ENVELOPE_OVERHEAD + plain.len());
        prop_assert_eq!(sealed[0], ENVELOPE_FORMAT);
        prop_assert_eq!(&sealed[1..5], &k.key_id().to_bytes()[..]);
        let opened = k.open(&a, &sealed).unwrap();
        prop_assert_eq!(opened.expose_secret(), &plain[..]);
    }

    #[test]
    fn envelope_seals_differ_every_time(plain in plaintext(), parts in aad_parts()) {
        let k = &KEYS.envelope;
        let a = aad(&parts);
        let (s1, s2) = (k.seal(&a, &plain).unwrap(), k.seal(&a, &plain).unwrap());
        // The nonces (bytes 5..17) are fresh, and so the whole output differs.
        prop_assert_ne!(&s1[5..17], &s2[5..17]);
        prop_assert_ne!(&s1[17..], &s2[17..]);
        let opened = k.open(&a, &s2).unwrap();
        prop_assert_eq!(opened.expose_secret(), &plain[..]);
    }

    /// Opens exactly under the associated data it was sealed for. The AAD it is opened with
    /// keeps each field of the sealed one with probability 0.7, so both outcomes are common.
    #[test]
    fn envelope_opens_only_for_its_aad(
        plain in plaintext(),
        sealed_for in aad_parts(),
        replacement in aad_parts(),
        keep in [keep(), keep(), keep(), keep()],
    ) {
        let k = &KEYS.envelope;
        let opened_as = (
            if keep[0] { sealed_for.0 } else { replacement.0 },
            if keep[1] { sealed_for.1.clone() } else { replacement.1 },
            if keep[2] { sealed_for.2 } else { replacement.2 },
            if keep[3] { sealed_for.3 } else { replacement.3 },
        );
        let sealed = k.seal(&aad(&sealed_for), &plain).unwrap();
        match k.open(&aad(&opened_as), &sealed) {
            Ok(p) => {
                prop_assert_eq!(&sealed_for, &opened_as);
                prop_assert_eq!(p.expose_secret(), &plain[..]);
            }
            Err(e) => {
                prop_assert_ne!(&sealed_for, &opened_as);
                check_generic(&e)?;
            }
        }
    }

    /// Changing any one AAD field, to any other value, fails.
    #[test]
    fn envelope_binds_every_aad_field(
        plain in plaintext(),
        parts in aad_parts(),
        field in 0..4usize,
        shift in 1..RECORDS.len(),
        other_path in text(),
        delta in 1..=u64::MAX,
    ) {
        let k = &KEYS.envelope;
        let a = aad(&parts);
        let sealed = k.seal(&a, &plain).unwrap();
        let other_path = if other_path == a.path { format!("{other_path}x") } else { other_path };
        let changed = match field {
            0 => Aad { record: RECORDS[(parts.0 + shift) % RECORDS.len()], ..a },
            1 => Aad { path: &other_path, ..a },
            2 => Aad { version: a.version ^ delta, ..a },
            _ => Aad { incarnation: a.incarnation ^ delta, ..a },
        };
        prop_assert_ne!(changed, a);
        check_generic(&k.open(&changed, &sealed).map(drop).unwrap_err())?;
    }

    #[test]
    fn envelope_bit_flips_fail(plain in plaintext(), parts in aad_parts(), (at, bit) in flip()) {
        let k = &KEYS.envelope;
        let a = aad(&parts);
        let sealed = k.seal(&a, &plain).unwrap();
        let (i, bad) = flipped(&sealed, &at, bit);
        check_flip(k.open(&a, &bad).map(drop), &bad, i, ENVELOPE_FORMAT, k.key_id())?;
        // The same holds for the map form, which opens through the envelope first.
        check_flip(k.open_map(&a, &bad).map(drop), &bad, i, ENVELOPE_FORMAT, k.key_id())?;
    }

    #[test]
    fn envelope_truncation_and_extension_fail(
        plain in plaintext(),
        parts in aad_parts(),
        cut in any::<Index>(),
        extra in vec(any::<u8>(), 1..32),
    ) {
        let k = &KEYS.envelope;
        let a = aad(&parts);
        let sealed = k.seal(&a, &plain).unwrap();
        for len in cut_lengths(&cut, sealed.len(), ENVELOPE_OVERHEAD) {
            check_truncated(k.open(&a, &sealed[..len]).map(drop), len, ENVELOPE_OVERHEAD)?;
        }
        let mut longer = sealed;
        longer.extend_from_slice(&extra);
        check_generic(&k.open(&a, &longer).map(drop).unwrap_err())?;
    }

    #[test]
    fn envelope_under_another_key_fails(plain in plaintext(), parts in aad_parts()) {
        let k = &KEYS.envelope;
        let other = EnvelopeKey::new(&DataKey::generate().unwrap());
        let a = aad(&parts);
        let sealed = k.seal(&a, &plain).unwrap();
        match other.open(&a, &sealed).map(drop).unwrap_err() {
            CryptoError::KeyMismatch { expected, found } => {
                prop_assert_eq!(expected, other.key_id());
                prop_assert_eq!(found, k.key_id());
            }
            // Two keys share an id with probability 2^-32; authentication still fails.
            e => {
                prop_assert_eq!(other.key_id(), k.key_id());
                check_generic(&e)?;
            }
        }
        // Another key's envelope with its id forged to this key's fails authentication.
        let mut forged = other.seal(&a, &plain).unwrap();
        forged[1..5].copy_from_slice(&k.key_id().to_bytes());
        check_generic(&k.open(&a, &forged).map(drop).unwrap_err())?;
    }

    #[test]
    fn secret_maps_round_trip(
        entries in vec((re("(?s).{0,12}"), re("(?s).{0,40}")), 0..6),
        parts in aad_parts(),
        other in aad_parts(),
    ) {
        let k = &KEYS.envelope;
        let a = aad(&parts);
        let map: SecretMap = entries.into_iter().collect();
        let sealed = k.seal_map(&a, &map).unwrap();
        prop_assert_eq!(&k.open_map(&a, &sealed).unwrap(), &map);
        // `seal_map` is `seal` of the canonical JSON: either opens the other's output.
        let json = map.to_json_bytes();
        let opened = k.open(&a, &sealed).unwrap();
        prop_assert_eq!(opened.expose_secret(), json.expose_secret());
        let plain_sealed = k.seal(&a, json.expose_secret()).unwrap();
        prop_assert_eq!(&k.open_map(&a, &plain_sealed).unwrap(), &map);
        // And the map is bound to its place like any value.
        if other != parts {
            check_generic(&k.open_map(&aad(&other), &sealed).map(drop).unwrap_err())?;
        }
    }

    /// A value that is not a JSON object of strings is refused as malformed, never panics.
    #[test]
    fn open_map_refuses_non_maps(plain in plaintext(), parts in aad_parts()) {
        let k = &KEYS.envelope;
        let a = aad(&parts);
        let sealed = k.seal(&a, &plain).unwrap();
        match k.open_map(&a, &sealed) {
            Ok(map) => prop_assert_eq!(
                SecretMap::from_json_bytes(&plain).unwrap(), map
            ),
            Err(e) => {
                prop_assert!(matches!(e, CryptoError::Malformed { .. }), "{:?}", e);
                prop_assert!(SecretMap::from_json_bytes(&plain).is_err());
            }
        }
    }
}

// --- the cipher API ---

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn cipher_round_trips(
        plain in plaintext(),
        context in text(),
        caller in spiffe_id(),
        binding in binding(),
    ) {
        let k = &KEYS.cipher;
        let a = CipherAad { context: &context, caller: &caller };
        let sealed = k.seal(&a, binding, &plain).unwrap();
        prop_assert_eq!(sealed.len(), CIPHER_OVERHEAD + plain.len());
        prop_assert_eq!(sealed[0], CIPHER_FORMAT);
        prop_assert_eq!(&sealed[1..5], &KEYS.data.key_id().to_bytes()[..]);
        let opened = k.open(&a, &sealed).unwrap();
        prop_assert_eq!(opened.expose_secret(), &plain[..]);
    }

    /// GCM-SIV is deterministic for a given nonce; the nonce is fresh, so equal inputs still
    /// give different messages.
    #[test]
    fn cipher_seals_differ_every_time(
        plain in plaintext(),
        context in text(),
        caller in spiffe_id(),
        binding in binding(),
    ) {
        let k = &KEYS.cipher;
        let a = CipherAad { context: &context, caller: &caller };
        let (s1, s2) = (k.seal(&a, binding, &plain).unwrap(), k.seal(&a, binding, &plain).unwrap());
        prop_assert_eq!(&s1[..6], &s2[..6]);
        prop_assert_ne!(&s1[6..18], &s2[6..18]);
        prop_assert_ne!(&s1[18..], &s2[18..]);
    }

    /// Opens exactly under the same context, and for a caller-bound message only for the
    /// same caller; a context-only message opens for any caller.
    #[test]
    fn cipher_opens_only_for_its_context_and_caller(
        plain in plaintext(),
        binding in binding(),
        (ctx1, caller1) in (text(), spiffe_id()),
        (other_ctx, other_caller) in (text(), spiffe_id()),
        keep in [keep(), keep()],
    ) {
        let k = &KEYS.cipher;
        let ctx2 = if keep[0] { ctx1.clone() } else { other_ctx };
        let caller2 = if keep[1] { caller1.clone() } else { other_caller };
        let sealed = k
            .seal(&CipherAad { context: &ctx1, caller: &caller1 }, binding, &plain)
            .unwrap();
        let should_open = ctx1 == ctx2
            && (binding == CipherBinding::Context || caller1 == caller2);
        match k.open(&CipherAad { context: &ctx2, caller: &caller2 }, &sealed) {
            Ok(p) => {
                prop_assert!(should_open, "{:?} opened for {:?}/{:?}", binding, ctx2, caller2);
                prop_assert_eq!(p.expose_secret(), &plain[..]);
            }
            Err(e) => {
                prop_assert!(!should_open, "{:?} refused its own context: {:?}", binding, e);
                check_generic(&e)?;
            }
        }
    }

    #[test]
    fn cipher_bit_flips_fail(
        plain in plaintext(),
        context in text(),
        caller in spiffe_id(),
        binding in binding(),
        (at, bit) in flip(),
    ) {
        let k = &KEYS.cipher;
        let a = CipherAad { context: &context, caller: &caller };
        let sealed = k.seal(&a, binding, &plain).unwrap();
        let (i, bad) = flipped(&sealed, &at, bit);
        // Byte 5 (the flags) falls in the generic region: an unknown or changed flag is
        // treated like any altered byte.
        check_flip(k.open(&a, &bad).map(drop), &bad, i, CIPHER_FORMAT, k.key_id())?;
    }

    /// Every flags value but the sealed one fails, whether unknown or the other binding.
    #[test]
    fn cipher_flags_are_authenticated(
        plain in plaintext(),
        context in text(),
        caller in spiffe_id(),
        binding in binding(),
        flags in any::<u8>(),
    ) {
        let k = &KEYS.cipher;
        let a = CipherAad { context: &context, caller: &caller };
        let sealed = k.seal(&a, binding, &plain).unwrap();
        prop_assume!(flags != sealed[5]);
        let mut bad = sealed;
        bad[5] = flags;
        check_generic(&k.open(&a, &bad).map(drop).unwrap_err())?;
    }

    #[test]
    fn cipher_truncation_and_extension_fail(
        plain in plaintext(),
        context in text(),
        caller in spiffe_id(),
        binding in binding(),
        cut in any::<Index>(),
        extra in vec(any::<u8>(), 1..32),
    ) {
        let k = &KEYS.cipher;
        let a = CipherAad { context: &context, caller: &caller };
        let sealed = k.seal(&a, binding, &plain).unwrap();
        for len in cut_lengths(&cut, sealed.len(), CIPHER_OVERHEAD) {
            check_truncated(k.open(&a, &sealed[..len]).map(drop), len, CIPHER_OVERHEAD)?;
        }
        let mut longer = sealed;
        longer.extend_from_slice(&extra);
        check_generic(&k.open(&a, &longer).map(drop).unwrap_err())?;
    }

    #[test]
    fn cipher_under_another_key_fails(
        plain in plaintext(),
        context in text(),
        caller in spiffe_id(),
        binding in binding(),
    ) {
        let k = &KEYS.cipher;
        let other = CipherKey::new(&DataKey::generate().unwrap().derive(KeyPurpose::Cipher))
            .unwrap();
        let a = CipherAad { context: &context, caller: &caller };
        let sealed = k.seal(&a, binding, &plain).unwrap();
        match other.open(&a, &sealed).map(drop).unwrap_err() {
            CryptoError::KeyMismatch { expected, found } => {
                prop_assert_eq!(expected, other.key_id());
                prop_assert_eq!(found, k.key_id());
            }
            e => {
                prop_assert_eq!(other.key_id(), k.key_id());
                check_generic(&e)?;
            }
        }
        let mut forged = other.seal(&a, binding, &plain).unwrap();
        forged[1..5].copy_from_slice(&k.key_id().to_bytes());
        check_generic(&k.open(&a, &forged).map(drop).unwrap_err())?;
    }

    /// Under one data key, a stored-value envelope never opens as a cipher message and a
    /// cipher message never opens as an envelope (separate subkeys, headers and labels).
    #[test]
    fn envelopes_and_cipher_messages_do_not_mix(
        plain in plaintext(),
        parts in aad_parts(),
        caller in spiffe_id(),
        binding in binding(),
    ) {
        let (env, cip) = (&KEYS.envelope, &KEYS.cipher);
        let a = aad(&parts);
        // The same string as the path and the context, so only the kind differs.
        let ca = CipherAad { context: a.path, caller: &caller };
        let envelope = env.seal(&a, &plain).unwrap();
        let message = cip.seal(&ca, binding, &plain).unwrap();
        let as_message = cip.open(&ca, &envelope).map(drop).unwrap_err();
        prop_assert!(
            matches!(as_message, CryptoError::Unauthentic | CryptoError::Malformed { .. }),
            "{:?}",
            as_message
        );
        check_generic(&env.open(&a, &message).map(drop).unwrap_err())?;
    }
}

// --- the wrapped data key ---

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn wrapped_keys_round_trip_and_differ(_case in any::<u8>()) {
        let root = &KEYS.root;
        let dek = DataKey::generate().unwrap();
        let w1 = root.wrap(&dek).unwrap();
        let w2 = root.wrap(&dek).unwrap();
        prop_assert_eq!(w1.as_bytes().len(), WRAPPED_KEY_LEN);
        prop_assert_eq!(w1.as_bytes()[0], WRAP_FORMAT);
        prop_assert_eq!(w1.root_key_id(), root.key_id());
        prop_assert_eq!(&w1.as_bytes()[1..5], &root.key_id().to_bytes()[..]);
        // Fresh nonce per wrap.
        prop_assert_ne!(&w1.as_bytes()[5..17], &w2.as_bytes()[5..17]);
        prop_assert_ne!(&w1, &w2);
        prop_assert!(same_data_key(&root.unwrap(&w1).unwrap(), &dek));
        prop_assert!(same_data_key(&root.unwrap(&w2).unwrap(), &dek));
        // Stored bytes and the base64 serde form parse back to the same wrapped key.
        prop_assert_eq!(&WrappedKey::from_bytes(w1.as_bytes()).unwrap(), &w1);
        let json = serde_json::to_string(&w1).unwrap();
        prop_assert_eq!(&serde_json::from_str::<WrappedKey>(&json).unwrap(), &w1);
    }

    #[test]
    fn wrapped_key_bit_flips_fail((at, bit) in flip()) {
        let root = &KEYS.root;
        let wrapped = root.wrap(&KEYS.data).unwrap();
        let (i, bad) = flipped(wrapped.as_bytes(), &at, bit);
        let result = WrappedKey::from_bytes(&bad).and_then(|w| root.unwrap(&w)).map(drop);
        check_flip(result, &bad, i, WRAP_FORMAT, root.key_id())?;
    }

    /// Any other length is refused when parsing, before any key is involved.
    #[test]
    fn wrapped_key_of_another_length_is_refused(
        cut in any::<Index>(),
        extra in vec(any::<u8>(), 1..32),
    ) {
        let wrapped = KEYS.root.wrap(&KEYS.data).unwrap();
        let bytes = wrapped.as_bytes();
        for len in cut_lengths(&cut, bytes.len(), bytes.len()) {
            let short = WrappedKey::from_bytes(&bytes[..len]).map(drop).unwrap_err();
            prop_assert!(matches!(short, CryptoError::Malformed { .. }), "{}: {:?}", len, short);
        }
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&extra);
        let long = WrappedKey::from_bytes(&longer).map(drop).unwrap_err();
        prop_assert!(matches!(long, CryptoError::Malformed { .. }), "{:?}", long);
    }

    #[test]
    fn wrapped_key_under_another_root_fails(_case in any::<u8>()) {
        let root = &KEYS.root;
        let other = RootKey::generate().unwrap();
        let wrapped = root.wrap(&KEYS.data).unwrap();
        match other.unwrap(&wrapped).map(drop).unwrap_err() {
            CryptoError::KeyMismatch { expected, found } => {
                prop_assert_eq!(expected, other.key_id());
                prop_assert_eq!(found, root.key_id());
            }
            e => {
                prop_assert_eq!(other.key_id(), root.key_id());
                check_generic(&e)?;
            }
        }
        let mut forged = other.wrap(&KEYS.data).unwrap().as_bytes().to_vec();
        forged[1..5].copy_from_slice(&root.key_id().to_bytes());
        let forged = WrappedKey::from_bytes(&forged).unwrap();
        check_generic(&root.unwrap(&forged).map(drop).unwrap_err())?;
    }
}

// --- the sealed key ring ---

/// One step in a ring's life.
#[derive(Debug, Clone, Copy)]
enum RingOp {
    Rotate,
    RetireOlder,
}

fn ring_ops() -> impl Strategy<Value = Vec<RingOp>> {
    vec(
        prop_oneof![2 => Just(RingOp::Rotate), 1 => Just(RingOp::RetireOlder)],
        0..5,
    )
}

fn ring_after(ops: &[RingOp]) -> KeyRing {
    let mut ring = KeyRing::single(DataKey::generate().unwrap());
    for op in ops {
        ring = match op {
            RingOp::Rotate => ring.rotated().unwrap(),
            RingOp::RetireOlder => ring.retire_older(),
        };
    }
    ring
}

/// Two rings hold the same keys, generation by generation.
fn same_ring(a: &KeyRing, b: &KeyRing) -> Result<(), TestCaseError> {
    prop_assert!(same_data_key(a.current(), b.current()));
    prop_assert_eq!(a.older().len(), b.older().len());
    for (x, y) in a.older().iter().zip(b.older()) {
        prop_assert!(same_data_key(x, y));
    }
    prop_assert_eq!(a.retired_cipher_keys().len(), b.retired_cipher_keys().len());
    for (x, y) in a.retired_cipher_keys().iter().zip(b.retired_cipher_keys()) {
        prop_assert_eq!(x.data_key_id(), y.data_key_id());
        prop_assert_eq!(x.purpose(), y.purpose());
        prop_assert_eq!(x.expose_secret(), y.expose_secret());
    }
    prop_assert_eq!(a.audit_key(), b.audit_key());
    prop_assert_eq!(a.token_hash_key(), b.token_hash_key());
    Ok(())
}

/// The documented plaintext length of a sealed ring (format 2).
fn ring_plaintext_len(ring: &KeyRing) -> usize {
    32 + 32 + 2 + 32 * (1 + ring.older().len()) + 2 + 36 * ring.retired_cipher_keys().len()
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn key_rings_round_trip_and_differ(ops in ring_ops()) {
        let root = &KEYS.root;
        let ring = ring_after(&ops);
        let s1 = root.seal_ring(&ring).unwrap();
        let s2 = root.seal_ring(&ring).unwrap();
        prop_assert_eq!(s1.len(), RING_OVERHEAD + ring_plaintext_len(&ring));
        prop_assert_eq!(s1[0], RING_FORMAT);
        prop_assert_eq!(&s1[1..5], &root.key_id().to_bytes()[..]);
        prop_assert_ne!(&s1[5..17], &s2[5..17]);
        same_ring(&root.open_ring(&s1).unwrap(), &ring)?;
        same_ring(&root.open_ring(&s2).unwrap(), &ring)?;
    }

    #[test]
    fn key_ring_tampering_fails(
        ops in ring_ops(),
        (at, bit) in flip(),
        cut in any::<Index>(),
        extra in vec(any::<u8>(), 1..32),
    ) {
        let root = &KEYS.root;
        let sealed = root.seal_ring(&ring_after(&ops)).unwrap();
        // A single bit flip never turns format 2 into format 1 (0b10 vs 0b01).
        let (i, bad) = flipped(&sealed, &at, bit);
        check_flip(root.open_ring(&bad).map(drop), &bad, i, RING_FORMAT, root.key_id())?;
        for len in cut_lengths(&cut, sealed.len(), RING_OVERHEAD) {
            check_truncated(root.open_ring(&sealed[..len]).map(drop), len, RING_OVERHEAD)?;
        }
        let mut longer = sealed;
        longer.extend_from_slice(&extra);
        check_generic(&root.open_ring(&longer).map(drop).unwrap_err())?;
    }

    #[test]
    fn key_ring_under_another_root_fails(ops in ring_ops()) {
        let root = &KEYS.root;
        let other = RootKey::generate().unwrap();
        let ring = ring_after(&ops);
        let sealed = root.seal_ring(&ring).unwrap();
        prop_assert!(other.open_ring(&sealed).is_err());
        let mut forged = other.seal_ring(&ring).unwrap();
        forged[1..5].copy_from_slice(&root.key_id().to_bytes());
        check_generic(&root.open_ring(&forged).map(drop).unwrap_err())?;
    }

    /// Under one root key, a wrapped data key never opens as a ring, nor a ring as a wrapped
    /// key.
    #[test]
    fn wrapped_keys_and_rings_do_not_mix(ops in ring_ops()) {
        let root = &KEYS.root;
        let wrapped = root.wrap(&KEYS.data).unwrap();
        // A wrapped key is format 1, which `open_ring` reads as the older ring format.
        check_generic(&root.open_ring(wrapped.as_bytes()).map(drop).unwrap_err())?;
        let sealed = root.seal_ring(&ring_after(&ops)).unwrap();
        prop_assert!(WrappedKey::from_bytes(&sealed).is_err());
    }
}

// --- the record MAC ---

/// The owned parts of a record: type index, key, value.
type Record = (usize, Vec<u8>, Vec<u8>);

fn record() -> impl Strategy<Value = Record> {
    let bytes = || {
        prop_oneof![
            select(vec![
                Vec::new(),
                b"a".to_vec(),
                b"ab".to_vec(),
                b"b".to_vec()
            ]),
            vec(any::<u8>(), 0..64),
        ]
    };
    (0..RECORDS.len(), bytes(), bytes())
}

proptest! {
    #![proptest_config(config(256))]

    /// A tag is deterministic and verifies exactly for the record it was made for.
    #[test]
    fn record_tags_verify_only_their_record(
        tagged in record(),
        replacement in record(),
        keep in [keep(), keep(), keep()],
    ) {
        let mac = &KEYS.mac;
        let checked = (
            if keep[0] { tagged.0 } else { replacement.0 },
            if keep[1] { tagged.1.clone() } else { replacement.1 },
            if keep[2] { tagged.2.clone() } else { replacement.2 },
        );
        let tag = mac.tag(RECORDS[tagged.0], &tagged.1, &tagged.2);
        prop_assert_eq!(tag.as_bytes().len(), RECORD_TAG_LEN);
        prop_assert_eq!(tag.as_bytes()[0], RECORD_TAG_FORMAT);
        prop_assert_eq!(tag.key_id(), mac.key_id());
        prop_assert_eq!(&mac.tag(RECORDS[tagged.0], &tagged.1, &tagged.2), &tag);
        match mac.verify(RECORDS[checked.0], &checked.1, &checked.2, &tag) {
            Ok(()) => prop_assert_eq!(&tagged, &checked),
            Err(e) => {
                prop_assert_ne!(&tagged, &checked);
                check_generic(&e)?;
            }
        }
        let json = serde_json::to_string(&tag).unwrap();
        prop_assert_eq!(&serde_json::from_str::<RecordTag>(&json).unwrap(), &tag);
    }

    /// Moving bytes between the key and the value changes what is authenticated.
    #[test]
    fn record_key_value_boundary_is_bound(r in record(), at in any::<Index>()) {
        let mac = &KEYS.mac;
        let joined: Vec<u8> = r.1.iter().chain(&r.2).copied().collect();
        let split = at.index(joined.len() + 1);
        prop_assume!(split != r.1.len());
        let tag = mac.tag(RECORDS[r.0], &r.1, &r.2);
        let moved = mac.verify(RECORDS[r.0], &joined[..split], &joined[split..], &tag);
        check_generic(&moved.unwrap_err())?;
    }

    #[test]
    fn record_tag_bit_flips_fail(r in record(), (at, bit) in flip()) {
        let mac = &KEYS.mac;
        let tag = mac.tag(RECORDS[r.0], &r.1, &r.2);
        let (i, bad) = flipped(tag.as_bytes(), &at, bit);
        let result = RecordTag::from_bytes(&bad)
            .and_then(|t| mac.verify(RECORDS[r.0], &r.1, &r.2, &t));
        check_flip(result, &bad, i, RECORD_TAG_FORMAT, mac.key_id())?;
    }

    #[test]
    fn record_tag_of_another_length_is_refused(
        r in record(),
        cut in any::<Index>(),
        extra in vec(any::<u8>(), 1..32),
    ) {
        let tag = KEYS.mac.tag(RECORDS[r.0], &r.1, &r.2);
        let bytes = tag.as_bytes();
        for len in cut_lengths(&cut, bytes.len(), bytes.len()) {
            let short = RecordTag::from_bytes(&bytes[..len]).map(drop);
            prop_assert!(matches!(short, Err(CryptoError::Malformed { .. })), "{}: {:?}", len, short);
        }
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&extra);
        let long = RecordTag::from_bytes(&longer).map(drop);
        prop_assert!(matches!(long, Err(CryptoError::Malformed { .. })), "{:?}", long);
    }

    #[test]
    fn record_tag_under_another_key_fails(r in record()) {
        let mac = &KEYS.mac;
        let other = RecordMac::new(&DataKey::generate().unwrap());
        let tag = other.tag(RECORDS[r.0], &r.1, &r.2);
        prop_assert!(mac.verify(RECORDS[r.0], &r.1, &r.2, &tag).is_err());
        let mut forged = tag.as_bytes().to_vec();
        forged[1..5].copy_from_slice(&mac.key_id().to_bytes());
        let forged = RecordTag::from_bytes(&forged).unwrap();
        check_generic(&mac.verify(RECORDS[r.0], &r.1, &r.2, &forged).unwrap_err())?;
    }
}
