//! weir's own HTTP/1 codec, built for relaying rather than serving: pieces
//! that validate bytes in place, so that what is forwarded is exactly what
//! was checked. First piece: the chunked body scanner.

pub mod chunked;
