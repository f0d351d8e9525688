//! A request's fields as the strategies and the rate limits read them,
//! however the request was read: hyper's `HeaderMap` (HTTP/2) or weir's own
//! HTTP/1 head (offsets into the received bytes, no map built).

use http::HeaderMap;

use crate::http1::head::Field;
use crate::http1::request::ReceivedRequest;

#[derive(Debug, Clone, Copy)]
pub enum Fields<'a> {
    Map(&'a HeaderMap),
    /// The fields of a head parsed in place, over the buffer they lie in.
    Head {
        buf: &'a [u8],
        fields: &'a [Field],
    },
}

impl<'a> Fields<'a> {
    /// The fields of a request: the head weir's HTTP/1 server parsed in
    /// place when the request came with one (`received`), else its map.
    pub fn of(headers: &'a HeaderMap, received: Option<&'a ReceivedRequest>) -> Self {
        match received {
            Some(received) => Fields::Head {
                buf: &received.bytes,
                fields: &received.fields,
            },
            None => Fields::Map(headers),
        }
    }

    /// The values of every field named `name` (lower case), in order.
    pub fn values<'n>(self, name: &'n str) -> Values<'a, 'n> {
        match self {
            Fields::Map(map) => Values::Map(map.get_all(name).iter()),
            Fields::Head { buf, fields } => Values::Head {
                buf,
                fields: fields.iter(),
                name: name.as_bytes(),
            },
        }
    }

    /// The value of the first field named `name` (lower case).
    pub fn first(self, name: &str) -> Option<&'a [u8]> {
        self.values(name).next()
    }

    /// The value of the first cookie named `name`, of the `Cookie` fields
    /// that are UTF-8.
    pub fn cookie(self, name: &str) -> Option<&'a str> {
        self.cookies(name).next()
    }

    /// The values of every cookie named `name`, in order.
    pub fn cookies<'n>(self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.values("cookie")
            .filter_map(|value| std::str::from_utf8(value).ok())
            .flat_map(|value| value.split(';'))
            .filter_map(move |pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
    }
}

/// The values of one field name.
pub enum Values<'a, 'n> {
    Map(http::header::ValueIter<'a, http::HeaderValue>),
    Head {
        buf: &'a [u8],
        fields: std::slice::Iter<'a, Field>,
        name: &'n [u8],
    },
}

impl<'a> Iterator for Values<'a, '_> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Map(values) => values.next().map(http::HeaderValue::as_bytes),
            Values::Head { buf, fields, name } => fields
                .find(|field| field.name.of(buf).eq_ignore_ascii_case(name))
                .map(|field| field.value.of(buf)),
        }
    }
}

impl DoubleEndedIterator for Values<'_, '_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Values::Map(values) => values.next_back().map(http::HeaderValue::as_bytes),
            Values::Head { buf, fields, name } => fields
                .rfind(|field| field.name.of(buf).eq_ignore_ascii_case(name))
                .map(|field| field.value.of(buf)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::parse_request;

    /// The same request read both ways gives the same values.
    #[test]
    fn a_map_and_a_head_read_alike() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Key: one\r\nCookie: a=1; s=x\r\nx-key: two\r\nCOOKIE: s=y\r\n\r\n";
        let mut parsed = Vec::new();
        parse_request(raw, &mut parsed).unwrap().unwrap();
        let head = Fields::Head {
            buf: raw,
            fields: &parsed,
        };
        let mut map = HeaderMap::new();
        map.append("host", "a".parse().unwrap());
        map.append("x-key", "one".parse().unwrap());
        map.append("cookie", "a=1; s=x".parse().unwrap());
        map.append("x-key", "two".parse().unwrap());
        map.append("cookie", "s=y".parse().unwrap());
        let map = Fields::Map(&map);
        for fields in [head, map] {
            assert_eq!(fields.values("x-key").collect::<Vec<_>>(), [b"one", b"two"]);
            assert_eq!(
                fields.values("x-key").rev().collect::<Vec<_>>(),
                [b"two", b"one"]
            );
            assert_eq!(fields.first("host"), Some(&b"a"[..]));
            assert_eq!(fields.first("missing"), None);
            assert_eq!(fields.cookie("s"), Some("x"));
            assert_eq!(fields.cookies("s").collect::<Vec<_>>(), ["x", "y"]);
        }
    }
}
