//! An outgoing head as edits over the received one: runs of received bytes
//! kept as they came, and the bytes weir adds. Written with one vectored
//! write, nothing of the received head is copied; a head with nothing to drop
//! is a handful of pieces.

use std::io::IoSlice;

use super::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// Bytes of the received buffer.
    Received(Span),
    /// Bytes of `added`.
    Added(Span),
}

/// The pieces of one outgoing head. Kept per connection and cleared per
/// message, so that its two vectors are allocated once.
#[derive(Debug, Default)]
pub struct HeadEdits {
    pieces: Vec<Piece>,
    added: Vec<u8>,
}

impl HeadEdits {
    pub fn clear(&mut self) {
        self.pieces.clear();
        self.added.clear();
    }

    /// Frees what the vectors hold (an idle connection keeps nothing).
    pub fn release(&mut self) {
        *self = HeadEdits::default();
    }

    /// Keeps `span` of the received bytes; a span that continues the last
    /// kept one extends it.
    pub fn keep(&mut self, span: Span) {
        if span.is_empty() {
            return;
        }
        if let Some(Piece::Received(last)) = self.pieces.last_mut()
            && last.end == span.start
        {
            last.end = span.end;
            return;
        }
        self.pieces.push(Piece::Received(span));
    }

    /// Adds bytes of weir's own.
    pub fn add(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let start = self.added.len();
        self.added.extend_from_slice(bytes);
        let end = self.added.len();
        if let Some(Piece::Added(last)) = self.pieces.last_mut()
            && last.end as usize == start
        {
            last.end = end as u32;
            return;
        }
        self.pieces.push(Piece::Added(Span::new(start, end)));
    }

    /// The bytes added so far, to be continued with [`HeadEdits::add`]: for
    /// values built in place.
    pub fn added_mut(&mut self) -> &mut Vec<u8> {
        &mut self.added
    }

    /// Marks the bytes appended to [`HeadEdits::added_mut`] since `start` as
    /// the next piece.
    pub fn added_since(&mut self, start: usize) {
        let end = self.added.len();
        if start == end {
            return;
        }
        if let Some(Piece::Added(last)) = self.pieces.last_mut()
            && last.end as usize == start
        {
            last.end = end as u32;
            return;
        }
        self.pieces.push(Piece::Added(Span::new(start, end)));
    }

    /// Bytes of the outgoing head.
    pub fn len(&self) -> usize {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Received(span) | Piece::Added(span) => span.len(),
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// How many pieces the head is made of.
    pub fn pieces(&self) -> usize {
        self.pieces.len()
    }

    /// The head's pieces over `received`, in order.
    pub fn slices<'a>(&'a self, received: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.pieces.iter().map(move |piece| match *piece {
            Piece::Received(span) => span.of(received),
            Piece::Added(span) => span.of(&self.added),
        })
    }

    /// The head's pieces as `IoSlice`s, for a vectored write.
    pub fn io_slices<'a>(&'a self, received: &'a [u8]) -> Vec<IoSlice<'a>> {
        self.slices(received).map(IoSlice::new).collect()
    }

    /// The head copied out whole (for writers that cannot take pieces).
    pub fn copy_to(&self, received: &[u8], out: &mut Vec<u8>) {
        out.reserve(self.len());
        for slice in self.slices(received) {
            out.extend_from_slice(slice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_pieces_merge() {
        let received = b"abcdefgh";
        let mut edits = HeadEdits::default();
        edits.keep(Span::new(0, 2));
        edits.keep(Span::new(2, 4));
        edits.add(b"XY");
        edits.add(b"Z");
        edits.keep(Span::new(6, 8));
        edits.keep(Span::new(8, 8));
        assert_eq!(edits.pieces(), 3);
        let mut out = Vec::new();
        edits.copy_to(received, &mut out);
        assert_eq!(out, b"abcdXYZgh");
        assert_eq!(edits.len(), 9);
        let start = edits.added_mut().len();
        edits.added_mut().extend_from_slice(b"!");
        edits.added_since(start);
        assert_eq!(edits.pieces(), 4);
        out.clear();
        edits.copy_to(received, &mut out);
        assert_eq!(out, b"abcdXYZgh!");
    }
}
