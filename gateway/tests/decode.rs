//! Response decoding on real compressed data made by the encoders of each format.
#![allow(clippy::unwrap_used)] // Fixtures panic when an encoder fails.

use std::io::Write as _;
use std::sync::Arc;

use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use proptest::prelude::*;
use spike_gateway::decode::{ContentCoding, DecodeError, Decoder, Limits, parse_content_encoding};
use spike_gateway::{ScrubSet, Scrubber};

/// A body like an inference API's: JSON lines, compressible but not trivially.
fn body() -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..3000u32 {
        writeln!(
            body,
            r#"{{"id":"chatcmpl-{i}","choices":[{{"delta":{{"content":"token {} of {}"}}}}]}}"#,
            i.wrapping_mul(2_654_435_761),
            i % 17
        )
        .unwrap();
    }
    body
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// An encoder of a test input.
type Encode = fn(&[u8]) -> Vec<u8>;

/// Each `Content-Encoding` with an encoder for it (two for `deflate`: zlib and raw).
fn encoders() -> [(&'static str, Encode); 5] {
    [
        ("gzip", gzip),
        ("deflate", zlib),
        ("deflate", raw_deflate),
        ("br", brotli),
        ("zstd", zstd),
    ]
}

/// Decodes `encoded` pushed in chunks of `size`.
fn decode(
    header: &str,
    encoded: &[u8],
    size: usize,
    limits: Limits,
) -> Result<Vec<u8>, DecodeError> {
    let mut decoder = Decoder::from_header(header.as_bytes(), limits)?;
    let mut out = Vec::new();
    for chunk in encoded.chunks(size) {
        out.extend_from_slice(&decoder.push(chunk)?);
    }
    out.extend_from_slice(&decoder.finish()?);
    Ok(out)
}

#[test]
fn every_coding_decodes_whatever_the_chunking() {
    let body = body();
    for (header, encode) in encoders() {
        let encoded = encode(&body);
        assert!(encoded.len() < body.len() / 3, "{header} compresses");
        for size in [1, 7, 1000, encoded.len()] {
            let decoded = decode(header, &encoded, size, Limits::default()).unwrap();
            assert!(decoded == body, "{header} in chunks of {size}");
        }
    }
}

#[test]
fn output_streams_before_the_body_ends() {
    // An event stream must not wait for the end of the body: the first half of the encoded
    // data already decodes to most of the first half of the body.
    let body = body();
    for (header, encode) in encoders().into_iter().filter(|(h, _)| *h != "zstd") {
        let encoded = encode(&body);
        let mut decoder = Decoder::from_header(header.as_bytes(), Limits::default()).unwrap();
        let first = decoder.push(&encoded[..encoded.len() / 2]).unwrap();
        assert!(
            first.len() > body.len() / 4,
            "{header}: {} bytes",
            first.len()
        );
        assert!(body.starts_with(&first));
    }
}

#[test]
fn zstd_output_lags_by_at_most_the_window() {
    // ruzstd keeps the frame's window in its buffer until the frame ends, so output lags the
    // input by up to the window; past it, it streams.
    let body: Vec<u8> = std::iter::repeat_n(body(), 16).flatten().collect();
    let encoded = zstd(&body);
    let mut decoder = Decoder::from_header(b"zstd", Limits::default()).unwrap();
    let first = decoder.push(&encoded[..encoded.len() / 2]).unwrap();
    assert!(
        first.len() >= (body.len() / 2).saturating_sub(8 << 20),
        "{} bytes",
        first.len()
    );
    assert!(!first.is_empty() && body.starts_with(&first));
}

#[test]
fn chained_codings_are_undone_right_to_left() {
    let body = body();
    let encoded = brotli(&gzip(&body));
    assert_eq!(
        decode("gzip, br", &encoded, 333, Limits::default()).unwrap(),
        body
    );
    let encoded = zstd(&zlib(&body));
    assert_eq!(
        decode("deflate,identity, zstd", &encoded, 4096, Limits::default()).unwrap(),
        body
    );
}

#[test]
fn gzip_members_in_a_row_are_one_body() {
    let body = body();
    let (a, b) = body.split_at(body.len() / 3);
    let encoded = [gzip(a), gzip(b)].concat();
    assert_eq!(
        decode("gzip", &encoded, 512, Limits::default()).unwrap(),
        body
    );
}

#[test]
fn zstd_skips_skippable_frames_and_reads_frames_in_a_row() {
    let body = body();
    let (a, b) = body.split_at(body.len() / 2);
    let skippable = [
        &0x184D_2A53u32.to_le_bytes()[..],
        &5u32.to_le_bytes(),
        b"hello",
    ]
    .concat();
    let encoded = [skippable, zstd(a), zstd(b)].concat();
    for size in [1, 100, encoded.len()] {
        assert_eq!(
            decode("zstd", &encoded, size, Limits::default()).unwrap(),
            body
        );
    }
}

#[test]
fn header_parsing_takes_known_codings_only() {
    assert_eq!(
        parse_content_encoding(b" GZIP , x-gzip,br ,zstd").unwrap(),
        [
            ContentCoding::Gzip,
            ContentCoding::Gzip,
            ContentCoding::Brotli,
            ContentCoding::Zstd
        ]
    );
    assert_eq!(
        parse_content_encoding(b"Deflate").unwrap(),
        [ContentCoding::Deflate]
    );
    assert_eq!(
        parse_content_encoding(b"gzip,gzip,gzip,gzip,gzip"),
        Err(DecodeError::TooManyCodings)
    );
    for unknown in [
        &b"compress"[..],
        b"x-secret-sk-live-123",
        b"gzip;q=1",
        b"dcb",
    ] {
        assert_eq!(
            parse_content_encoding(unknown),
            Err(DecodeError::UnsupportedCoding)
        );
    }
    assert!(parse_content_encoding(b"identity, ").unwrap().is_empty());
    assert!(
        Decoder::from_header(b"identity", Limits::default())
            .unwrap()
            .is_identity()
    );
    // The upstream's header text is never repeated in the error.
    let error = Decoder::from_header(b"x-secret-sk-live-123", Limits::default()).unwrap_err();
    assert!(!error.to_string().contains("sk-live"));
}

#[test]
fn truncated_bodies_are_errors() {
    let body = body();
    for (header, encode) in encoders() {
        let encoded = encode(&body);
        let cut = &encoded[..encoded.len() - 5];
        let error = decode(header, cut, 4096, Limits::default()).unwrap_err();
        assert!(
            matches!(error, DecodeError::Truncated(_) | DecodeError::Corrupt(_)),
            "{header}: {error:?}"
        );
    }
    for header in ["gzip", "deflate", "br", "zstd"] {
        assert!(
            matches!(
                decode(header, &[], 1, Limits::default()),
                Err(DecodeError::Truncated(_))
            ),
            "empty {header}"
        );
    }
}

#[test]
fn corrupt_and_trailing_data_are_errors() {
    let body = body();
    for (i, (header, encode)) in encoders().into_iter().enumerate() {
        let mut encoded = encode(&body);
        let middle = encoded.len() / 2;
        for b in &mut encoded[middle..middle + 16] {
            *b ^= 0x55;
        }
        // Raw deflate has no checksum: damage in the middle can decode to other bytes without
        // an error (which are scrubbed like any others). Every other format is checked.
        if i != 2 {
            assert!(
                decode(header, &encoded, 4096, Limits::default()).is_err(),
                "{header} corrupt"
            );
        }
        let trailing = [encode(&body), b"garbage after the end".to_vec()].concat();
        assert!(
            decode(header, &trailing, 4096, Limits::default()).is_err(),
            "{header} trailing"
        );
    }
}

#[test]
fn bombs_stop_at_the_size_cap() {
    let zeros = vec![0u8; 8 << 20];
    let limits = Limits {
        max_decoded: 1 << 20,
        max_ratio: u64::MAX,
        ratio_allowance: 0,
    };
    for (header, encode) in encoders() {
        let bomb = encode(&zeros);
        assert!(bomb.len() < 64 << 10, "{header}: {} bytes", bomb.len());
        let mut decoder = Decoder::from_header(header.as_bytes(), limits).unwrap();
        let mut decoded = 0usize;
        let error = bomb
            .chunks(1024)
            .try_for_each(|chunk| decoder.push(chunk).map(|out| decoded += out.len()))
            .unwrap_err();
        assert_eq!(error, DecodeError::TooLarge { limit: 1 << 20 }, "{header}");
        assert!(decoded <= 1 << 20, "{header}: {decoded} bytes out");
    }
}

#[test]
fn bombs_stop_at_the_expansion_ratio() {
    let zeros = vec![0u8; 8 << 20];
    let limits = Limits {
        max_decoded: u64::MAX,
        max_ratio: 50,
        ratio_allowance: 64 << 10,
    };
    for (header, encode) in encoders() {
        let bomb = encode(&zeros);
        let error = decode(header, &bomb, 4096, limits).unwrap_err();
        assert_eq!(error, DecodeError::Expansion { ratio: 50 }, "{header}");
    }
    // An ordinary body is well within the same limits.
    let body = body();
    for (header, encode) in encoders() {
        assert_eq!(
            decode(header, &encode(&body), 4096, limits).unwrap(),
            body,
            "{header}"
        );
    }
}

#[test]
fn a_chained_bomb_stops_in_its_inner_stage() {
    let bomb = gzip(&gzip(&vec![0u8; 16 << 20]));
    let limits = Limits {
        max_decoded: 1 << 20,
        max_ratio: u64::MAX,
        ratio_allowance: 0,
    };
    assert_eq!(
        decode("gzip, gzip", &bomb, 4096, limits).unwrap_err(),
        DecodeError::TooLarge { limit: 1 << 20 }
    );
}

#[test]
fn zstd_windows_beyond_8_mib_are_refused() {
    // Frame header: magic, descriptor with a window byte and nothing else, window 2^(10+14).
    let frame = [
        &0xFD2F_B528u32.to_le_bytes()[..],
        &[0x00, 14 << 3],
        &[0x01, 0x00, 0x00],
    ]
    .concat();
    assert_eq!(
        decode("zstd", &frame, 64, Limits::default()).unwrap_err(),
        DecodeError::Corrupt(ContentCoding::Zstd)
    );
}

#[test]
fn a_value_inside_a_compressed_body_is_scrubbed() {
    let token = "$SPIKE{ref:0123456789abcdef0123456789abcdef}";
    let mut set = ScrubSet::new();
    set.insert(b"sk-live-ZXCVBNM987", token).unwrap();
    let body = [
        body(),
        br#"{"error":"invalid key sk-live-ZXCVBNM987"}"#.to_vec(),
    ]
    .concat();
    for (header, encode) in encoders() {
        let encoded = encode(&body);
        let mut decoder = Decoder::from_header(header.as_bytes(), Limits::default()).unwrap();
        let mut scrubber = Scrubber::new(Arc::new(set.clone()));
        let mut out = Vec::new();
        for chunk in encoded.chunks(100) {
            out.extend_from_slice(&scrubber.push(&decoder.push(chunk).unwrap()));
        }
        out.extend_from_slice(&scrubber.push(&decoder.finish().unwrap()));
        out.extend_from_slice(&scrubber.finish());
        assert!(
            out.ends_with(format!(r#"{{"error":"invalid key {token}"}}"#).as_bytes()),
            "{header}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any body, compressible or not, decodes to itself in every coding whatever the chunking.
    #[test]
    fn any_body_round_trips_whatever_the_chunking(
        body in (prop::collection::vec(any::<u8>(), 0..6000), 1usize..5)
            .prop_map(|(noise, repeat)| noise.repeat(repeat)),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        for (header, encode) in encoders() {
            let encoded = encode(&body);
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (encoded.len() + 1)).collect();
            points.sort_unstable();
            let mut decoder = Decoder::from_header(header.as_bytes(), Limits::default()).unwrap();
            let mut out = Vec::new();
            let mut from = 0;
            for cut in points.into_iter().chain([encoded.len()]) {
                out.extend_from_slice(&decoder.push(&encoded[from..cut]).unwrap());
                from = cut;
            }
            out.extend_from_slice(&decoder.finish().unwrap());
            prop_assert_eq!(&out, &body, "{}", header);
        }
    }

    /// Garbage, or damaged real data, is an error or some output, never a panic.
    #[test]
    fn damaged_data_never_panics(
        noise in prop::collection::vec(any::<u8>(), 0..3000),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        real in any::<bool>(),
    ) {
        for (header, encode) in encoders() {
            let mut data = if real { encode(&noise) } else { noise.clone() };
            for &(at, mask) in &flips {
                if !data.is_empty() {
                    let at = at % data.len();
                    data[at] ^= mask;
                }
            }
            let _ = decode(header, &data, 97, Limits::default());
        }
    }
}
