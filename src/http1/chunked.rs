//! A strict, incremental scanner of chunked message bodies (RFC 9112 §7.1).
//!
//! It does not decode: a relay forwards the body's bytes as they came, chunk
//! framing included, and the scanner says how many of them belong to the
//! message, how many are chunk data, and when the message ends. Whatever way
//! the bytes are cut into reads, the verdict is the same (a property test and
//! a fuzz target hold it to that).
//!
//! Refused, because peers disagree on them and disagreement is a smuggling
//! vector: a size that is not 1..=16 hex digits (no sign, no `0x`, no
//! whitespace), a size past 2^62, a bare LF or a CR not followed by LF, chunk
//! extensions with control characters or over `MAX_LINE`, chunk data not
//! followed by CRLF, a trailer line that is not `name: value` (obs-fold
//! included), and trailers over `MAX_TRAILERS`.

use std::fmt;

/// A chunk-size line (size and extensions) or one trailer line, at most.
pub const MAX_LINE: usize = 4096;
/// All trailer lines of a message together, at most.
pub const MAX_TRAILERS: usize = 16 * 1024;
/// Larger chunk sizes are refused (no peer needs them; arithmetic stays far
/// from overflow).
pub const MAX_CHUNK: u64 = 1 << 62;

/// Why a body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    BadSize,
    SizeTooLarge,
    BadExtension,
    LineTooLong,
    /// A CR without LF, or an LF without CR.
    BadLineEnd,
    /// Chunk data not followed by CRLF.
    MissingDataEnd,
    BadTrailer,
    TrailersTooLarge,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::BadSize => "invalid chunk size",
            ChunkError::SizeTooLarge => "chunk size too large",
            ChunkError::BadExtension => "invalid chunk extension",
            ChunkError::LineTooLong => "chunk line too long",
            ChunkError::BadLineEnd => "bare CR or LF in chunk framing",
            ChunkError::MissingDataEnd => "chunk data not followed by CRLF",
            ChunkError::BadTrailer => "invalid trailer line",
            ChunkError::TrailersTooLarge => "trailers too large",
        })
    }
}

impl std::error::Error for ChunkError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size; `digits` so far.
    Size {
        digits: u8,
    },
    /// After `;`: extension bytes up to CR.
    Extension,
    /// Saw the CR ending a size line.
    SizeLf,
    /// Inside chunk data, this many bytes to go.
    Data(u64),
    /// Data done: CR expected.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer line; `colon` once the name has ended.
    Trailer {
        colon: bool,
    },
    /// Saw the CR ending a trailer line.
    TrailerLf,
    /// Saw the CR of the final empty line.
    EndLf,
    Done,
}

/// The scanner of one message's chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
    size: u64,
    /// Bytes of the current size or trailer line.
    line: usize,
    trailers: usize,
    /// Chunk data bytes seen so far.
    data: u64,
}

/// What one call made of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes of the input that belong to this message (all of them, unless
    /// the message ended inside the input).
    pub consumed: usize,
    /// The message's body ended within them.
    pub done: bool,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner {
            state: State::Size { digits: 0 },
            size: 0,
            line: 0,
            trailers: 0,
            data: 0,
        }
    }
}

fn hex(byte: u8) -> Option<u64> {
    match byte {
        b'0'..=b'9' => Some(u64::from(byte - b'0')),
        b'a'..=b'f' => Some(u64::from(byte - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(byte - b'A' + 10)),
        _ => None,
    }
}

fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

impl ChunkedScanner {
    /// Chunk data bytes seen so far.
    pub fn data_bytes(&self) -> u64 {
        self.data
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans the next bytes of the body. After an error the scanner must not
    /// be used again.
    pub fn scan(&mut self, input: &[u8]) -> Result<Scanned, ChunkError> {
        let mut at = 0;
        while at < input.len() {
            let byte = input[at];
            match self.state {
                State::Done => {
                    return Ok(Scanned {
                        consumed: at,
                        done: true,
                    });
                }
                State::Data(left) => {
                    // Data is skipped in one step, whatever it holds.
                    let take = left.min((input.len() - at) as u64);
                    at += take as usize;
                    self.data += take;
                    self.state = if take == left {
                        State::DataCr
                    } else {
                        State::Data(left - take)
                    };
                    continue;
                }
                State::Size { digits } => {
                    self.line_byte()?;
                    match (hex(byte), byte) {
                        (Some(value), _) => {
                            if digits == 16 {
                                return Err(ChunkError::SizeTooLarge);
                            }
                            self.size = self.size * 16 + value;
                            if self.size > MAX_CHUNK {
                                return Err(ChunkError::SizeTooLarge);
                            }
                            self.state = State::Size { digits: digits + 1 };
                        }
                        (None, b';') if digits > 0 => self.state = State::Extension,
                        (None, b'\r') if digits > 0 => self.state = State::SizeLf,
                        _ => return Err(ChunkError::BadSize),
                    }
                }
                State::Extension => {
                    self.line_byte()?;
                    match byte {
                        b'\r' => self.state = State::SizeLf,
                        b'\t' | b' '..=b'~' | 0x80..=0xff => {}
                        _ => return Err(ChunkError::BadExtension),
                    }
                }
                State::SizeLf => {
                    if byte != b'\n' {
                        return Err(ChunkError::BadLineEnd);
                    }
                    self.line = 0;
                    self.state = if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data(self.size)
                    };
                    self.size = 0;
                }
                State::DataCr => {
                    if byte != b'\r' {
                        return Err(ChunkError::MissingDataEnd);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if byte != b'\n' {
                        return Err(ChunkError::MissingDataEnd);
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => match byte {
                    b'\r' => self.state = State::EndLf,
                    _ if is_token(byte) => {
                        self.trailer_byte()?;
                        self.state = State::Trailer { colon: false };
                    }
                    // An obs-fold, a bare LF, anything else.
                    _ => return Err(ChunkError::BadTrailer),
                },
                State::Trailer { colon } => {
                    self.trailer_byte()?;
                    match byte {
                        b'\r' if colon => self.state = State::TrailerLf,
                        b':' if !colon => self.state = State::Trailer { colon: true },
                        _ if !colon && is_token(byte) => {}
                        b'\t' | b' '..=b'~' | 0x80..=0xff if colon => {}
                        _ => return Err(ChunkError::BadTrailer),
                    }
                }
                State::TrailerLf => {
                    if byte != b'\n' {
                        return Err(ChunkError::BadLineEnd);
                    }
                    self.line = 0;
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if byte != b'\n' {
                        return Err(ChunkError::BadLineEnd);
                    }
                    self.state = State::Done;
                    return Ok(Scanned {
                        consumed: at + 1,
                        done: true,
                    });
                }
            }
            at += 1;
        }
        Ok(Scanned {
            consumed: at,
            done: self.state == State::Done,
        })
    }

    fn line_byte(&mut self) -> Result<(), ChunkError> {
        self.line += 1;
        if self.line > MAX_LINE {
            return Err(ChunkError::LineTooLong);
        }
        Ok(())
    }

    fn trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.line_byte()?;
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(ChunkError::TrailersTooLarge);
        }
        Ok(())
    }
}

/// What one call of [`ChunkedScanner::decode`] found: framing bytes, then a
/// run of chunk data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Framing bytes (size lines, CRLFs, trailers) before the data.
    pub framing: usize,
    /// Chunk data bytes after them.
    pub data: usize,
    /// The body ended (no data follows then).
    pub done: bool,
}

impl ChunkedScanner {
    /// Scans framing bytes up to the next run of chunk data and that run (to
    /// the end of its chunk or of `input`), for a reader that hands the data
    /// on without its framing. Framing is a few bytes per chunk: it is
    /// scanned a byte at a time, data in one step.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, ChunkError> {
        let mut framing = 0;
        while framing < input.len() && !matches!(self.state, State::Data(_) | State::Done) {
            framing += self.scan(&input[framing..=framing])?.consumed;
        }
        let data = match self.state {
            State::Data(left) => {
                let take = left.min((input.len() - framing) as u64) as usize;
                self.scan(&input[framing..framing + take])?;
                take
            }
            _ => 0,
        };
        Ok(Decoded {
            framing,
            data,
            done: self.state == State::Done,
        })
    }
}

/// Scans `body` whole: the bytes of the message and its data bytes.
pub fn scan_whole(body: &[u8]) -> Result<(Scanned, u64), ChunkError> {
    let mut scanner = ChunkedScanner::default();
    let scanned = scanner.scan(body)?;
    Ok((scanned, scanner.data_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_hands_out_data_without_framing() {
        let body = b"3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\nNEXT";
        for cut in 1..body.len() {
            let mut scanner = ChunkedScanner::default();
            let mut data = Vec::new();
            let mut at = 0;
            let mut end = cut;
            loop {
                let decoded = scanner.decode(&body[at..end]).unwrap();
                data.extend_from_slice(&body[at + decoded.framing..][..decoded.data]);
                at += decoded.framing + decoded.data;
                if decoded.done {
                    break;
                }
                if at == end {
                    end = (end + cut).min(body.len());
                }
            }
            assert_eq!(data, b"abc0123456789abcdef", "cut {cut}");
            assert_eq!(&body[at..], b"NEXT", "cut {cut}");
        }
    }
    use proptest::prelude::*;

    fn verdict(body: &[u8]) -> Result<(usize, bool, u64), ChunkError> {
        scan_whole(body).map(|(s, data)| (s.consumed, s.done, data))
    }

    #[test]
    fn well_formed_bodies_end_where_the_message_ends() {
        let body = b"5\r\nhello\r\n6;name=\"v\"\r\n world\r\n0\r\nExpires: never\r\n\r\nNEXT";
        assert_eq!(verdict(body), Ok((body.len() - 4, true, 11)));
        assert_eq!(verdict(b"0\r\n\r\n"), Ok((5, true, 0)));
        assert_eq!(verdict(b"A\r\n0123456789\r\n0\r\n\r\n"), Ok((20, true, 10)));
        // Not over yet.
        assert_eq!(verdict(b"5\r\nhel"), Ok((6, false, 3)));
        assert_eq!(verdict(b"0\r\n"), Ok((3, false, 0)));
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for (body, error) in [
            (&b"\r\n"[..], ChunkError::BadSize),
            (b" 5\r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b"5 \r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b"+5\r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b"0x5\r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b";x\r\n", ChunkError::BadSize),
            (b"5\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b"5\r\rhello", ChunkError::BadLineEnd),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::MissingDataEnd),
            (b"5\r\nhelloX\r\n", ChunkError::MissingDataEnd),
            (b"5;a\0b\r\nhello\r\n", ChunkError::BadExtension),
            (b"5;a\nb\r\nhello\r\n", ChunkError::BadExtension),
            (b"10000000000000000\r\n", ChunkError::SizeTooLarge),
            (b"4000000000000001\r\n", ChunkError::SizeTooLarge),
            (b"0\r\n folded: x\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\nno-colon\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\nbad name: x\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\nx: a\0\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\n\n", ChunkError::BadTrailer),
            (b"0\r\n\r\r", ChunkError::BadLineEnd),
        ] {
            assert_eq!(
                verdict(body),
                Err(error),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let long = [b"5;".as_slice(), &[b'x'; MAX_LINE]].concat();
        assert_eq!(verdict(&long), Err(ChunkError::LineTooLong));
        let mut trailers = b"0\r\n".to_vec();
        // 99 counted bytes a line (CRLF: the CR counts).
        for _ in 0..(MAX_TRAILERS / 99 + 1) {
            trailers.extend_from_slice(&[b"x: ".as_slice(), &[b'v'; 95], b"\r\n"].concat());
        }
        assert_eq!(verdict(&trailers), Err(ChunkError::TrailersTooLarge));
    }

    /// A body of chunks of the given sizes, with an extension now and then
    /// and a trailer.
    fn body_of(sizes: &[usize]) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            body.extend_from_slice(format!("{size:x}").as_bytes());
            if i % 3 == 1 {
                body.extend_from_slice(b";ext=1");
            }
            body.extend_from_slice(b"\r\n");
            body.extend((0..size).map(|j| (j % 251) as u8));
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\nTrailer-A: 1\r\n\r\n");
        body
    }

    proptest! {
        /// However the bytes are cut into reads, the verdict is the one on
        /// the whole.
        #[test]
        fn the_verdict_does_not_depend_on_the_cuts(
            sizes in prop::collection::vec(1usize..300, 0..6),
            mutate in prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            tail in prop::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut body = body_of(&sizes);
            if let Some((at, byte)) = mutate {
                let at = at.index(body.len());
                body[at] = byte;
            }
            body.extend_from_slice(&tail);
            let whole = verdict(&body);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
            points.sort_unstable();
            let mut scanner = ChunkedScanner::default();
            let mut consumed = 0;
            let mut start = 0;
            let mut result = Ok(());
            for end in points.into_iter().chain([body.len()]) {
                if end < start || scanner.is_done() {
                    continue;
                }
                match scanner.scan(&body[start..end]) {
                    Ok(scanned) => consumed += scanned.consumed,
                    Err(err) => { result = Err(err); break; }
                }
                start = end;
            }
            let pieces = result.map(|()| (consumed, scanner.is_done(), scanner.data_bytes()));
            prop_assert_eq!(pieces, whole);
        }
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let body = body_of(&[1, 15, 16, 255, 3]);
        let mut scanner = ChunkedScanner::default();
        let mut consumed = 0;
        for byte in &body {
            consumed += scanner.scan(std::slice::from_ref(byte)).unwrap().consumed;
        }
        assert!(scanner.is_done());
        assert_eq!(consumed, body.len());
        assert_eq!(scanner.data_bytes(), 1 + 15 + 16 + 255 + 3);
    }
}
