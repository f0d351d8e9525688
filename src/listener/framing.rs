//! Follows the framing of the request stream on the raw bytes, before hyper parses
//! them, for two reasons:
//!
//! - Heads that carry both `Content-Length` and `Transfer-Encoding`: hyper resolves
//!   such a head by dropping `Content-Length` (the RFC 9112 §6.3 fallback), so the
//!   conflict is invisible after parsing; weir refuses those requests outright, as
//!   request-smuggling defences expect.
//! - Knowing where each message ends: a connection may be parked (hyper's state
//!   dropped, see `park`) only when every byte received belongs to a complete
//!   message, so that nothing hyper holds is lost and no body byte is ever read as
//!   the start of a request.
//!
//! The scan follows heads line by line, then skips a `Content-Length` body by
//! counting and a chunked body by its chunk lines. Only the lines that start like
//! a framing header are looked at closely. Anything it does not follow exactly as
//! hyper would (a length it cannot read, a coding other than `chunked`, a chunk
//! line hyper would refuse) makes it give up for the rest of the connection: it
//! then never says "at rest", so the connection is simply not parked. Giving up is
//! always the safe side; hyper remains the judge of what is valid.

/// How much of a line's start is kept when it is split between two reads: enough
/// for a framing header's name and any sane value.
const LINE_START_BYTES: usize = 64;

/// A chunk size of more hex digits is refused (hyper refuses one that overflows).
const MAX_CHUNK_SIZE_DIGITS: u8 = 15;

/// Scan state of the request stream of one connection.
#[derive(Debug)]
pub struct HeadScan {
    state: State,
    /// The start of the line that the previous read left unfinished.
    carry: [u8; LINE_START_BYTES],
    carry_len: usize,
    /// The whole length of that line so far (its start is in `carry`).
    carry_total: usize,
    /// Lines seen so far in this head (the first is the request line).
    lines: usize,
    /// The head's `Content-Length`: `Some` once seen with a readable value.
    length: Option<u64>,
    /// A `Content-Length` that cannot be read, or two that differ.
    length_unreadable: bool,
    /// `Transfer-Encoding` fields seen in this head, and whether the one seen is
    /// exactly `chunked`.
    encodings: u8,
    chunked: bool,
    /// Both framing headers were seen in one head.
    conflict: bool,
}

impl Default for HeadScan {
    fn default() -> Self {
        HeadScan {
            state: State::Head,
            carry: [0; LINE_START_BYTES],
            carry_len: 0,
            carry_total: 0,
            lines: 0,
            length: None,
            length_unreadable: false,
            encodings: 0,
            chunked: false,
            conflict: false,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a request head, or between messages.
    #[default]
    Head,
    /// In a `Content-Length` body: bytes still to come.
    Body(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// Lost track of the framing; nothing more is looked at.
    Lost,
}

/// Where a chunked body is, after hyper's decoder states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the size's hex digits.
    Size {
        size: u64,
        digits: u8,
    },
    /// After the size: blanks or an extension, up to the CR.
    SizeTail {
        size: u64,
        extension: bool,
    },
    /// After the size line's CR.
    SizeLf {
        size: u64,
    },
    /// Chunk data still to come.
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: at the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// In a trailer line, up to its CR.
    Trailer,
    TrailerLf,
    /// After the final CR.
    EndLf,
}

impl HeadScan {
    /// Starts over, as on a new connection.
    pub fn reset(&mut self) {
        *self = HeadScan::default();
    }

    /// Part of a request head has been seen, and not its end.
    pub fn mid_head(&self) -> bool {
        self.state == State::Head && (self.carry_len > 0 || self.lines > 0)
    }

    /// Every byte seen so far belongs to a complete message: nothing is waiting
    /// in hyper's buffer for a request to come, and the next byte starts a head.
    pub fn at_rest(&self) -> bool {
        self.state == State::Head && self.carry_len == 0 && self.lines == 0
    }

    /// Inside a request body.
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Body(_) | State::Chunked(_))
    }

    /// How many bytes may be read without being looked at: the rest of a body's
    /// data, or any number once the scan has lost track.
    pub fn unscanned_room(&self) -> u64 {
        match self.state {
            State::Body(remaining) | State::Chunked(Chunk::Data(remaining)) => remaining,
            State::Lost => u64::MAX,
            _ => 0,
        }
    }

    /// Counts `count` bytes read without being looked at; at most
    /// [`HeadScan::unscanned_room`].
    pub fn skip(&mut self, count: u64) {
        match &mut self.state {
            State::Body(remaining) => {
                *remaining -= count.min(*remaining);
                if *remaining == 0 {
                    self.next_message();
                }
            }
            State::Chunked(Chunk::Data(remaining)) => {
                *remaining -= count.min(*remaining);
                if *remaining == 0 {
                    self.state = State::Chunked(Chunk::DataCr);
                }
            }
            _ => {}
        }
    }

    /// Stops following the framing for the rest of the connection (after a
    /// protocol switch, whose bytes are not HTTP).
    pub fn give_up(&mut self) {
        self.state = State::Lost;
    }

    /// Feeds the next bytes of the connection; true when the current head shows
    /// both framing headers.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            match self.state {
                State::Head => match memchr::memchr(b'\n', bytes) {
                    // memchr: heads are mostly long lines, scanned a vector at a time.
                    Some(end) => {
                        self.finish_line(&bytes[..end]);
                        bytes = &bytes[end + 1..];
                    }
                    None => {
                        self.carry_more(bytes);
                        bytes = &[];
                    }
                },
                State::Body(remaining) => {
                    let take = remaining.min(bytes.len() as u64);
                    self.skip(take);
                    bytes = &bytes[take as usize..];
                }
                State::Chunked(Chunk::Data(remaining)) => {
                    let take = remaining.min(bytes.len() as u64);
                    self.skip(take);
                    bytes = &bytes[take as usize..];
                }
                State::Chunked(chunk) => {
                    self.state = match step_chunk(chunk, bytes[0]) {
                        Some(Some(next)) => State::Chunked(next),
                        Some(None) => {
                            self.next_message();
                            State::Head
                        }
                        None => State::Lost,
                    };
                    bytes = &bytes[1..];
                }
                State::Lost => break,
            }
        }
        self.conflict
    }

    fn carry_more(&mut self, bytes: &[u8]) {
        let take = (LINE_START_BYTES - self.carry_len).min(bytes.len());
        self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&bytes[..take]);
        self.carry_len += take;
        self.carry_total += bytes.len();
    }

    /// The message ended: what follows is the next head.
    fn next_message(&mut self) {
        *self = HeadScan::default();
    }

    /// `tail` is the part of the line in this read, without its `\n`.
    fn finish_line(&mut self, tail: &[u8]) {
        let mut start = [0u8; LINE_START_BYTES];
        let carried = self.carry_len;
        start[..carried].copy_from_slice(&self.carry[..carried]);
        let take = (LINE_START_BYTES - carried).min(tail.len());
        start[carried..carried + take].copy_from_slice(&tail[..take]);
        let line_len = self.carry_total + tail.len();
        let line = &start[..carried + take];
        let whole = line_len == line.len();
        self.carry_len = 0;
        self.carry_total = 0;
        self.lines += 1;

        if line_len == 0 || (line_len == 1 && line == b"\r") {
            self.end_of_head();
            return;
        }
        if self.lines == 1 {
            // The request line. HTTP/2's connection preface looks like one; what
            // follows it is frames, not heads.
            if line.starts_with(b"PRI * HTTP/2.0") {
                self.state = State::Lost;
            }
            return;
        }
        // Only the two framing names matter; most lines start otherwise.
        if !matches!(line.first(), Some(b'c' | b'C' | b't' | b'T')) {
            return;
        }
        if let Some(value) = value_of(line, b"content-length:") {
            let value = whole.then(|| parse_length(value)).flatten();
            match (value, self.length) {
                (Some(value), None) => self.length = Some(value),
                (Some(value), Some(seen)) if value == seen => {}
                _ => self.length_unreadable = true,
            }
        } else if let Some(value) = value_of(line, b"transfer-encoding:") {
            self.encodings = self.encodings.saturating_add(1);
            self.chunked = whole && trim(value).eq_ignore_ascii_case(b"chunked");
        } else {
            return;
        }
        let has_length = self.length.is_some() || self.length_unreadable;
        self.conflict |= has_length && self.encodings > 0;
    }

    /// The blank line: the body announced, if any, follows.
    fn end_of_head(&mut self) {
        if self.lines == 1 {
            // Empty lines before the request line are allowed (RFC 9112 §2.2).
            self.lines = 0;
            return;
        }
        self.state = if self.conflict || self.length_unreadable {
            State::Lost
        } else if self.encodings > 0 {
            if self.encodings == 1 && self.chunked {
                State::Chunked(Chunk::Size { size: 0, digits: 0 })
            } else {
                State::Lost
            }
        } else {
            match self.length {
                Some(length) if length > 0 => State::Body(length),
                _ => return self.next_message(),
            }
        };
    }
}

/// The next chunk state after `byte`: `Some(None)` at the end of the body, `None`
/// where hyper's decoder would fail (or where this one does not follow it).
fn step_chunk(chunk: Chunk, byte: u8) -> Option<Option<Chunk>> {
    let next = match chunk {
        Chunk::Size { size, digits } => match byte {
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                if digits >= MAX_CHUNK_SIZE_DIGITS {
                    return None;
                }
                let digit = (byte as char).to_digit(16).expect("a hex digit") as u64;
                Chunk::Size {
                    size: size * 16 + digit,
                    digits: digits + 1,
                }
            }
            _ if digits == 0 => return None,
            b' ' | b'\t' => Chunk::SizeTail {
                size,
                extension: false,
            },
            b';' => Chunk::SizeTail {
                size,
                extension: true,
            },
            b'\r' => Chunk::SizeLf { size },
            _ => return None,
        },
        Chunk::SizeTail { size, extension } => match byte {
            b'\r' => Chunk::SizeLf { size },
            b'\n' => return None,
            b';' => Chunk::SizeTail {
                size,
                extension: true,
            },
            b' ' | b'\t' => Chunk::SizeTail { size, extension },
            _ if extension => Chunk::SizeTail { size, extension },
            _ => return None,
        },
        Chunk::SizeLf { size } => match byte {
            b'\n' if size == 0 => Chunk::TrailerStart,
            b'\n' => Chunk::Data(size),
            _ => return None,
        },
        Chunk::Data(_) => unreachable!("data is skipped in bulk"),
        Chunk::DataCr => match byte {
            b'\r' => Chunk::DataLf,
            _ => return None,
        },
        Chunk::DataLf => match byte {
            b'\n' => Chunk::Size { size: 0, digits: 0 },
            _ => return None,
        },
        Chunk::TrailerStart => match byte {
            b'\r' => Chunk::EndLf,
            b'\n' => return None,
            _ => Chunk::Trailer,
        },
        Chunk::Trailer => match byte {
            b'\r' => Chunk::TrailerLf,
            b'\n' => return None,
            _ => Chunk::Trailer,
        },
        Chunk::TrailerLf => match byte {
            b'\n' => Chunk::TrailerStart,
            _ => return None,
        },
        Chunk::EndLf => match byte {
            b'\n' => return Some(None),
            _ => return None,
        },
    };
    Some(Some(next))
}

/// The value after `name` (which ends with its colon), if the line starts with it.
fn value_of<'l>(line: &'l [u8], name: &[u8]) -> Option<&'l [u8]> {
    (line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name))
        .then(|| &line[name.len()..])
}

/// Optional whitespace around a field value, and the line's CR.
fn trim(value: &[u8]) -> &[u8] {
    let is_blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\r');
    let start = value
        .iter()
        .position(|b| !is_blank(b))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_blank(b))
        .map_or(start, |e| e + 1);
    &value[start..end]
}

/// A `Content-Length` value: digits only (a list, even of equal values, is left
/// to hyper and makes the scan give up).
fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = trim(value);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict_in_pieces(pieces: &[&[u8]]) -> bool {
        let mut scan = HeadScan::default();
        // The verdict is sticky: feed every piece, read it at the end.
        for piece in pieces {
            scan.feed(piece);
        }
        scan.feed(&[])
    }

    /// Feeds `bytes` whole and byte by byte; both must end in the same state.
    fn scanned(bytes: &[u8]) -> HeadScan {
        let mut whole = HeadScan::default();
        whole.feed(bytes);
        let mut bytewise = HeadScan::default();
        for byte in bytes {
            bytewise.feed(std::slice::from_ref(byte));
        }
        assert_eq!(
            whole.state,
            bytewise.state,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        assert_eq!(whole.at_rest(), bytewise.at_rest());
        assert_eq!(whole.mid_head(), bytewise.mid_head());
        whole
    }

    #[test]
    fn rest_is_the_end_of_a_complete_message() {
        assert!(scanned(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").at_rest());
        let scan = scanned(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHo");
        assert!(!scan.at_rest() && scan.mid_head());
        let scan = scanned(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel");
        assert!(!scan.at_rest() && !scan.mid_head() && scan.in_body());
        assert!(scanned(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").at_rest());
        assert!(scanned(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").at_rest());
    }

    #[test]
    fn a_head_after_a_body_is_followed() {
        let scan =
            scanned(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHo");
        assert!(scan.mid_head());
        let scan = scanned(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloPOST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(scan.conflict && scan.state == State::Lost);
    }

    #[test]
    fn chunked_bodies_are_followed_to_their_end() {
        let body = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n10 \r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\n";
        assert!(scanned(body).at_rest());
        let mut next = body.to_vec();
        next.extend_from_slice(b"GET /b HTTP/1.1\r\n");
        assert!(scanned(&next).mid_head());
        assert!(scanned(&body[..body.len() - 1]).in_body());
    }

    #[test]
    fn what_hyper_would_refuse_or_read_otherwise_loses_track() {
        for bytes in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nx\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
        ] {
            let scan = scanned(bytes);
            assert_eq!(
                scan.state,
                State::Lost,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
            assert!(!scan.at_rest() && !scan.mid_head());
        }
        let same_twice =
            scanned(b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello");
        assert!(same_twice.at_rest());
    }

    #[test]
    fn skipped_body_bytes_are_counted() {
        let mut scan = scanned(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(scan.unscanned_room(), 10);
        scan.skip(4);
        assert_eq!(scan.unscanned_room(), 6);
        scan.skip(6);
        assert!(scan.at_rest());
        assert_eq!(scan.unscanned_room(), 0);
    }

    #[test]
    fn both_framing_headers_are_seen() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(conflict_in_pieces(&[head]));
    }

    #[test]
    fn one_framing_header_is_fine() {
        assert!(!conflict_in_pieces(&[
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        ]));
        assert!(!conflict_in_pieces(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
    }

    #[test]
    fn header_names_in_the_body_do_not_count() {
        let bytes = b"POST / HTTP/1.1\r\nContent-Length: 30\r\n\r\nTransfer-Encoding: chunked\r\n";
        assert!(!conflict_in_pieces(&[bytes]));
    }

    #[test]
    fn headers_in_different_reads_are_seen() {
        let padding = vec![b'x'; 5000];
        let pieces: [&[u8]; 4] = [
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nX-Pad: ",
            &padding,
            b"\r\nTransfer-Enc",
            b"oding: chunked\r\n\r\n",
        ];
        assert!(conflict_in_pieces(&pieces));
    }

    #[test]
    fn a_name_split_byte_by_byte_is_seen() {
        let head = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let pieces: Vec<&[u8]> = head.chunks(1).collect();
        assert!(conflict_in_pieces(&pieces));
    }

    #[test]
    fn a_request_line_naming_a_header_does_not_count() {
        assert!(!conflict_in_pieces(&[
            b"transfer-encoding: / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"
        ]));
    }

    #[test]
    fn a_pipelined_head_after_a_bodiless_one_is_scanned() {
        let bytes = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(conflict_in_pieces(&[bytes]));
    }

    #[test]
    fn the_http2_preface_loses_track() {
        let scan = scanned(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(scan.state, State::Lost);
    }

    #[test]
    fn a_long_length_line_loses_track() {
        let mut head = b"POST / HTTP/1.1\r\nContent-Length:".to_vec();
        head.extend(std::iter::repeat_n(b' ', 100));
        head.extend_from_slice(b"5\r\n\r\nhello");
        assert_eq!(scanned(&head).state, State::Lost);
    }
}
