//! A message body relayed from one connection to the other as its bytes
//! arrive, framed as its head said: a length counted, chunks checked by the
//! scanner and passed on as they came (or decoded for a reader that cannot
//! take them), a body that runs to the close passed on (or chunked for a
//! reader that keeps its connection). No IO here: the caller reads, feeds,
//! and writes what comes out.

use super::chunked::{ChunkError, ChunkedScanner};
use super::head::Framing;
use super::rewrite::Relay;

/// The relay of one body.
#[derive(Debug, Clone)]
pub struct BodyRelay {
    kind: Kind,
    done: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Bytes still to come.
    Length(u64),
    Chunked {
        scanner: ChunkedScanner,
        decode: bool,
    },
    UntilClose {
        chunk: bool,
    },
}

/// The source closed before the body's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection closed before the end of the body")]
pub struct Truncated;

impl BodyRelay {
    /// The relay of a body framed by `framing`, passed on as `relay` says.
    pub fn new(framing: Framing, relay: Relay) -> Self {
        let kind = match framing {
            Framing::Empty => Kind::Length(0),
            Framing::Length(length) => Kind::Length(length),
            Framing::Chunked => Kind::Chunked {
                scanner: ChunkedScanner::default(),
                decode: relay == Relay::Dechunk,
            },
            Framing::UntilClose => Kind::UntilClose {
                chunk: relay == Relay::Chunk,
            },
        };
        BodyRelay {
            done: matches!(kind, Kind::Length(0)),
            kind,
        }
    }

    /// The whole body has been fed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Takes what of `input` belongs to the body, hands what is to be written
    /// to `out` (in order; none, one or several slices), and returns how many
    /// bytes of `input` it took. Bytes past the body's end are not taken.
    pub fn feed(&mut self, input: &[u8], out: &mut impl FnMut(&[u8])) -> Result<usize, ChunkError> {
        if self.done {
            return Ok(0);
        }
        match &mut self.kind {
            Kind::Length(left) => {
                let take = (*left).min(input.len() as u64) as usize;
                *left -= take as u64;
                self.done = *left == 0;
                if take > 0 {
                    out(&input[..take]);
                }
                Ok(take)
            }
            Kind::Chunked {
                scanner,
                decode: false,
            } => {
                let scanned = scanner.scan(input)?;
                self.done = scanned.done;
                if scanned.consumed > 0 {
                    out(&input[..scanned.consumed]);
                }
                Ok(scanned.consumed)
            }
            Kind::Chunked {
                scanner,
                decode: true,
            } => {
                let mut at = 0;
                while at < input.len() && !scanner.is_done() {
                    let decoded = scanner.decode(&input[at..])?;
                    if decoded.data > 0 {
                        out(&input[at + decoded.framing..][..decoded.data]);
                    }
                    at += decoded.framing + decoded.data;
                }
                self.done = scanner.is_done();
                Ok(at)
            }
            Kind::UntilClose { chunk } => {
                if input.is_empty() {
                    return Ok(0);
                }
                if *chunk {
                    let mut size = [0u8; 18];
                    out(chunk_size_line(input.len(), &mut size));
                    out(input);
                    out(b"\r\n");
                } else {
                    out(input);
                }
                Ok(input.len())
            }
        }
    }

    /// The source closed: the end of a body that runs to the close (its last
    /// chunk handed to `out` when it is chunked on), a truncation otherwise.
    pub fn close(&mut self, out: &mut impl FnMut(&[u8])) -> Result<(), Truncated> {
        if self.done {
            return Ok(());
        }
        match self.kind {
            Kind::UntilClose { chunk } => {
                if chunk {
                    out(b"0\r\n\r\n");
                }
                self.done = true;
                Ok(())
            }
            Kind::Length(_) | Kind::Chunked { .. } => Err(Truncated),
        }
    }
}

/// `size` in hex and CRLF, in `buf`: a chunk's size line.
pub fn chunk_size_line(size: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = size;
    let mut len = 0;
    loop {
        digits[len] = HEX[n & 0xf];
        len += 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    for (slot, digit) in buf.iter_mut().zip(digits[..len].iter().rev()) {
        *slot = *digit;
    }
    buf[len] = b'\r';
    buf[len + 1] = b'\n';
    &buf[..len + 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` cut every `step` bytes; what came out, what was taken,
    /// and whether the body ended.
    fn relay(mut relay: BodyRelay, input: &[u8], step: usize) -> (Vec<u8>, usize, bool) {
        let mut written = Vec::new();
        let mut at = 0;
        while at < input.len() && !relay.is_done() {
            let end = (at + step).min(input.len());
            let took = relay
                .feed(&input[at..end], &mut |bytes| {
                    written.extend_from_slice(bytes)
                })
                .unwrap();
            at += took;
        }
        (written, at, relay.is_done())
    }

    #[test]
    fn a_length_is_counted_and_what_follows_is_left() {
        for step in [1, 3, 100] {
            let (out, took, done) = relay(
                BodyRelay::new(Framing::Length(5), Relay::AsIs),
                b"helloGET /",
                step,
            );
            assert_eq!((out.as_slice(), took, done), (&b"hello"[..], 5, true));
        }
        assert!(BodyRelay::new(Framing::Empty, Relay::AsIs).is_done());
    }

    #[test]
    fn chunks_pass_as_they_came_or_decoded() {
        let body = b"3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\nNEXT";
        for step in [1, 2, 7, 100] {
            let (out, took, done) =
                relay(BodyRelay::new(Framing::Chunked, Relay::AsIs), body, step);
            assert_eq!(out, &body[..body.len() - 4]);
            assert_eq!((took, done), (body.len() - 4, true));
            let (out, took, done) =
                relay(BodyRelay::new(Framing::Chunked, Relay::Dechunk), body, step);
            assert_eq!(out, b"abcde");
            assert_eq!((took, done), (body.len() - 4, true));
        }
    }

    #[test]
    fn a_bad_chunk_is_an_error_and_a_close_mid_body_a_truncation() {
        let mut bad = BodyRelay::new(Framing::Chunked, Relay::AsIs);
        assert!(bad.feed(b"zz\r\n", &mut |_| {}).is_err());
        let mut cut = BodyRelay::new(Framing::Chunked, Relay::AsIs);
        cut.feed(b"5\r\nhel", &mut |_| {}).unwrap();
        assert_eq!(cut.close(&mut |_| {}), Err(Truncated));
        let mut short = BodyRelay::new(Framing::Length(5), Relay::AsIs);
        short.feed(b"hel", &mut |_| {}).unwrap();
        assert_eq!(short.close(&mut |_| {}), Err(Truncated));
    }

    #[test]
    fn a_body_to_the_close_passes_or_is_chunked() {
        let mut out = Vec::new();
        let mut plain = BodyRelay::new(Framing::UntilClose, Relay::UntilClose);
        plain
            .feed(b"abc", &mut |b| out.extend_from_slice(b))
            .unwrap();
        plain.close(&mut |b| out.extend_from_slice(b)).unwrap();
        assert_eq!(out, b"abc");
        let mut out = Vec::new();
        let mut chunked = BodyRelay::new(Framing::UntilClose, Relay::Chunk);
        chunked
            .feed(b"abc", &mut |b| out.extend_from_slice(b))
            .unwrap();
        chunked
            .feed(&[b'x'; 300], &mut |b| out.extend_from_slice(b))
            .unwrap();
        chunked.close(&mut |b| out.extend_from_slice(b)).unwrap();
        let mut expected = b"3\r\nabc\r\n12c\r\n".to_vec();
        expected.extend_from_slice(&[b'x'; 300]);
        expected.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(out, expected);
        assert!(chunked.is_done());
        // What weir chunks, its own scanner reads back.
        let (scanned, data) = crate::http1::chunked::scan_whole(&out).unwrap();
        assert!(scanned.done);
        assert_eq!(data, 303);
    }
}
