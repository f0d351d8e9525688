//! The PROXY protocol header reader, over a real loopback connection: it reads a
//! `TcpStream` (it peeks to find the end of a v1 line), so no in-memory reader
//! can stand in for one.
//!
//! Each input makes one connection, which carries a v1 and a v2 header encoded by
//! `proxy_protocol::encode` from addresses drawn from the input's first bytes,
//! then the input itself. Oracles, beyond "no panic":
//! - each encoded header reads back as its client address (or as none for mixed
//!   families, which the encoding cannot carry), consuming exactly itself;
//! - when the input is accepted as a header, exactly that header was consumed and
//!   the bytes after it are still in the stream.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use weir::proxy_protocol::{self, ProxyHeaderError, Version};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// One runtime and one listener for the whole run: setting them up per input
/// would cost more than the parse.
struct Loopback {
    runtime: Runtime,
    listener: TcpListener,
    address: SocketAddr,
}

fn loopback() -> &'static Loopback {
    static LOOPBACK: OnceLock<Loopback> = OnceLock::new();
    LOOPBACK.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind on loopback");
        let address = listener.local_addr().expect("local address");
        Loopback {
            runtime,
            listener,
            address,
        }
    })
}

type HeaderResult = Result<Option<SocketAddr>, ProxyHeaderError>;

/// Sends `encoded` and then `raw` on a fresh connection, and reads on the other
/// end a header for each of `encoded`, then one from `raw` and, when that one
/// is accepted, the stream after it. One connection for all: connections are
/// what the target's time goes to.
fn read_sent(encoded: &[Vec<u8>], raw: &[u8]) -> (Vec<HeaderResult>, HeaderResult, Vec<u8>) {
    let loopback = loopback();
    loopback.runtime.block_on(async {
        let mut client = TcpStream::connect(loopback.address)
            .await
            .expect("connect on loopback");
        let (mut server, _) = loopback.listener.accept().await.expect("accept");
        // The client writes while the server reads: a long input must not wait
        // for a reader that gave up early.
        let sent = [encoded.concat(), raw.to_vec()].concat();
        let writer = tokio::spawn(async move {
            // Fails once the server has closed after an early verdict: fine.
            let _ = client.write_all(&sent).await;
            let _ = client.shutdown().await;
            client
        });
        let mut encoded_reads = Vec::new();
        for _ in encoded {
            encoded_reads.push(proxy_protocol::read_header(&mut server).await);
        }
        let result = proxy_protocol::read_header(&mut server).await;
        let mut rest = Vec::new();
        if result.is_ok() {
            server.read_to_end(&mut rest).await.expect("read the rest");
        }
        // A reset, not a FIN: no TIME_WAIT left behind, or a long run would use up
        // the loopback ports.
        server.set_zero_linger().expect("SO_LINGER");
        drop(server);
        drop(writer.await);
        (encoded_reads, result, rest)
    })
}

/// The length of the header at the start of `bytes` that the reader accepted.
fn header_len(bytes: &[u8]) -> usize {
    if bytes.starts_with(V2_SIGNATURE) {
        16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]))
    } else {
        let line_end = bytes
            .windows(2)
            .position(|pair| pair == b"\r\n")
            .expect("an accepted v1 header ends with CRLF");
        line_end + 2
    }
}

fn address(input: &mut Unstructured<'_>, v6: bool) -> SocketAddr {
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::from(
            input.arbitrary::<u128>().unwrap_or_default(),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(input.arbitrary::<u32>().unwrap_or_default()))
    };
    SocketAddr::new(ip, input.arbitrary().unwrap_or_default())
}

fuzz_target!(|data: &[u8]| {
    // The input's first bytes also choose the addresses to encode; all of it is
    // sent as a header of its own after the encoded ones.
    let mut input = Unstructured::new(data);
    let (source_v6, destination_v6) = (
        input.arbitrary().unwrap_or_default(),
        input.arbitrary().unwrap_or_default(),
    );
    let source = address(&mut input, source_v6);
    let destination = address(&mut input, destination_v6);
    let encoded = [Version::V1, Version::V2].map(|version| {
        (
            version,
            proxy_protocol::encode(version, source, destination),
        )
    });
    let headers: Vec<Vec<u8>> = encoded.iter().map(|(_, header)| header.clone()).collect();

    let (encoded_reads, result, rest) = read_sent(&headers, data);

    // Mixed families cannot be told in one header: it carries no client then.
    let expected = (source.is_ipv4() == destination.is_ipv4()).then_some(source);
    for ((version, header), read) in encoded.iter().zip(encoded_reads) {
        assert_eq!(
            read,
            Ok(expected),
            "{version:?} from {source} to {destination}: {header:?}"
        );
    }
    if result.is_ok() {
        let consumed = data.len() - rest.len();
        assert_eq!(
            consumed,
            header_len(data),
            "accepted {result:?} after consuming {consumed} bytes"
        );
        assert_eq!(rest, data[consumed..], "the bytes after the header");
    }
});
