//! The `Date` field (RFC 9110 §6.6.1) every response carries, formatted once
//! per second per thread rather than per response.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// `Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n`: always this long.
const LINE_LEN: usize = 37;

struct Cached {
    second: u64,
    line: [u8; LINE_LEN],
}

thread_local! {
    static CACHED: RefCell<Cached> = const {
        RefCell::new(Cached { second: u64::MAX, line: [0; LINE_LEN] })
    };
}

/// Calls `f` with the current `Date` field line, CRLF included.
pub fn with_date_line<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.second != second {
            let date = httpdate::fmt_http_date(now);
            let mut line = [0u8; LINE_LEN];
            line[..6].copy_from_slice(b"Date: ");
            // IMF-fixdate is fixed-width; a clock outside its range (years
            // before 1970 or past 9999) leaves the previous second's line.
            if date.len() == LINE_LEN - 8 {
                line[6..LINE_LEN - 2].copy_from_slice(date.as_bytes());
                line[LINE_LEN - 2..].copy_from_slice(b"\r\n");
                cached.line = line;
                cached.second = second;
            }
        }
        f(&cached.line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_an_imf_fixdate_of_now() {
        let line = with_date_line(<[u8]>::to_vec);
        let text = std::str::from_utf8(&line).unwrap();
        assert!(
            text.starts_with("Date: ") && text.ends_with(" GMT\r\n"),
            "{text:?}"
        );
        let date = httpdate::parse_http_date(&text[6..text.len() - 2]).unwrap();
        let age = SystemTime::now().duration_since(date).unwrap();
        assert!(age.as_secs() <= 2, "{age:?}");
    }
}
