//! weir's own HTTP/1 codec, built for relaying rather than serving: pieces
//! that validate bytes in place, so that what is forwarded is exactly what
//! was checked.
//!
//! - `chunked`: the chunked body scanner.
//! - `head`: request and response heads, parsed into offsets.
//! - `edits`: an outgoing head made over the received bytes.
//! - `rewrite`: a request head rewritten for the backend, a response head
//!   for the client.
//! - `date`: the `Date` field, formatted once per second.
//! - `body`: a body relayed as it arrives, framed as its head said.
//! - `request`: a client's request head as the proxy's request, and its
//!   body in pieces as it arrives.

pub mod body;
pub mod chunked;
pub mod date;
pub mod edits;
pub mod head;
pub mod request;
pub mod rewrite;

/// Where something lies in a connection's buffer: `start..end`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// `start..end`; heads are bounded far below 4 GiB.
    pub fn new(start: usize, end: usize) -> Span {
        debug_assert!(start <= end && end <= u32::MAX as usize);
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    /// `len` bytes from `start`.
    pub fn at(start: usize, len: usize) -> Span {
        Span::new(start, start + len)
    }

    /// Where `part`, a slice of `buf`, lies in it.
    pub fn within(buf: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        debug_assert!(start + part.len() <= buf.len());
        Span::at(start, part.len())
    }

    /// The bytes of `buf` this span covers.
    pub fn of(self, buf: &[u8]) -> &[u8] {
        &buf[self.start as usize..self.end as usize]
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}
