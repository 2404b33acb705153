//! The scrubber and the detector on each encoding and escaping, written out by hand.
#![allow(clippy::unwrap_used)] // Test helpers panic on a broken fixture.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use spike_gateway::{
    Detector, Encoding, Escaping, ScrubSet, Scrubber, find_known_value, scrub, scrub_header_value,
};

const TOKEN: &str = "$SPIKE{ref:9f2c4e1a0b3d5f7e9a8c6b4d2f0e1a3c}";
const OTHER: &str = "$SPIKE{ref:00000000000000000000000000000001}";
/// Has `/` and `+` in its standard base64 and a `"` and `&` to escape.
const VALUE: &[u8] = b"sk-\"live\"&4f9a?~~>x";

fn set() -> Arc<ScrubSet> {
    let mut set = ScrubSet::new();
    set.insert(VALUE, TOKEN).unwrap();
    Arc::new(set)
}

fn scrubbed(input: &[u8]) -> String {
    String::from_utf8(scrub(&set(), input).into_owned()).unwrap()
}

/// Scrubs `input` pushed in chunks of `size` bytes.
fn scrubbed_in_chunks(set: &Arc<ScrubSet>, input: &[u8], size: usize) -> Vec<u8> {
    let mut scrubber = Scrubber::new(Arc::clone(set));
    let mut out = Vec::new();
    for chunk in input.chunks(size) {
        out.extend_from_slice(&scrubber.push(chunk));
    }
    out.extend_from_slice(&scrubber.finish());
    out
}

#[test]
fn raw_value_is_replaced_by_its_token() {
    let input = [b"error: key ".as_slice(), VALUE, b" is invalid"].concat();
    assert_eq!(scrubbed(&input), format!("error: key {TOKEN} is invalid"));
}

#[test]
fn base64_is_replaced_at_every_alignment_with_its_boundary_characters() {
    let std_value = STANDARD.encode(VALUE);
    assert!(std_value.contains('/') || std_value.contains('+'));
    for (engine, name) in [(&STANDARD_NO_PAD, "std"), (&URL_SAFE_NO_PAD, "url")] {
        for before in 0..6 {
            for after in 0..4 {
                let mut data = vec![0xA5u8; before];
                data.extend_from_slice(VALUE);
                data.extend(std::iter::repeat_n(0x5Au8, after));
                let encoded = engine.encode(&data);
                let out = scrubbed(format!("x:{encoded}=;").as_bytes());
                // Characters that carry only neighbour bits survive; every character that
                // carries a bit of the value is gone.
                let kept_before = (8 * before) / 6;
                let kept_after_from = (8 * (before + VALUE.len())).div_ceil(6);
                let expected = format!(
                    "x:{}{TOKEN}{}=;",
                    &encoded[..kept_before],
                    &encoded[kept_after_from..]
                );
                assert_eq!(out, expected, "{name} before={before} after={after}");
            }
        }
    }
}

#[test]
fn padded_standalone_base64_is_replaced() {
    let out = scrubbed(format!("{{\"k\":\"{}\"}}", STANDARD.encode(VALUE)).as_bytes());
    // The value is 19 bytes: one boundary character, then the padding, which carries no bits.
    assert_eq!(out, format!("{{\"k\":\"{TOKEN}==\"}}"));
}

#[test]
fn hex_in_any_case_is_replaced() {
    let lower = hex::encode(VALUE);
    let upper = lower.to_uppercase();
    let mixed: String = lower
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 3 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    for form in [lower, upper, mixed] {
        assert_eq!(
            scrubbed(format!("<{form}>").as_bytes()),
            format!("<{TOKEN}>")
        );
    }
}

#[test]
fn percent_encoding_full_partial_and_either_case_is_replaced() {
    let full: String = VALUE.iter().map(|b| format!("%{b:02X}")).collect();
    let lower = full.to_lowercase();
    let partial = "sk-%22live%22%264f9a%3F~%7e%3Ex";
    for form in [full, lower, partial.to_owned()] {
        assert_eq!(
            scrubbed(format!("GET /?q={form}&x=1").as_bytes()),
            format!("GET /?q={TOKEN}&x=1")
        );
    }
}

#[test]
fn json_escapes_full_partial_and_either_case_are_replaced() {
    let minimal = r#"sk-\"live\"&4f9a?~~>x"#;
    let partial = r#"\u0073k-\"l\u0069ve\u0022&4f9a?~\u007E\u003ex"#;
    let full: String = VALUE.iter().map(|b| format!("\\u{b:04X}")).collect();
    for form in [minimal.to_owned(), partial.to_owned(), full] {
        assert_eq!(
            scrubbed(format!("{{\"detail\":\"{form}\"}}").as_bytes()),
            format!("{{\"detail\":\"{TOKEN}\"}}")
        );
    }
}

#[test]
fn json_surrogate_pairs_and_escaped_base64_slashes_are_replaced() {
    let mut set = ScrubSet::new();
    set.insert("key-😀-ünï".as_bytes(), TOKEN).unwrap();
    // `/` and `+` occur in VALUE's base64, which JSON encoders may write as `\/`.
    set.insert(VALUE, OTHER).unwrap();
    let set = Arc::new(set);
    let emoji = r#"{"a":"key-\ud83d\uDE00-\u00fcn\u00EF"}"#;
    assert_eq!(
        scrub(&set, emoji.as_bytes()).as_ref(),
        format!(r#"{{"a":"{TOKEN}"}}"#).as_bytes()
    );
    let b64 = STANDARD.encode(VALUE).replace('/', "\\/");
    assert!(b64.contains("\\/"));
    let out = scrub(&set, format!(r#"{{"b":"{b64}"}}"#).as_bytes()).into_owned();
    assert_eq!(out, format!(r#"{{"b":"{OTHER}=="}}"#).as_bytes());
}

#[test]
fn html_references_numeric_named_and_partial_are_replaced() {
    let named = "sk-&quot;live&quot;&amp;4f9a?~~&gt;x";
    let numeric: String = VALUE.iter().map(|b| format!("&#{b};")).collect();
    let hex_refs: String = VALUE.iter().map(|b| format!("&#x{b:x};")).collect();
    let partial = "s&#x6B;-&#34;live\"&amp;4f9a?~&#X7E;&gt;x";
    for form in [named.to_owned(), numeric, hex_refs, partial.to_owned()] {
        assert_eq!(
            scrubbed(format!("<p>{form}</p>").as_bytes()),
            format!("<p>{TOKEN}</p>")
        );
    }
}

#[test]
fn base64_and_hex_are_found_under_escaping() {
    let pct = STANDARD
        .encode(VALUE)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let html_hex: String = hex::encode(VALUE)
        .bytes()
        .map(|b| format!("&#{b};"))
        .collect();
    assert_eq!(
        scrubbed(format!("?t={pct}").as_bytes()),
        format!("?t={TOKEN}%3D%3D")
    );
    assert_eq!(scrubbed(html_hex.as_bytes()), TOKEN);
}

#[test]
fn every_split_gives_the_one_shot_output() {
    let set = set();
    let input = format!(
        "data: {{\"a\":\"{}\",\"b\":\"{}\",\"c\":\"{}\"}}\n\n",
        String::from_utf8_lossy(VALUE).replace('"', "\\\""),
        STANDARD_NO_PAD.encode([b"ab".as_slice(), VALUE, b"c"].concat()),
        hex::encode_upper(VALUE)
    );
    let one_shot = scrub(&set, input.as_bytes()).into_owned();
    assert_eq!(
        one_shot
            .windows(TOKEN.len())
            .filter(|w| *w == TOKEN.as_bytes())
            .count(),
        3
    );
    for size in 1..input.len() {
        assert_eq!(
            scrubbed_in_chunks(&set, input.as_bytes(), size),
            one_shot,
            "size {size}"
        );
    }
    for split in 0..input.len() {
        let mut scrubber = Scrubber::new(Arc::clone(&set));
        let mut out = scrubber.push(&input.as_bytes()[..split]).to_vec();
        out.extend_from_slice(&scrubber.push(&input.as_bytes()[split..]));
        out.extend_from_slice(&scrubber.finish());
        assert_eq!(out, one_shot, "split {split}");
    }
}

#[test]
fn ordinary_sse_events_are_not_held_back() {
    let mut scrubber = Scrubber::new(set());
    for event in [
        &b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n"[..],
        b"data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
        b"data: [DONE]\n\n",
    ] {
        assert_eq!(scrubber.push(event).as_ref(), event);
        assert_eq!(scrubber.held_back(), 0);
    }
}

#[test]
fn a_partial_match_is_held_back_until_it_resolves() {
    let mut scrubber = Scrubber::new(set());
    assert_eq!(scrubber.push(b"ok sk-\"li").as_ref(), b"ok ");
    assert_eq!(scrubber.held_back(), 6);
    // The last letter could still be the boundary character of a base64 form that starts
    // after it; a character that cannot be ends the hold.
    assert_eq!(scrubber.push(b"mp").as_ref(), b"sk-\"lim");
    assert_eq!(scrubber.held_back(), 1);
    assert_eq!(scrubber.push(b"!").as_ref(), b"p!");
    assert_eq!(scrubber.held_back(), 0);
}

#[test]
fn adjacent_values_get_a_token_each_and_overlaps_one() {
    let mut set = ScrubSet::new();
    set.insert(b"first-secret", TOKEN).unwrap();
    set.insert(b"second-secret", OTHER).unwrap();
    set.insert(b"secret-overlap", "$SPIKE{ref:3}").unwrap();
    let set = Arc::new(set);
    assert_eq!(
        scrub(&set, b"first-secretsecond-secret").as_ref(),
        format!("{TOKEN}{OTHER}").as_bytes()
    );
    // "first-secret" and "secret-overlap" overlap in "first-secret-overlap".
    assert_eq!(
        scrub(&set, b"first-secret-overlap!").as_ref(),
        format!("{TOKEN}!").as_bytes()
    );
}

#[test]
fn a_periodic_value_in_a_long_run_is_never_held_back_unbounded() {
    let mut set = ScrubSet::new();
    set.insert(b"aaaaaaaa", TOKEN).unwrap();
    let set = Arc::new(set);
    let mut scrubber = Scrubber::new(Arc::clone(&set));
    let mut out = Vec::new();
    for _ in 0..1000 {
        out.extend_from_slice(&scrubber.push(b"aaaaaaaaaaaaaaaa"));
        assert!(scrubber.held_back() <= set.max_held_back());
    }
    out.extend_from_slice(&scrubber.finish());
    assert!(!out.windows(8).any(|w| w == b"aaaaaaaa"));
}

#[test]
fn text_without_values_is_borrowed_unchanged() {
    let set = set();
    let text = b"HTTP/1.1 {\"id\":\"chatcmpl-1\",\"x\":\"%41\\u0041&amp;\"} sk-\"live\"&4f9a?";
    assert!(matches!(scrub(&set, text), Cow::Borrowed(t) if t == text));
    assert!(matches!(
        scrub_header_value(&set, b"text/event-stream"),
        Cow::Borrowed(_)
    ));
    let header = [b"Bearer ", VALUE].concat();
    let changed = scrub_header_value(&set, &header);
    assert!(matches!(&changed, Cow::Owned(v) if v == format!("Bearer {TOKEN}").as_bytes()));
    assert!(matches!(
        scrub(&Arc::new(ScrubSet::new()), VALUE),
        Cow::Borrowed(_)
    ));
}

#[test]
fn finds_a_known_value_in_a_request_with_its_form() {
    let set = set();
    let cases: [(String, Encoding, Escaping); 5] = [
        (
            String::from_utf8_lossy(VALUE).into_owned(),
            Encoding::Raw,
            Escaping::None,
        ),
        (STANDARD.encode(VALUE), Encoding::Base64, Escaping::None),
        (
            URL_SAFE_NO_PAD.encode(VALUE),
            Encoding::Base64Url,
            Escaping::None,
        ),
        (hex::encode_upper(VALUE), Encoding::Hex, Escaping::None),
        (
            VALUE.iter().map(|b| format!("%{b:02x}")).collect(),
            Encoding::Raw,
            Escaping::Percent,
        ),
    ];
    for (form, encoding, escaping) in cases {
        let request = format!("POST /v1 {{\"prompt\":\"{form}\"}}");
        let found = find_known_value(&set, request.as_bytes()).expect(&form);
        assert_eq!(
            (found.encoding, found.escaping),
            (encoding, escaping),
            "{form}"
        );
        assert_eq!(&*found.reference, TOKEN);
        assert!(found.span.start >= 19 && found.span.end <= request.len() as u64);
    }
    assert_eq!(
        find_known_value(&set, format!("Authorization: {TOKEN}").as_bytes()),
        None
    );
}

#[test]
fn the_streaming_detector_finds_a_value_split_across_chunks() {
    let set = set();
    let body = [b"{\"messages\":[\"".as_slice(), VALUE, b"\"]}"].concat();
    let mut detector = Detector::new(Arc::clone(&set));
    let mut found = None;
    for chunk in body.chunks(3) {
        found = found.or(detector.push(chunk));
    }
    let found = found.or(detector.finish()).expect("found");
    assert_eq!(found.encoding, Encoding::Raw);
    assert_eq!(found.span, 14..14 + VALUE.len() as u64);

    let mut clean = Detector::new(set);
    assert_eq!(clean.push(b"{\"messages\":[\"hello\"]}"), None);
    assert_eq!(clean.finish(), None);
}

#[test]
fn overlapping_values_and_periodic_runs_give_the_one_shot_output_for_every_chunking() {
    let mut set = ScrubSet::new();
    set.insert(b"first-secret", TOKEN).unwrap();
    set.insert(b"secret-overlap", OTHER).unwrap();
    set.insert(b"aaaaaaaa", "$SPIKE{ref:3}").unwrap();
    let set = Arc::new(set);
    let run = "a".repeat(3 * set.longest_region() + 17);
    let input = format!("x first-secret-overlap y {run} z first-secretsecret-overlap!");
    let one_shot = scrub(&set, input.as_bytes()).into_owned();
    // The run is cut into pieces of the longest region, each replaced.
    let pieces = run.len().div_ceil(set.longest_region());
    assert_eq!(
        String::from_utf8(one_shot.clone()).unwrap(),
        format!(
            "x {TOKEN} y {} z {TOKEN}{OTHER}!",
            "$SPIKE{ref:3}".repeat(pieces)
        )
    );
    for size in 1..64 {
        assert_eq!(
            scrubbed_in_chunks(&set, input.as_bytes(), size),
            one_shot,
            "size {size}"
        );
    }
}

#[test]
fn debug_output_shows_no_held_back_value() {
    let set = set();
    let mut scrubber = Scrubber::new(Arc::clone(&set));
    let _ = scrubber.push(&VALUE[..VALUE.len() - 1]);
    assert!(scrubber.held_back() >= VALUE.len() - 1);
    let mut detector = Detector::new(set);
    let _ = detector.push(&VALUE[..VALUE.len() - 1]);
    for shown in [format!("{scrubber:?}"), format!("{detector:?}")] {
        assert!(!shown.contains("live"), "{shown}");
        assert!(!shown.contains("115, 107"), "{shown}"); // "sk" as a byte list
    }
}

#[test]
fn scrubbers_and_detectors_can_move_between_threads() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<ScrubSet>();
    send_and_sync::<Scrubber>();
    send_and_sync::<Detector>();
    fn send<T: Send>() {}
    send::<spike_gateway::decode::Decoder>();
}

#[test]
fn push_bytes_passes_clean_frames_without_a_copy_and_otherwise_matches_push() {
    let set = set();
    let frames: Vec<Vec<u8>> = vec![
        b"data: {\"a\":\"hello\"}\n\n".to_vec(),
        [b"data: {\"k\":\"".as_slice(), &VALUE[..5]].concat(),
        [&VALUE[5..], b"\"}\n\n".as_slice()].concat(),
        b"data: [DONE]\n\n".to_vec(),
    ];
    let mut by_slice = Scrubber::new(Arc::clone(&set));
    let mut by_bytes = Scrubber::new(set);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, frame) in frames.iter().enumerate() {
        a.extend_from_slice(&by_slice.push(frame));
        let frame = bytes::Bytes::from(frame.clone());
        let out = by_bytes.push_bytes(frame.clone());
        if i == 0 || i == 3 {
            assert_eq!(out.as_ptr(), frame.as_ptr(), "frame {i} was copied");
        }
        b.extend_from_slice(&out);
    }
    a.extend_from_slice(&by_slice.finish());
    b.extend_from_slice(&by_bytes.finish());
    assert_eq!(a, b);
    assert_eq!(
        a,
        format!("data: {{\"a\":\"hello\"}}\n\ndata: {{\"k\":\"{TOKEN}\"}}\n\ndata: [DONE]\n\n")
            .as_bytes()
    );
}
