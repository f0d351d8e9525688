//! A client's byte stream as weir's HTTP/1 server reads it: heads by
//! `take_head` (empty lines before one dropped as they come), each turned into the proxy's request, its body handed out in
//! pieces, then the next request. Every head the parser accepts must become a
//! request, a body must never take a byte past its end, and the stream must
//! read the same — the same requests, bodies and refusal — whole or arriving
//! in pieces cut anywhere: what a request means cannot depend on when its
//! bytes come.
//!
//! Input layout: byte 0 holds the number of cut sizes (low four bits); then
//! one byte per size (a piece of 1 to 256 bytes, the sizes used in turn);
//! the rest is the stream.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use weir::http1::head::HeadReader;
use weir::http1::request::{BodyLeft, Piece, take_head, to_request};

/// The head limit: small, so that heads over it are found too.
const LIMIT: usize = 2048;

#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// A request: method, target, version and fields as the proxy sees them.
    Request(String),
    /// A whole body, as the backend would get it.
    Body(Vec<u8>),
    /// The head was refused (400 or 431: which one may depend on how much
    /// had come when the limit was passed).
    Refused,
    /// The body was malformed: the connection ends.
    BodyBroken,
}

/// The events of `stream` arriving in pieces of `sizes` in turn (whole when
/// there are none), up to its end.
fn read(stream: &[u8], sizes: &[usize]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut buf = BytesMut::new();
    let mut reader = HeadReader::default();
    let mut fields = Vec::new();
    let mut body: Option<(BodyLeft, Vec<u8>)> = None;
    let mut at = 0;
    let mut turn = 0;
    loop {
        loop {
            if let Some((left, data)) = &mut body {
                let before = buf.len();
                match left.next_piece(&mut buf) {
                    Ok(Piece::Data(piece)) => {
                        assert!(!piece.is_empty(), "an empty piece");
                        assert!(before - buf.len() >= piece.len(), "a piece not from the buffer");
                        data.extend_from_slice(&piece);
                        continue;
                    }
                    Ok(Piece::End) => {
                        let (_, data) = body.take().expect("a body");
                        events.push(Event::Body(data));
                        continue;
                    }
                    Ok(Piece::NeedMore) => break,
                    Err(_) => {
                        events.push(Event::BodyBroken);
                        return events;
                    }
                }
            }
            if buf.is_empty() {
                break;
            }
            match take_head(&mut reader, &mut buf, LIMIT, &mut fields) {
                Ok(Some((head, bytes))) => {
                    assert_eq!(head.len, bytes.len(), "a head is its bytes");
                    let request = to_request(&head, &fields, &bytes)
                        .unwrap_or_else(|why| panic!("an accepted head does not convert: {why}"));
                    let fields: Vec<String> = request
                        .headers()
                        .iter()
                        .map(|(n, v)| format!("{n}: {v:?}"))
                        .collect();
                    events.push(Event::Request(format!(
                        "{} {} {:?} {fields:?} {:?}",
                        request.method(),
                        request.uri(),
                        request.version(),
                        head.framing
                    )));
                    body = Some((BodyLeft::of(head.framing), Vec::new()));
                }
                Ok(None) => break,
                Err(_) => {
                    events.push(Event::Refused);
                    return events;
                }
            }
        }
        if at == stream.len() {
            return events;
        }
        let size = if sizes.is_empty() {
            stream.len()
        } else {
            sizes[turn % sizes.len()]
        };
        turn += 1;
        let end = (at + size).min(stream.len());
        buf.extend_from_slice(&stream[at..end]);
        at = end;
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, rest)) = input.split_first() else {
        return;
    };
    let count = usize::from(first & 0x0f).min(rest.len());
    let (sizes, stream) = rest.split_at(count);
    let sizes: Vec<usize> = sizes.iter().map(|&s| usize::from(s) + 1).collect();
    let whole = read(stream, &[]);
    let cut = read(stream, &sizes);
    assert_eq!(whole, cut, "the stream reads differently cut in pieces of {sizes:?}");
    let bytewise = read(stream, &[1]);
    assert_eq!(whole, bytewise, "the stream reads differently byte by byte");
});
