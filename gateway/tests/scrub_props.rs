//! Property tests: random values, random encodings and escapings of each occurrence, random
//! surrounding text and random chunking, checked by the oracle in `support/scrub_oracle.rs`
//! (shared with the fuzz target).
#![allow(clippy::unwrap_used)] // Strategies and oracles panic on a broken fixture.

#[path = "support/scrub_oracle.rs"]
mod scrub_oracle;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use proptest::prelude::*;
use scrub_oracle::{
    Escaping, Form, Occurrence, assemble, check_scrubbed, check_unchanged, leaks, may_leak,
    scrub_chunked, scrub_set,
};
use spike_gateway::find_known_value;

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 8..64),
        prop::collection::vec(0x20u8..0x7f, 8..64),
        prop::collection::vec(any::<char>(), 2..16)
            .prop_map(|cs| cs.into_iter().collect::<String>().into_bytes())
            .prop_filter("at least 8 bytes", |v| v.len() >= 8),
    ]
}

/// Text full of the characters that matter: escape introducers, base64 and hex characters.
fn text() -> impl Strategy<Value = Vec<u8>> {
    let interesting = prop::sample::select(b"aZ09+/=-_%\\&#;\"<>u x{}:,\n".to_vec());
    prop::collection::vec(prop_oneof![3 => interesting, 1 => any::<u8>()], 0..40)
}

fn form() -> impl Strategy<Value = Form> {
    let neighbours = || prop::collection::vec(any::<u8>(), 0..5);
    prop_oneof![
        Just(Form::Raw),
        Just(Form::Hex),
        (any::<bool>(), any::<bool>(), neighbours(), neighbours()).prop_map(
            |(url_safe, padded, before, after)| Form::Base64 {
                url_safe,
                padded,
                before,
                after
            }
        ),
    ]
}

fn occurrence() -> impl Strategy<Value = Occurrence> {
    (
        any::<usize>(),
        form(),
        prop_oneof![
            Just(Escaping::None),
            Just(Escaping::Percent),
            Just(Escaping::Json),
            Just(Escaping::Html),
        ],
        prop::collection::vec(any::<bool>(), 1..64),
    )
        .prop_map(|(value, form, escaping, bits)| Occurrence {
            value,
            form,
            escaping,
            bits,
        })
}

// ---- the properties --------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every occurrence is scrubbed, whatever its form and the chunking; the output is the
    /// same for every chunking; the detector finds the values.
    #[test]
    fn no_value_survives_in_any_view(
        values in prop::collection::vec(value(), 1..4),
        parts in prop::collection::vec((text(), occurrence()), 1..5),
        tail in text(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let set = scrub_set(&values);
        prop_assume!(set.is_some());
        let set = set.unwrap();
        let input = assemble(&values, &parts, &tail);
        check_scrubbed(&set, &values, &input, &cuts);
        prop_assert!(find_known_value(&set, &input).is_some());
    }

    /// Text that holds no value passes byte for byte, whatever the chunking.
    #[test]
    fn text_without_values_is_unchanged(
        values in prop::collection::vec(value(), 1..4),
        text in prop::collection::vec(text(), 1..20).prop_map(|t| t.concat()),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let set = scrub_set(&values);
        prop_assume!(set.is_some());
        let set = set.unwrap();
        prop_assume!(values.iter().all(|v| !may_leak(&text, v)));
        check_unchanged(&set, &text, &cuts);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Inside a longer base64 string, the replacement takes exactly the characters that carry
    /// a bit of the value: those that encode only neighbouring bytes stay, so nothing of the
    /// value is left to decode, not even a fragment of a byte.
    #[test]
    fn base64_keeps_only_characters_without_value_bits(
        value in value(),
        before in prop::collection::vec(any::<u8>(), 0..7),
        after in prop::collection::vec(any::<u8>(), 0..7),
        url_safe in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let set = scrub_set(std::slice::from_ref(&value));
        prop_assume!(set.is_some());
        let set = set.unwrap();
        let engine = if url_safe { &URL_SAFE } else { &STANDARD };
        let encoded = engine.encode([before.as_slice(), &value, &after].concat());
        let kept_before = 8 * before.len() / 6;
        let kept_after = (8 * (before.len() + value.len())).div_ceil(6);
        // The neighbours' own characters could by chance spell the value another way; then
        // more is replaced, which this property does not describe.
        prop_assume!(!leaks(&encoded.as_bytes()[..kept_before], &value));
        prop_assume!(!leaks(&encoded.as_bytes()[kept_after..], &value));
        let expected = format!(
            "({}$SPIKE{{ref:{:032x}}}{})",
            &encoded[..kept_before],
            0,
            &encoded[kept_after..]
        );
        let out = scrub_chunked(&set, format!("({encoded})").as_bytes(), &cuts);
        prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
