//! SPIFFE IDs and trust domains (`spike_core::id`): parsing never panics; an accepted ID
//! displays as the text it was parsed from, which parses to an equal ID (and through serde);
//! its trust domain is a valid trust domain that renders back the ID's prefix; its path is
//! empty or `/`-separated valid segments; the ID is a member of its trust domain only; and
//! `TrustDomain::id` rebuilds it.
#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use common::{PATH_PIECES, build, json_round_trip};
use libfuzzer_sys::fuzz_target;
use spike_core::id::{Builtin, MAX_SPIFFE_ID_LEN, SpiffeId, TrustDomain};

const TD_PIECES: &[&str] = &[
    "spike", ".", "dev", "-", "_", "0", "A", "x", ":", "@", "%", "/",
];

fn check_td(s: &str) {
    let Ok(td) = TrustDomain::new(s) else {
        return;
    };
    let name = s.strip_prefix("spiffe://").unwrap_or(s);
    assert_eq!(td.as_str(), name);
    assert_eq!(TrustDomain::new(&td.to_string()).as_ref(), Ok(&td));
    assert_eq!(TrustDomain::new(&td.id_string()).as_ref(), Ok(&td));
    assert_eq!(json_round_trip(&td), td);
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    );
    // The trust domain's own ID.
    let own = SpiffeId::new(&td.id_string()).expect("a trust domain's own ID parses");
    assert_eq!(own.path(), "");
    assert!(own.is_member_of(&td));
}

fn check_id(s: &str) {
    let Ok(id) = SpiffeId::new(s) else {
        return;
    };
    assert!(s.len() <= MAX_SPIFFE_ID_LEN);
    assert_eq!(id.as_str(), s);
    assert_eq!(id.to_string(), s);
    assert_eq!(SpiffeId::new(&id.to_string()).as_ref(), Ok(&id));
    assert_eq!(s.parse::<SpiffeId>().as_ref(), Ok(&id));
    assert_eq!(json_round_trip(&id), id);
    let td = id.trust_domain();
    assert_eq!(td.as_str(), id.trust_domain_name());
    assert_eq!(TrustDomain::new(id.trust_domain_name()).as_ref(), Ok(&td));
    assert_eq!(format!("{}{}", td.id_string(), id.path()), s);
    assert!(id.is_member_of(&td));
    if let Ok(other) = TrustDomain::new(&format!("{}x", td.as_str())) {
        assert!(!id.is_member_of(&other));
    }
    let path = id.path();
    if !path.is_empty() {
        assert!(path.starts_with('/'));
        for seg in path[1..].split('/') {
            assert!(
                !seg.is_empty() && seg != "." && seg != "..",
                "{s}: segment {seg:?}"
            );
            assert!(
                seg.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            );
        }
    }
    assert_eq!(td.id(path).as_ref(), Ok(&id));
    // Built-in identities are recognised only as themselves.
    if let Some(b) = Builtin::of(&id, &td) {
        assert_eq!(b.id(&td), id);
        assert!(Builtin::is_reserved(&id, &td));
    }
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let raw = u.ratio(1, 4)?;
    let td = if raw {
        common::text(u, 80)?
    } else {
        build(u, TD_PIECES, 6)?
    };
    check_td(&td);
    let id = if raw {
        common::text(u, 300)?
    } else {
        let path = build(u, PATH_PIECES, 8)?;
        let sep = if path.is_empty() || u.ratio(1, 8)? {
            ""
        } else {
            "/"
        };
        let scheme = if u.ratio(1, 16)? {
            "SPIFFE://"
        } else {
            "spiffe://"
        };
        format!("{scheme}{td}{sep}{path}")
    };
    check_id(&id);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
