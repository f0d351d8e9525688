//! An outgoing head made over the received one: runs of received bytes kept
//! as they came, and the bytes weir adds, copied out as the rewrite decides
//! them. A head goes out in one write with what follows it (the first body
//! bytes, or the next response), so it is built in that write's buffer; no
//! list of pieces is kept.

use super::Span;

/// Where a rewritten head goes.
pub trait HeadOut {
    /// Keeps `span` of the received bytes.
    fn keep(&mut self, span: Span);
    /// Adds bytes of weir's own.
    fn add(&mut self, bytes: &[u8]);
    /// The bytes written so far, to be continued in place (a value built
    /// from several parts).
    fn added_mut(&mut self) -> &mut Vec<u8>;
}

/// A head appended to a buffer as the rewrite goes.
#[derive(Debug)]
pub struct CopiedHead<'a> {
    received: &'a [u8],
    out: &'a mut Vec<u8>,
}

impl<'a> CopiedHead<'a> {
    /// Appends the head, made over `received`, to `out`.
    pub fn new(received: &'a [u8], out: &'a mut Vec<u8>) -> Self {
        CopiedHead { received, out }
    }
}

impl HeadOut for CopiedHead<'_> {
    fn keep(&mut self, span: Span) {
        self.out.extend_from_slice(span.of(self.received));
    }

    fn add(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn added_mut(&mut self) -> &mut Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_and_added_bytes_follow_what_the_buffer_held() {
        let received = b"abcdefgh";
        let mut out = b">".to_vec();
        let mut head = CopiedHead::new(received, &mut out);
        head.keep(Span::new(0, 2));
        head.keep(Span::new(2, 4));
        head.add(b"XY");
        head.keep(Span::new(6, 8));
        head.keep(Span::new(8, 8));
        head.added_mut().extend_from_slice(b"!");
        assert_eq!(out, b">abcdXYgh!");
    }
}
