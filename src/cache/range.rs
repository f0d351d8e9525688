//! One byte range of a stored response (RFC 9110 §14): what the cache serves
//! as a 206 from a whole stored body.

use http::HeaderValue;

/// The range a `Range` field asks of a body of `length` bytes, when it asks
/// for exactly one byte range: `Some(Some((first, last)))` to serve,
/// `Some(None)` when it cannot be satisfied (416). `None`: not one plain byte
/// range (several, another unit, malformed): the whole body is the answer.
pub fn single(range: &HeaderValue, length: u64) -> Option<Option<(u64, u64)>> {
    let text = range.to_str().ok()?.trim();
    let (unit, spec) = text.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    let number = |text: &str| -> Option<u64> {
        let text = text.trim();
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    if first.trim().is_empty() {
        // A suffix: the last N bytes.
        let suffix = number(last)?;
        if suffix == 0 || length == 0 {
            return Some(None);
        }
        return Some(Some((length.saturating_sub(suffix), length - 1)));
    }
    let first = number(first)?;
    let last = if last.trim().is_empty() {
        u64::MAX
    } else {
        number(last)?
    };
    if last < first {
        return None;
    }
    if first >= length {
        return Some(None);
    }
    Some(Some((first, last.min(length - 1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(range: &str, length: u64) -> Option<Option<(u64, u64)>> {
        single(&HeaderValue::from_str(range).unwrap(), length)
    }

    #[test]
    fn one_range_in_every_form() {
        assert_eq!(ask("bytes=0-1", 11), Some(Some((0, 1))));
        assert_eq!(ask("bytes=1-", 11), Some(Some((1, 10))));
        assert_eq!(ask("bytes=-3", 11), Some(Some((8, 10))));
        assert_eq!(ask("bytes=-30", 11), Some(Some((0, 10))));
        assert_eq!(ask("bytes=5-100", 11), Some(Some((5, 10))));
        assert_eq!(ask("bytes=11-", 11), Some(None));
        assert_eq!(ask("bytes=-0", 11), Some(None));
    }

    #[test]
    fn anything_else_is_the_whole_body() {
        for range in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=5-2",
            "bytes=a-b",
            "bytes",
            "bytes=-",
            "bytes=1--2",
        ] {
            assert_eq!(ask(range, 11), None, "{range}");
        }
    }
}
