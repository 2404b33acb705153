//! The audit log's chain (`spike_core::audit`): arbitrary bytes as a log, a line or a stored
//! checkpoint never panic the reader; a chain sealed here (Nexus's or a gateway's, records and
//! times chosen by the fuzzer) verifies, reaches its head, and is refused once any one byte
//! of it is changed, unless the change leaves every line's content as it was; the log without
//! its last line is refused against the head; a sealed checkpoint with one byte changed does
//! not open.
#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use common::{PATH_PIECES, build, text};
use libfuzzer_sys::fuzz_target;
use spike_core::audit::{
    AuditKey, AuditLine, AuditRecord, Chain, ChainOwner, ChainVerifier, Checkpoint, Decision,
    VerifyError, verify, verify_against,
};
use spike_core::id::SpiffeId;
use time::OffsetDateTime;

const ACTIONS: &[&str] = &["secret.get", "secret.put", "policy.put", "token.resolve"];
const GATEWAY_ACTIONS: &[&str] = &["gateway.read", "gateway.write", "gateway.request"];
const REASONS: &[&str] = &["ok", "policy_denied", "not_found", "bad_request"];
const GATEWAY: &str = "spiffe://spike.dev/spike/gateway/gw1";

/// Lines of `log` as parsed audit lines, or `None` if any does not parse.
fn lines(log: &[u8]) -> Option<Vec<AuditLine>> {
    let text = std::str::from_utf8(log).ok()?;
    let body = text.strip_suffix('\n')?;
    body.split('\n').map(|l| AuditLine::parse(l).ok()).collect()
}

fn record(u: &mut Unstructured<'_>, gateway: bool) -> Result<AuditRecord> {
    let decision = if u.arbitrary()? {
        Decision::Allow
    } else {
        Decision::Deny
    };
    let actions = if gateway { GATEWAY_ACTIONS } else { ACTIONS };
    let mut r = AuditRecord::new(*u.choose(actions)?, decision, *u.choose(REASONS)?);
    if gateway {
        r = r.with_caller(SpiffeId::new(GATEWAY).expect("valid"));
    } else if let Ok(c) =
        SpiffeId::new(&format!("spiffe://spike.dev/{}", build(u, PATH_PIECES, 3)?))
    {
        r = r.with_caller(c);
    }
    if u.arbitrary()? {
        r = r.with_path(build(u, PATH_PIECES, 4)?);
    }
    if u.ratio(1, 4)? {
        r = r.with_raw_path(&text(u, 40)?);
    }
    if u.arbitrary()? {
        r = r.with_status(u.arbitrary()?);
    }
    if u.ratio(1, 4)? {
        r = r.with_count(*u.choose(REASONS)?, u.arbitrary()?);
    }
    if gateway && u.arbitrary()? {
        let agent = SpiffeId::new("spiffe://spike.dev/ns/a/agent").expect("valid");
        r = r
            .with_tokens(["0123456789abcdef", "fedcba9876543210"], agent)
            .with_route(text(u, 12)?)
            .with_destination(text(u, 20)?);
    }
    Ok(r)
}

fn raw(u: &mut Unstructured<'_>) -> Result<()> {
    let key = AuditKey::new(&u.arbitrary()?);
    let log = u.bytes(u.len())?;
    if let Ok(report) = verify(log, &key) {
        assert_eq!(
            report.lines as usize,
            log.iter().filter(|&&b| b == b'\n').count()
        );
    }
    let _ = verify_against(log, &key, &Checkpoint::GENESIS);
    if let Ok(text) = std::str::from_utf8(log) {
        for l in text.lines() {
            if let Ok(line) = AuditLine::parse(l) {
                let again = AuditLine::parse(line.to_json_line().trim_end()).expect("re-reads");
                assert_eq!(again, line);
                let _ = line.mac_is_valid(&key);
                let _ = ChainOwner::claimed_by(&line);
            }
        }
    }
    let _ = Checkpoint::open(log, &key);
    Ok(())
}

fn sealed(u: &mut Unstructured<'_>) -> Result<()> {
    let nexus_key = AuditKey::new(&u.arbitrary()?);
    let gateway = u.arbitrary()?;
    let gateway_id = SpiffeId::new(GATEWAY).expect("valid");
    let (key, owner) = if gateway {
        (
            nexus_key.for_gateway(&gateway_id),
            ChainOwner::Gateway(gateway_id),
        )
    } else {
        (nexus_key, ChainOwner::Nexus)
    };
    // The chain owns its key; the verifier gets the same one back from its hex form.
    let mut chain = Chain::new(AuditKey::from_hex(&key.to_hex()).expect("a key's hex reads back"));
    let mut log = Vec::new();
    let n = u.int_in_range(1..=4)?;
    let mut t = u.int_in_range(0..=4_102_444_800i64)?;
    for _ in 0..n {
        t += i64::from(u.arbitrary::<u16>()?);
        let when = OffsetDateTime::from_unix_timestamp(t).expect("in range");
        log.extend_from_slice(
            chain
                .seal_at(record(u, gateway)?, when)
                .to_json_line()
                .as_bytes(),
        );
    }
    let head = chain.head();
    assert_eq!(head.seq, n);
    let verifier = |log: &[u8]| -> std::result::Result<_, VerifyError> {
        let mut v = ChainVerifier::against(&key, head).owned_by(owner.clone());
        v.read(log)?;
        v.finish()
    };
    let report = verifier(&log).expect("a sealed chain verifies");
    assert_eq!((report.lines, report.head), (n, head));
    let original = lines(&log).expect("sealed lines parse");

    // One byte changed.
    let at = u.choose_index(log.len())?;
    let byte: u8 = u.arbitrary()?;
    if byte != log[at] {
        let mut bad = log.clone();
        bad[at] = byte;
        if let Ok(r) = verifier(&bad) {
            assert_eq!(
                lines(&bad).as_ref(),
                Some(&original),
                "a log with byte {at} changed to {byte:#04x} verifies: {r:?}\n{}",
                String::from_utf8_lossy(&bad)
            );
        }
    }

    // The last line cut off: a shorter valid chain, which only the head reveals.
    let cut = log[..log.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    assert!(matches!(
        verifier(&log[..cut]),
        Err(VerifyError::Truncated { .. })
    ));

    // A stored checkpoint with one byte changed.
    let stored = head.seal(&key);
    assert_eq!(Checkpoint::open(&stored, &key), Ok(head));
    let at = u.choose_index(stored.len())?;
    let flip = u.int_in_range(1..=255u8)?;
    let mut bad = stored.clone();
    bad[at] ^= flip;
    assert!(Checkpoint::open(&bad, &key).is_err());
    Ok(())
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    if u.ratio(1, 3)? { raw(u) } else { sealed(u) }
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
