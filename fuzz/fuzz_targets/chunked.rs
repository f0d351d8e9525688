//! The chunked body scanner must not depend on how the body's bytes were
//! split into reads: fed whole, at fuzz-chosen cut points, or byte by byte,
//! it must give the same verdict (error, or bytes of the message, whether it
//! ended, data bytes), and never panic. Its decoding reader (which hands the
//! data on without the framing, as weir's HTTP/1 client does with a backend's
//! body) must give the same verdict as the scan, and the same data however
//! the bytes are cut.
//!
//! Input layout: byte 0 holds the number of cuts (low four bits), then two
//! little-endian bytes per cut give its position (modulo the body length + 1);
//! the rest is the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::http1::chunked::{ChunkError, ChunkedScanner};

/// Past this, byte-by-byte feeding costs more than it finds.
const BYTEWISE_MAX: usize = 4096;

fn feed(body: &[u8], cuts: &[usize]) -> Result<(usize, bool, u64), ChunkError> {
    let mut scanner = ChunkedScanner::default();
    let mut consumed = 0;
    let mut start = 0;
    for &end in cuts.iter().chain([&body.len()]) {
        if end < start || scanner.is_done() {
            continue;
        }
        consumed += scanner.scan(&body[start..end])?.consumed;
        start = end;
    }
    Ok((consumed, scanner.is_done(), scanner.data_bytes()))
}

/// Decodes `body` cut at `cuts`: the verdict as `feed` gives it, and the data.
fn decode(body: &[u8], cuts: &[usize]) -> (Result<(usize, bool, u64), ChunkError>, Vec<u8>) {
    let mut scanner = ChunkedScanner::default();
    let mut data = Vec::new();
    let mut at = 0;
    for &end in cuts.iter().chain([&body.len()]) {
        while at < end && !scanner.is_done() {
            let decoded = match scanner.decode(&body[at..end]) {
                Ok(decoded) => decoded,
                Err(error) => return (Err(error), data),
            };
            data.extend_from_slice(&body[at + decoded.framing..][..decoded.data]);
            at += decoded.framing + decoded.data;
            assert!(
                decoded.framing + decoded.data > 0 || decoded.done,
                "no progress"
            );
        }
    }
    let verdict = Ok((at, scanner.is_done(), scanner.data_bytes()));
    (verdict, data)
}

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count & 0x0f);
    if rest.len() < count * 2 {
        return;
    }
    let (positions, body) = rest.split_at(count * 2);
    let mut cuts: Vec<usize> = positions
        .chunks(2)
        .map(|p| usize::from(u16::from_le_bytes([p[0], p[1]])) % (body.len() + 1))
        .collect();
    cuts.sort_unstable();
    let whole = feed(body, &[]);
    assert_eq!(feed(body, &cuts), whole, "cut at {cuts:?}");
    if body.len() <= BYTEWISE_MAX {
        let every: Vec<usize> = (1..body.len()).collect();
        assert_eq!(feed(body, &every), whole, "byte by byte");
    }
    if let Ok((consumed, _, _)) = whole {
        assert!(consumed <= body.len());
    }
    let (decoded_whole, data_whole) = decode(body, &[]);
    assert_eq!(decoded_whole, whole, "decoded whole");
    if let Ok((_, _, data_bytes)) = whole {
        assert_eq!(data_whole.len() as u64, data_bytes);
    }
    let (decoded_cut, data_cut) = decode(body, &cuts);
    assert_eq!(decoded_cut, whole, "decoded, cut at {cuts:?}");
    assert_eq!(data_cut, data_whole, "decoded data, cut at {cuts:?}");
});
