//! The request stream scanner must not depend on how the connection's bytes
//! were split into reads: fed whole, at fuzz-chosen cut points, byte by byte, or
//! read as the listener does (body bytes it may skip are counted, not fed), it
//! must give the same conflict verdict and end in the same state.
//!
//! Input layout: byte 0 holds the number of cuts (low four bits), then two
//! little-endian bytes per cut give its position (modulo the stream length + 1);
//! the rest is the stream as the listener would read it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::listener::framing::HeadScan;

/// Past this, byte-by-byte feeding costs more than it finds.
const BYTEWISE_MAX: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Some read reported both framing headers in one head.
    conflict: bool,
    at_rest: bool,
    mid_head: bool,
    in_body: bool,
    unscanned_room: u64,
}

/// How each read reaches the scan.
#[derive(Clone, Copy)]
enum Reading {
    /// Every byte is fed.
    Fed,
    /// As the listener reads: a read that fits in the scan's unscanned room is
    /// only counted.
    Skipping,
}

fn scan<'a>(pieces: impl IntoIterator<Item = &'a [u8]>, reading: Reading) -> Outcome {
    let mut scan = HeadScan::default();
    // Any read's verdict counts, so the oracle holds whether the verdict is
    // sticky or reported once.
    let mut conflict = false;
    for piece in pieces {
        match reading {
            Reading::Skipping if scan.unscanned_room() >= piece.len() as u64 => {
                scan.skip(piece.len() as u64)
            }
            _ => conflict |= scan.feed(piece),
        }
    }
    Outcome {
        conflict,
        at_rest: scan.at_rest(),
        mid_head: scan.mid_head(),
        in_body: scan.in_body(),
        unscanned_room: scan.unscanned_room(),
    }
}

/// Splits `data` into cut points and the stream they cut.
fn cuts_and_stream(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let count = usize::from(count & 0x0f);
    if rest.len() < count * 2 {
        return (Vec::new(), rest);
    }
    let (positions, stream) = rest.split_at(count * 2);
    let mut cuts: Vec<usize> = positions
        .chunks_exact(2)
        .map(|pair| usize::from(u16::from_le_bytes([pair[0], pair[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    (cuts, stream)
}

fn pieces_at<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    // Equal cuts make empty reads, which must change nothing either.
    for &cut in cuts {
        pieces.push(&stream[from..cut]);
        from = cut;
    }
    pieces.push(&stream[from..]);
    pieces
}

fuzz_target!(|data: &[u8]| {
    let (cuts, stream) = cuts_and_stream(data);
    let whole = scan([stream], Reading::Fed);
    assert!(
        [whole.at_rest, whole.mid_head, whole.in_body]
            .iter()
            .filter(|&&state| state)
            .count()
            <= 1,
        "at rest, mid-head and in a body are exclusive: {whole:?}"
    );

    let pieces = pieces_at(stream, &cuts);
    let in_pieces = scan(pieces.iter().copied(), Reading::Fed);
    assert_eq!(whole, in_pieces, "fed whole vs cut at {cuts:?}");
    let skipping = scan(pieces.iter().copied(), Reading::Skipping);
    assert_eq!(
        whole, skipping,
        "fed whole vs read as the listener, cut at {cuts:?}"
    );

    if stream.len() <= BYTEWISE_MAX {
        let bytewise = scan(stream.chunks(1), Reading::Fed);
        assert_eq!(whole, bytewise, "fed whole vs byte by byte");
        let bytewise = scan(stream.chunks(1), Reading::Skipping);
        assert_eq!(
            whole, bytewise,
            "fed whole vs read as the listener byte by byte"
        );
    }
});
