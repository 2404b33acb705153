//! Reference tokens and their bindings (`spike_core::token`), and the gateway's token finder
//! (`spike_gateway::locate::tokens_in`): parsing never panics; an accepted `$SPIKE{ref:…}`
//! renders back to exactly its text; a token built from the data's bits parses back to the
//! same bits, in any amount of surrounding text, where the finder reports it at its offset;
//! locations, destinations and actions display as text that parses to the same value, and
//! destinations are normalized (lower case, no trailing dot, a port from 1 to 65535).
#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use common::text;
use libfuzzer_sys::fuzz_target;
use spike_core::token::{
    Destination, REF_LEN, REF_PREFIX, TOKEN_TEXT_LEN, TokenAction, TokenLocation, TokenRef,
};
use spike_gateway::locate::tokens_in;

const PIECES: &[&str] = &[
    "$SPIKE{ref:",
    "}",
    "0123456789abcdef",
    "ABCDEF",
    "header:",
    "query:",
    "body",
    "Authorization",
    "api.",
    "example.com",
    ".",
    ":",
    "443",
    "0",
    "65536",
    "[",
    "]",
    "::1",
    "xn--",
    "\u{e9}",
    "read",
    "write",
    "admin",
    "/",
    "@",
    " ",
    "-",
];

fn check_ref(s: &str) {
    if let Ok(t) = TokenRef::parse(s) {
        assert_eq!(t.to_token_string().expose_secret(), s);
        assert_eq!(s.len(), TOKEN_TEXT_LEN);
        assert_eq!(format!("{t:?}"), "TokenRef([redacted])");
    }
}

fn check_location(s: &str) {
    if let Ok(l) = s.parse::<TokenLocation>() {
        let shown = l.to_string();
        assert_eq!(shown.parse::<TokenLocation>().as_ref(), Ok(&l));
        assert_eq!(common::json_round_trip(&l), l);
        if let TokenLocation::Header(name) = &l {
            assert_eq!(*name, name.to_ascii_lowercase());
        }
    }
}

fn check_destination(s: &str) {
    if let Ok(d) = Destination::parse(s) {
        let host = d.host();
        assert!(
            !host.is_empty() && !host.ends_with('.'),
            "{s:?} gave host {host:?}"
        );
        assert_eq!(host, host.to_ascii_lowercase(), "{s:?}");
        assert!(host.is_ascii());
        assert!(d.port() > 0);
        let shown = d.to_string();
        assert_eq!(shown, format!("{host}:{}", d.port()));
        assert_eq!(
            Destination::parse(&shown).as_ref(),
            Ok(&d),
            "{s:?} -> {shown}"
        );
        assert_eq!(common::json_round_trip(&d), d);
    }
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let s = common::build(u, PIECES, 12)?;
    check_ref(&s);
    check_location(&s);
    check_destination(&s);
    if let Ok(a) = s.parse::<TokenAction>() {
        assert_eq!(a.to_string(), s);
        assert_eq!(common::json_round_trip(&a), a);
    }
    // A token from the data's bits, amid text.
    let bits: [u8; REF_LEN] = u.arbitrary()?;
    let token = format!("{REF_PREFIX}{}}}", hex::encode(bits));
    let parsed = TokenRef::parse(&token).expect("a well-formed token parses");
    assert_eq!(parsed.expose_secret(), &bits);
    let before = text(u, 64)?;
    let after = text(u, 64)?;
    let hay = format!("{before}{token}{after}");
    let found = tokens_in(hay.as_bytes());
    assert!(
        found.iter().any(|(at, t)| *at == before.len() && *t == parsed)
            // A token's text may start inside `before` and swallow the start of ours.
            || found.iter().any(|(at, _)| *at < before.len() && at + TOKEN_TEXT_LEN > before.len()),
        "the token in {hay:?} was not found: {:?}",
        found.iter().map(|(at, _)| at).collect::<Vec<_>>()
    );
    // Whatever the finder reports is a token at that offset, and reports do not overlap.
    for (hay, list) in [
        (s.as_bytes(), tokens_in(s.as_bytes())),
        (hay.as_bytes(), found),
    ] {
        let mut end = 0;
        for (at, t) in &list {
            assert!(*at >= end, "overlapping tokens");
            end = at + TOKEN_TEXT_LEN;
            let text = std::str::from_utf8(&hay[*at..end]).expect("a token is ASCII");
            assert_eq!(TokenRef::parse(text).as_ref(), Ok(t));
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
