//! Expected positions written into a test's config text: a `‸` right before the
//! token a problem is expected at, instead of a line and column counted by hand.

/// Written in a config text right before the token a problem is expected at.
pub const MARK: char = '‸';

/// `text` without its marks, and the line and column of each mark in that text.
pub fn marks(text: &str) -> (String, Vec<(usize, usize)>) {
    let mut clean = String::with_capacity(text.len());
    let mut places = Vec::new();
    let (mut line, mut column) = (1, 1);
    for c in text.chars() {
        if c == MARK {
            places.push((line, column));
            continue;
        }
        clean.push(c);
        if c == '\n' {
            (line, column) = (line + 1, 1);
        } else {
            column += 1;
        }
    }
    (clean, places)
}

/// `text` without its one mark, and the mark's line and column.
#[track_caller]
pub fn marked(text: &str) -> (String, usize, usize) {
    let (clean, places) = marks(text);
    assert_eq!(places.len(), 1, "expected one {MARK} in {text:?}");
    let (line, column) = places[0];
    (clean, line, column)
}

/// `text` without its marks, for a test that does not look at positions.
pub fn unmarked(text: &str) -> String {
    marks(text).0
}
