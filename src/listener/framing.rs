//! Spots request heads that carry both `Content-Length` and `Transfer-Encoding`,
//! on the raw bytes. hyper resolves such a head by dropping `Content-Length` (the
//! RFC 9112 §6.3 fallback), so the conflict is invisible after parsing; weir refuses
//! those requests outright, as request-smuggling defences expect.
//!
//! The scan follows one head across reads (a line may be split between two), goes
//! on to the next head after a head without a body (pipelined GETs), and stops at
//! the end of a head that announces a body: bytes after it are not scanned until the
//! next request starts. A conflicting head pipelined behind a request with a body
//! is therefore left to hyper's handling (forwarded chunked, connection closed
//! after it), which is safe from desynchronisation all the same. Only header names at line starts are
//! compared, so it costs a pass over the head's line breaks.

/// Longest header name compared, with its colon: `transfer-encoding:`.
const NAME_BYTES: usize = 18;

/// Scan state of the request head being received.
#[derive(Debug, Default)]
pub struct HeadScan {
    /// The start of the line that the previous read left unfinished.
    carry: [u8; NAME_BYTES],
    carry_len: usize,
    /// Lines seen so far in this head (the first is the request line).
    lines: usize,
    saw_length: bool,
    saw_encoding: bool,
    /// Both framing headers were seen in one head since the last reset.
    conflict: bool,
    /// The blank line of a head with a body was seen: what follows is body.
    done: bool,
}

impl HeadScan {
    /// Starts over for a new request head.
    pub fn reset(&mut self) {
        *self = HeadScan::default();
    }

    /// A head that announced a body ended: what follows the body is a new head,
    /// which the scan must start afresh. (After a head without a body the scan
    /// has already gone on into the next one.)
    pub fn body_follows(&self) -> bool {
        self.done
    }

    /// Part of a further head has been seen (pipelined behind the last one).
    pub fn mid_head(&self) -> bool {
        !self.done && (self.carry_len > 0 || self.lines > 0)
    }

    /// Everything seen so far ended with a complete head that announced no
    /// body: no byte is waiting in hyper's buffer for a request to come.
    pub fn at_rest(&self) -> bool {
        !self.done && self.carry_len == 0 && self.lines == 0
    }

    /// Feeds the next bytes of the connection; true when the head now shows both
    /// framing headers.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !self.done && !bytes.is_empty() {
            // memchr: heads are mostly long lines, scanned a vector at a time.
            match memchr::memchr(b'\n', bytes) {
                Some(end) => {
                    self.finish_line(&bytes[..end]);
                    bytes = &bytes[end + 1..];
                }
                None => {
                    let room = NAME_BYTES - self.carry_len;
                    let take = room.min(bytes.len());
                    self.carry[self.carry_len..self.carry_len + take]
                        .copy_from_slice(&bytes[..take]);
                    self.carry_len += take;
                    // A line longer than any name keeps its start; the rest is ignored.
                    bytes = &[];
                }
            }
        }
        self.conflict
    }

    /// `tail` is the part of the line in this read, without its `\n`.
    fn finish_line(&mut self, tail: &[u8]) {
        let mut start = [0u8; NAME_BYTES];
        let carried = self.carry_len;
        start[..carried].copy_from_slice(&self.carry[..carried]);
        let take = (NAME_BYTES - carried).min(tail.len());
        start[carried..carried + take].copy_from_slice(&tail[..take]);
        let line_len = carried + tail.len();
        let line = &start[..carried + take];
        self.carry_len = 0;
        self.lines += 1;

        if line_len == 0 || (line_len == 1 && line == b"\r") {
            // Empty lines before the request line are allowed (RFC 9112 §2.2).
            if self.saw_length || self.saw_encoding {
                // A body follows, whose end this scan does not track.
                self.done = true;
            } else {
                // No body: what follows is the next (pipelined) head. Empty lines
                // before a request line are allowed too (RFC 9112 §2.2).
                self.lines = 0;
            }
            return;
        }
        if self.lines == 1 {
            return; // the request line
        }
        // Only the two framing names matter; most lines start otherwise.
        if !matches!(line.first(), Some(b'c' | b'C' | b't' | b'T')) {
            return;
        }
        self.saw_length |= starts_with_ignore_case(line, b"content-length:");
        self.saw_encoding |= starts_with_ignore_case(line, b"transfer-encoding:");
        self.conflict |= self.saw_length && self.saw_encoding;
    }
}

fn starts_with_ignore_case(line: &[u8], name: &[u8]) -> bool {
    line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict_in_pieces(pieces: &[&[u8]]) -> bool {
        let mut scan = HeadScan::default();
        // The verdict is sticky until reset: feed every piece, read it at the end.
        for piece in pieces {
            scan.feed(piece);
        }
        scan.feed(&[])
    }

    #[test]
    fn rest_is_the_end_of_a_head_without_a_body() {
        let mut scan = HeadScan::default();
        scan.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(scan.at_rest() && !scan.mid_head());
        scan.feed(b"GET /b HTTP/1.1\r\nHo");
        assert!(!scan.at_rest() && scan.mid_head());
        let mut scan = HeadScan::default();
        scan.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel");
        assert!(!scan.at_rest() && !scan.mid_head());
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
    fn reset_starts_a_new_head() {
        let mut scan = HeadScan::default();
        assert!(!scan.feed(b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"));
        scan.reset();
        assert!(!scan.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"));
    }
}
