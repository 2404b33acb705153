//! Fuzzes the scrubber and the request detector with values the fuzzer chooses, written in
//! the forms and escapings the gateway promises to catch, amid text the fuzzer chooses, cut
//! into chunks it chooses. The checks are the property tests' (`gateway/tests/support/
//! scrub_oracle.rs`): no value survives in any view; every chunking gives the same output;
//! the detectors find a value exactly when the oracle sees one; text without one passes
//! unchanged.
#![no_main]

#[path = "../../gateway/tests/support/scrub_oracle.rs"]
mod scrub_oracle;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use scrub_oracle::{Escaping, Form, Occurrence, assemble, check_scrubbed, scrub_set};

/// Most values in a set, and occurrences in a text, per input: enough to mix them.
const MAX_VALUES: usize = 3;
const MAX_PARTS: usize = 4;

fn bytes(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<u8>> {
    let len = u.int_in_range(0..=max)?;
    Ok(u.bytes(len)?.to_vec())
}

fn occurrence(u: &mut Unstructured<'_>) -> Result<Occurrence> {
    let value = usize::from(u.arbitrary::<u8>()?);
    let form = match u.int_in_range(0..=2u8)? {
        0 => Form::Raw,
        1 => Form::Hex,
        _ => Form::Base64 {
            url_safe: u.arbitrary()?,
            padded: u.arbitrary()?,
            before: bytes(u, 4)?,
            after: bytes(u, 4)?,
        },
    };
    let escaping = match u.int_in_range(0..=3u8)? {
        0 => Escaping::None,
        1 => Escaping::Percent,
        2 => Escaping::Json,
        _ => Escaping::Html,
    };
    let mut bits: Vec<bool> = (0..u.int_in_range(1..=64)?)
        .map(|_| u.arbitrary())
        .collect::<Result<_>>()?;
    if bits.is_empty() {
        bits.push(false);
    }
    Ok(Occurrence {
        value,
        form,
        escaping,
        bits,
    })
}

fn run(mut u: Unstructured<'_>) -> Result<()> {
    let values: Vec<Vec<u8>> = (0..u.int_in_range(1..=MAX_VALUES)?)
        .map(|_| {
            let len = u.int_in_range(8..=64)?;
            Ok(u.bytes(len)?.to_vec())
        })
        .collect::<Result<_>>()?;
    let Some(set) = scrub_set(&values) else {
        return Ok(());
    };
    let parts: Vec<(Vec<u8>, Occurrence)> = (0..u.int_in_range(0..=MAX_PARTS)?)
        .map(|_| Ok((bytes(&mut u, 40)?, occurrence(&mut u)?)))
        .collect::<Result<_>>()?;
    let cuts: Vec<usize> = (0..u.int_in_range(0..=12)?)
        .map(|_| u.arbitrary::<u16>().map(usize::from))
        .collect::<Result<_>>()?;
    // What is left is more text, as it comes.
    let tail = u.take_rest().to_vec();
    let input = assemble(&values, &parts, &tail);
    check_scrubbed(&set, &values, &input, &cuts);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    // Input too short for a whole case is simply not a case.
    let _ = run(Unstructured::new(data));
});
