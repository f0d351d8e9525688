//! The PROXY protocol (v1 text, v2 binary): the header an L4 load balancer in
//! front sends before the client's bytes, carrying the client's address, and the
//! one weir sends to backends that want it. Read byte-exactly: nothing after the
//! header is consumed, so HTTP starts where the header ends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature: the first 12 bytes of every v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 line, CRLF included (the spec's bound).
const V1_MAX: usize = 107;

/// Largest v2 address block accepted (addresses plus TLVs); real ones are tiny.
const V2_MAX_LEN: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyHeaderError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("connection closed inside the PROXY protocol header")]
    Truncated,
}

/// Reads the PROXY header at the start of `stream`. Returns the client address it
/// carries, or `None` for a header that carries none (v1 `UNKNOWN`, v2 `LOCAL`
/// or an unspecified family: the balancer's own health checks).
pub async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    // Both versions are at least 15 bytes long: 8 can be read without over-reading.
    let mut start = [0u8; 8];
    read_exact(stream, &mut start).await?;
    if start.starts_with(b"PROXY ") {
        let mut line = Vec::with_capacity(V1_MAX);
        line.extend_from_slice(&start);
        read_v1_line(stream, &mut line).await?;
        parse_v1(&line)
    } else if start == V2_SIGNATURE[..8] {
        let mut head = [0u8; 16];
        head[..8].copy_from_slice(&start);
        read_exact(stream, &mut head[8..]).await?;
        if head[..12] != V2_SIGNATURE {
            return Err(ProxyHeaderError::Malformed("bad v2 signature"));
        }
        let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
        if len > V2_MAX_LEN {
            return Err(ProxyHeaderError::Malformed("v2 address block too long"));
        }
        let mut block = vec![0u8; len];
        read_exact(stream, &mut block).await?;
        parse_v2(head[12], head[13], &block)
    } else {
        Err(ProxyHeaderError::Missing)
    }
}

async fn read_exact(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), ProxyHeaderError> {
    stream
        .read_exact(buf)
        .await
        .map(drop)
        .map_err(|_| ProxyHeaderError::Truncated)
}

/// Reads the rest of a v1 line (through CRLF) into `line`. Peeks to find the end,
/// then reads exactly that much; a line still incomplete is read on byte by byte,
/// each read waiting for data (no busy loop).
async fn read_v1_line(stream: &mut TcpStream, line: &mut Vec<u8>) -> Result<(), ProxyHeaderError> {
    let mut peeked = [0u8; V1_MAX];
    loop {
        if line.ends_with(b"\r\n") {
            return Ok(());
        }
        let room = V1_MAX - line.len();
        if room == 0 {
            return Err(ProxyHeaderError::Malformed("v1 line longer than 107 bytes"));
        }
        let available = stream
            .peek(&mut peeked[..room])
            .await
            .map_err(|_| ProxyHeaderError::Truncated)?;
        if available == 0 {
            return Err(ProxyHeaderError::Truncated);
        }
        // Where the line ends in what has arrived, counting a CR already read.
        let seen = &peeked[..available];
        let end = if line.ends_with(b"\r") && seen[0] == b'\n' {
            Some(1)
        } else {
            seen.windows(2).position(|w| w == b"\r\n").map(|at| at + 2)
        };
        let take = end.unwrap_or(1);
        let from = line.len();
        line.resize(from + take, 0);
        read_exact(stream, &mut line[from..]).await?;
    }
}

/// Which header to send to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The header that says a connection comes from `source` and was made to
/// `destination`. Mixed address families cannot be told in one header: v1 says
/// `UNKNOWN` and v2 `LOCAL` then, and the backend sees weir's own address.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    match version {
        Version::V1 => match (source, destination) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => format!(
                "PROXY TCP4 {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            )
            .into_bytes(),
            (SocketAddr::V6(s), SocketAddr::V6(d)) => format!(
                "PROXY TCP6 {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            )
            .into_bytes(),
            _ => local(Version::V1),
        },
        Version::V2 => {
            // Family byte, then source and destination addresses of that family.
            let (family, source_ip, destination_ip) = match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => (0x11, s.octets().to_vec(), d.octets().to_vec()),
                (IpAddr::V6(s), IpAddr::V6(d)) => (0x21, s.octets().to_vec(), d.octets().to_vec()),
                _ => return local(Version::V2),
            };
            let len = (source_ip.len() * 2 + 4) as u16;
            let mut header = V2_SIGNATURE.to_vec();
            header.extend_from_slice(&[0x21, family]);
            header.extend_from_slice(&len.to_be_bytes());
            header.extend_from_slice(&source_ip);
            header.extend_from_slice(&destination_ip);
            header.extend_from_slice(&source.port().to_be_bytes());
            header.extend_from_slice(&destination.port().to_be_bytes());
            header
        }
    }
}

/// The header of a connection weir makes for itself (a health check): v1
/// `UNKNOWN`, v2 `LOCAL`; the backend takes the connection's own addresses.
pub fn local(version: Version) -> Vec<u8> {
    match version {
        Version::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        Version::V2 => [V2_SIGNATURE.as_slice(), &[0x20, 0x00, 0, 0]].concat(),
    }
}

fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let bad = ProxyHeaderError::Malformed;
    let text = std::str::from_utf8(line).map_err(|_| bad("v1 header is not text"))?;
    let text = text
        .strip_suffix("\r\n")
        .ok_or(bad("v1 header without CRLF"))?;
    let mut parts = text.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(bad("v1 header without PROXY"));
    }
    let family = parts.next().ok_or(bad("v1 header without a family"))?;
    if family == "UNKNOWN" {
        return Ok(None);
    }
    let fields: Vec<&str> = parts.collect();
    let [source, _destination, source_port, _destination_port] = fields[..] else {
        return Err(bad("v1 header needs four fields after the family"));
    };
    let ip: IpAddr = match family {
        "TCP4" => source
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| bad("v1 TCP4 source is not an IPv4 address"))?,
        "TCP6" => source
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| bad("v1 TCP6 source is not an IPv6 address"))?,
        _ => return Err(bad("v1 family is not TCP4, TCP6 or UNKNOWN")),
    };
    let port: u16 = source_port
        .parse()
        .map_err(|_| bad("v1 source port is not a port"))?;
    Ok(Some(SocketAddr::new(ip, port)))
}

fn parse_v2(
    version_command: u8,
    family: u8,
    block: &[u8],
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let bad = ProxyHeaderError::Malformed;
    if version_command >> 4 != 2 {
        return Err(bad("v2 header with another version"));
    }
    match version_command & 0x0f {
        // LOCAL: the balancer speaking for itself (a health check).
        0x0 => return Ok(None),
        0x1 => {}
        _ => return Err(bad("v2 command is neither LOCAL nor PROXY")),
    }
    match family >> 4 {
        // IPv4: source, destination, source port, destination port.
        0x1 if block.len() >= 12 => {
            let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
            let port = u16::from_be_bytes([block[8], block[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        0x2 if block.len() >= 36 => {
            let octets: [u8; 16] = block[..16].try_into().expect("16 bytes");
            let port = u16::from_be_bytes([block[32], block[33]]);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port,
            )))
        }
        0x1 | 0x2 => Err(bad("v2 address block shorter than its family needs")),
        // UNSPEC or UNIX: no IP client address to take.
        0x0 | 0x3 => Ok(None),
        _ => Err(bad("v2 address family unknown")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Sends `bytes` over a real loopback connection and reads the header there;
    /// also returns what the stream holds after the header.
    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(bytes).await.unwrap();
        client.shutdown().await.unwrap();
        let result = read_header(&mut server).await;
        let mut rest = Vec::new();
        let _ = server.read_to_end(&mut rest).await;
        (result, rest)
    }

    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x20 | command, family]);
        bytes.extend_from_slice(&(block.len() as u16).to_be_bytes());
        bytes.extend_from_slice(block);
        bytes
    }

    #[tokio::test]
    async fn v1_carries_the_client_and_leaves_the_request() {
        let (result, rest) =
            read(b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(result, Ok(Some("203.0.113.7:56324".parse().unwrap())));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
        let (result, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\n").await;
        assert_eq!(result, Ok(Some("[2001:db8::7]:4000".parse().unwrap())));
        let (result, rest) = read(b"PROXY UNKNOWN\r\nGET").await;
        assert_eq!((result, rest), (Ok(None), b"GET".to_vec()));
    }

    #[tokio::test]
    async fn v2_carries_the_client_and_leaves_the_request() {
        let mut block = vec![198, 51, 100, 9, 10, 0, 0, 1];
        block.extend_from_slice(&1234u16.to_be_bytes());
        block.extend_from_slice(&443u16.to_be_bytes());
        block.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]); // a TLV, skipped
        let mut bytes = v2(0x1, 0x11, &block);
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let (result, rest) = read(&bytes).await;
        assert_eq!(result, Ok(Some("198.51.100.9:1234".parse().unwrap())));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");

        let mut block = vec![0u8; 36];
        block[15] = 5;
        block[32..34].copy_from_slice(&80u16.to_be_bytes());
        let (result, _) = read(&v2(0x1, 0x21, &block)).await;
        assert_eq!(result, Ok(Some("[::5]:80".parse().unwrap())));
        let (result, _) = read(&v2(0x0, 0x00, &[])).await;
        assert_eq!(result, Ok(None), "LOCAL");
    }

    #[tokio::test]
    async fn what_weir_sends_reads_back() {
        let pairs = [
            ("203.0.113.7:5000", "10.0.0.1:80"),
            ("[2001:db8::7]:5000", "[2001:db8::1]:443"),
        ];
        for version in [Version::V1, Version::V2] {
            for (source, destination) in pairs {
                let (source, destination) = (source.parse().unwrap(), destination.parse().unwrap());
                let (result, _) = read(&encode(version, source, destination)).await;
                assert_eq!(result, Ok(Some(source)), "{version:?}");
            }
            let mixed = encode(
                version,
                "1.2.3.4:5".parse().unwrap(),
                "[::1]:80".parse().unwrap(),
            );
            assert_eq!(
                read(&mixed).await.0,
                Ok(None),
                "{version:?}: mixed families"
            );
        }
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for (bytes, expected) in [
            (
                b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                ProxyHeaderError::Missing,
            ),
            (
                b"PROXY TCP4 1.2.3.4\r\n\r\n".to_vec(),
                ProxyHeaderError::Malformed("v1 header needs four fields after the family"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n".to_vec(),
                ProxyHeaderError::Malformed("v1 source port is not a port"),
            ),
            (
                b"PROXY TCP9 a b 1 2\r\n".to_vec(),
                ProxyHeaderError::Malformed("v1 family is not TCP4, TCP6 or UNKNOWN"),
            ),
            (
                [b"PROXY ".as_slice(), &[b'x'; 120]].concat(),
                ProxyHeaderError::Malformed("v1 line longer than 107 bytes"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6".to_vec(),
                ProxyHeaderError::Truncated,
            ),
            (
                v2(0x1, 0x11, &[1, 2, 3]),
                ProxyHeaderError::Malformed("v2 address block shorter than its family needs"),
            ),
            (
                v2(0x5, 0x11, &[0; 12]),
                ProxyHeaderError::Malformed("v2 command is neither LOCAL nor PROXY"),
            ),
            (
                v2(0x1, 0x11, &[0; 4])[..18].to_vec(),
                ProxyHeaderError::Truncated,
            ),
        ] {
            assert_eq!(read(&bytes).await.0, Err(expected));
        }
    }
}
