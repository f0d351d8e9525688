//! A client's request stream as weir's HTTP/1 server reads it: a parsed head
//! turned into the request the proxy takes (the one conversion at the edge of
//! the codec), and its body handed out in pieces as its bytes arrive.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Request};

use super::chunked::{ChunkError, ChunkedScanner};
use super::head::{Field, Framing, HeadError, HeadReader, RequestHead, Version, http_fields};

/// The next request head at the front of `buf`, once whole: taken from it,
/// with its bytes. Empty lines before it (RFC 9112 §2.2 lets a server ignore
/// them) are dropped as they come, so that a stream of them costs linear time
/// and no room, and never counts as a head.
pub fn take_head(
    reader: &mut HeadReader,
    buf: &mut BytesMut,
    limit: usize,
    fields: &mut Vec<Field>,
) -> Result<Option<(RequestHead, Bytes)>, HeadError> {
    let empty = buf
        .chunks_exact(2)
        .take_while(|pair| *pair == b"\r\n")
        .count();
    if empty > 0 {
        buf.advance(empty * 2);
        reader.reset();
    }
    if buf.is_empty() {
        return Ok(None);
    }
    match reader.request(buf, limit, fields)? {
        Some(head) => {
            reader.reset();
            let bytes = buf.split_to(head.len).freeze();
            Ok(Some((head, bytes)))
        }
        None => Ok(None),
    }
}

/// A client's request head as it came: its bytes and the offsets the codec
/// parsed into them. It goes beside the proxy's request, in place of a
/// `HeaderMap`, read through `balance::Fields`, until the backend's
/// head is written as edits over it (`outgoing`); made a map only where one
/// is needed (an HTTP/2 backend, the cache).
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub bytes: Bytes,
    pub head: RequestHead,
    pub fields: std::sync::Arc<[Field]>,
    /// The head for the backend, once rewritten.
    pub outgoing: Option<Bytes>,
}

impl ReceivedRequest {
    /// Its fields as a `HeaderMap`, with room for the forwarded fields the
    /// rewrite adds (so that the map is not grown and rehashed on the way).
    pub fn header_map(&self) -> Result<HeaderMap, &'static str> {
        header_map(&self.fields, &self.bytes)
    }
}

/// The request for the proxy, made from a head parsed in place in `bytes`
/// (names, values and target shared with them, not copied).
pub fn to_request(
    head: &RequestHead,
    fields: &[Field],
    bytes: &Bytes,
) -> Result<Request<()>, &'static str> {
    let mut request = to_request_line(head, bytes)?;
    *request.headers_mut() = header_map(fields, bytes)?;
    Ok(request)
}

/// The request for the proxy with its method, target and version, and no
/// fields: those stay in the head's bytes ([`ReceivedRequest`]).
pub fn to_request_line(head: &RequestHead, bytes: &Bytes) -> Result<Request<()>, &'static str> {
    let method = http::Method::from_bytes(head.method_name.of(bytes)).map_err(|_| "bad method")?;
    let target = bytes.slice(head.target.start as usize..head.target.end as usize);
    let uri = http::Uri::from_maybe_shared(target).map_err(|_| "bad request target")?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = match head.version {
        Version::Http10 => http::Version::HTTP_10,
        Version::Http11 => http::Version::HTTP_11,
    };
    Ok(request)
}

fn header_map(fields: &[Field], bytes: &Bytes) -> Result<HeaderMap, &'static str> {
    let mut headers = HeaderMap::with_capacity(fields.len() + 3);
    for field in http_fields(bytes, fields) {
        let (name, value) = field?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// How much of a request's body is still to come.
#[derive(Debug, Clone)]
pub enum BodyLeft {
    /// Read whole (or none): the next bytes start a request.
    Done,
    Length(u64),
    Chunked(ChunkedScanner),
    /// Malformed, cut short or failed: the stream cannot be read in step.
    Broken,
}

/// One step of a body: a piece of it, its end, or more bytes needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Data(Bytes),
    End,
    NeedMore,
}

impl BodyLeft {
    /// The body a head with `framing` announces.
    pub fn of(framing: Framing) -> BodyLeft {
        match framing {
            Framing::Length(0) | Framing::Empty | Framing::UntilClose => BodyLeft::Done,
            Framing::Length(length) => BodyLeft::Length(length),
            Framing::Chunked => BodyLeft::Chunked(ChunkedScanner::default()),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, BodyLeft::Done)
    }

    /// The next piece of the body from the front of `buf` (taken from it):
    /// chunk data is handed on without its framing, and nothing past the
    /// body's end is taken.
    pub fn next_piece(&mut self, buf: &mut BytesMut) -> Result<Piece, BodyError> {
        loop {
            match self {
                BodyLeft::Done => return Ok(Piece::End),
                BodyLeft::Broken => return Err(BodyError::Broken),
                _ if buf.is_empty() => return Ok(Piece::NeedMore),
                BodyLeft::Length(left) => {
                    let take = (*left).min(buf.len() as u64);
                    *left -= take;
                    if *left == 0 {
                        *self = BodyLeft::Done;
                    }
                    return Ok(Piece::Data(buf.split_to(take as usize).freeze()));
                }
                BodyLeft::Chunked(scanner) => {
                    let decoded = match scanner.decode(buf) {
                        Ok(decoded) => decoded,
                        Err(error) => {
                            *self = BodyLeft::Broken;
                            return Err(BodyError::Chunk(error));
                        }
                    };
                    buf.advance(decoded.framing);
                    if decoded.done {
                        *self = BodyLeft::Done;
                    }
                    if decoded.data > 0 {
                        return Ok(Piece::Data(buf.split_to(decoded.data).freeze()));
                    }
                    if decoded.framing == 0 && !decoded.done {
                        return Ok(Piece::NeedMore);
                    }
                }
            }
        }
    }

    /// Skips what is left of a body nobody read, among the bytes in `buf`:
    /// true when it was all there.
    pub fn skip_buffered(&mut self, buf: &mut BytesMut) -> bool {
        loop {
            match self.next_piece(buf) {
                Ok(Piece::Data(_)) => {}
                Ok(Piece::End) => return true,
                Ok(Piece::NeedMore) | Err(_) => return false,
            }
        }
    }
}

/// Why a request body cannot be read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("malformed chunked request body: {0}")]
    Chunk(ChunkError),
    #[error("request body already failed")]
    Broken,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::parse_request;

    #[test]
    fn empty_lines_before_a_head_go_as_they_come() {
        let mut reader = HeadReader::default();
        let mut fields = Vec::new();
        let mut buf = BytesMut::from(&b"\r\n\r\n\r"[..]);
        assert_eq!(
            take_head(&mut reader, &mut buf, 8192, &mut fields),
            Ok(None)
        );
        assert_eq!(&buf[..], b"\r", "half an empty line waits");
        buf.extend_from_slice(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\nrest");
        let (head, bytes) = take_head(&mut reader, &mut buf, 8192, &mut fields)
            .unwrap()
            .unwrap();
        assert_eq!(head.len, bytes.len());
        assert!(bytes.starts_with(b"GET / "));
        assert_eq!(&buf[..], b"rest");
    }

    #[test]
    fn a_flood_of_empty_lines_is_not_a_head_and_costs_linear_time() {
        let mut reader = HeadReader::default();
        let mut fields = Vec::new();
        let mut buf = BytesMut::new();
        // Far past the limit: the lines are dropped, not kept to be parsed.
        for _ in 0..100_000 {
            buf.extend_from_slice(b"\r\n");
            assert_eq!(
                take_head(&mut reader, &mut buf, 8192, &mut fields),
                Ok(None)
            );
            assert!(buf.is_empty());
        }
    }

    fn request_of(text: &[u8]) -> Request<()> {
        let mut fields = Vec::new();
        let head = parse_request(text, &mut fields).unwrap().unwrap();
        to_request(&head, &fields, &Bytes::copy_from_slice(text)).unwrap()
    }

    #[test]
    fn a_head_becomes_the_same_request() {
        let request =
            request_of(b"POST /a/b?c=d HTTP/1.1\r\nHost: app.test\r\nX-One: 1\r\nx-one: 2\r\n\r\n");
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(request.uri(), "/a/b?c=d");
        assert_eq!(request.version(), http::Version::HTTP_11);
        let ones: Vec<_> = request.headers().get_all("x-one").iter().collect();
        assert_eq!(ones, ["1", "2"]);
        assert_eq!(request.headers()["host"], "app.test");
    }

    #[test]
    fn absolute_targets_and_http10_carry_over() {
        let request = request_of(b"GET http://app.test/x HTTP/1.0\r\n\r\n");
        assert_eq!(request.uri().host(), Some("app.test"));
        assert_eq!(request.uri().path(), "/x");
        assert_eq!(request.version(), http::Version::HTTP_10);
    }

    fn pieces(body: &mut BodyLeft, buf: &mut BytesMut) -> (Vec<u8>, Piece) {
        let mut data = Vec::new();
        loop {
            match body.next_piece(buf).unwrap() {
                Piece::Data(piece) => data.extend_from_slice(&piece),
                other => return (data, other),
            }
        }
    }

    #[test]
    fn a_length_body_stops_at_its_end() {
        let mut body = BodyLeft::of(Framing::Length(5));
        let mut buf = BytesMut::from(&b"hel"[..]);
        assert_eq!(
            pieces(&mut body, &mut buf),
            (b"hel".to_vec(), Piece::NeedMore)
        );
        buf.extend_from_slice(b"loGET /");
        assert_eq!(pieces(&mut body, &mut buf), (b"lo".to_vec(), Piece::End));
        assert_eq!(&buf[..], b"GET /");
    }

    #[test]
    fn chunks_are_handed_on_without_their_framing() {
        let mut body = BodyLeft::of(Framing::Chunked);
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\nNEXT"[..]);
        assert_eq!(pieces(&mut body, &mut buf), (b"abcde".to_vec(), Piece::End));
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn a_bad_chunk_breaks_the_body_for_good() {
        let mut body = BodyLeft::of(Framing::Chunked);
        let mut buf = BytesMut::from(&b"zz\r\n"[..]);
        assert!(matches!(
            body.next_piece(&mut buf),
            Err(BodyError::Chunk(_))
        ));
        assert_eq!(body.next_piece(&mut buf), Err(BodyError::Broken));
        assert!(!body.skip_buffered(&mut buf));
    }

    #[test]
    fn a_body_nobody_read_is_skipped_only_when_all_there() {
        let mut body = BodyLeft::of(Framing::Length(4));
        let mut buf = BytesMut::from(&b"ab"[..]);
        assert!(!body.skip_buffered(&mut buf));
        buf.extend_from_slice(b"cdX");
        assert!(body.skip_buffered(&mut buf));
        assert_eq!(&buf[..], b"X");
    }
}
