//! The tests' name server (`support::dns`) as the real resolver sees it: hickory's,
//! configured with that one server, the way weir resolves backends by name. Also
//! pins down what hickory-resolver 0.26 reports, which weir relies on:
//!
//! - `lookup_ip` / `ipv4_lookup` / `srv_lookup` give a `Lookup` whose `answers()`
//!   are the records with their TTLs, and whose `valid_until()` is when the answer
//!   was received plus the smallest TTL of the records of the asked type.
//! - The resolver's own cache (`ResolverOpts::cache_size`, 8192 responses by
//!   default) keeps an answer until that `valid_until`. A hit reports the TTLs
//!   decremented by the whole seconds elapsed, so its `valid_until` runs up to a
//!   second past the first one's. `cache_size = 0` turns the cache off entirely
//!   (nothing is stored, every lookup asks the server).
//! - `positive_min_ttl` / `positive_max_ttl` clamp the records' TTLs themselves,
//!   cache or not: the lookup reports the clamped TTL, not the server's. The
//!   `negative_*` pair clamps how long a negative answer is cached.
//! - Errors are `hickory_resolver::net::NetError`: NXDOMAIN is
//!   `Dns(DnsError::NoRecordsFound(NoRecords { response_code: NXDomain, .. }))`
//!   (`is_nx_domain()`), NODATA the same with `response_code: NoError`; SERVFAIL is
//!   `Dns(DnsError::ResponseCode(ServFail))`; no answer within `timeout` is
//!   `Timeout`, and so is a server that is not there at all (its port unreachable
//!   is not seen). `negative_ttl` is the SOA's TTL when the server sent one.
//! - `attempts` counts retries after the first try (0: ask once). SERVFAIL and
//!   timeouts are retried; NXDOMAIN and NODATA are not.

mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use support::dns::{Answer, DnsServer, SrvRecord};
use support::within;

/// Options for a resolver that asks the server every time: no cache, no hosts
/// file, one try; the timeout is far below the support bound.
fn uncached() -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.attempts = 0;
    opts.timeout = Duration::from_secs(2);
    opts
}

/// A resolver asking only `server`: over UDP, and over TCP on the same port when an
/// answer comes back truncated.
fn resolver_of(server: &DnsServer, opts: ResolverOpts) -> TokioResolver {
    let port = server.addr().port();
    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
        .into_iter()
        .map(|mut connection| {
            connection.port = port;
            connection
        })
        .collect();
    let name_server = NameServerConfig::new(server.addr().ip(), true, connections);
    let config = ResolverConfig::from_name_servers(vec![name_server]);
    Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .expect("a resolver")
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn ips(lookup: impl IntoIterator<Item = IpAddr>) -> BTreeSet<IpAddr> {
    lookup.into_iter().collect()
}

/// The TTLs of the answers, one per record.
fn ttls(lookup: &Lookup) -> Vec<u32> {
    lookup.answers().iter().map(|record| record.ttl).collect()
}

/// `valid_until` is `ttl` after the answer arrived, which was between `before` and now.
fn assert_valid_for(valid_until: Instant, before: Instant, ttl: u64) {
    let ttl = Duration::from_secs(ttl);
    assert!(
        before + ttl <= valid_until && valid_until <= Instant::now() + ttl,
        "valid_until is not {ttl:?} after the answer"
    );
}

/// The error of a lookup that must fail.
fn failure<T: std::fmt::Debug>(result: Result<T, NetError>) -> NetError {
    result.expect_err("the lookup fails")
}

/// The `NoRecords` of a negative answer (NXDOMAIN or NODATA).
fn negative(error: &NetError) -> &NoRecords {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => no_records,
        other => panic!("not a negative answer: {other:?}"),
    }
}

#[tokio::test]
async fn a_records_come_with_their_ttl() {
    let server = DnsServer::start().await;
    server.set(
        "app.internal",
        Answer::Addresses(vec![ip("127.0.0.2"), ip("127.0.0.3")]),
        30,
    );
    let resolver = resolver_of(&server, uncached());

    let before = Instant::now();
    let lookup = within("lookup_ip", resolver.lookup_ip("app.internal."))
        .await
        .unwrap();
    assert_eq!(ips(lookup.iter()), ips([ip("127.0.0.2"), ip("127.0.0.3")]));
    assert_eq!(ttls(lookup.as_lookup()), [30, 30]);
    assert_valid_for(lookup.valid_until(), before, 30);
    // lookup_ip asks A and AAAA at once; the AAAA side is NODATA and left out.
    assert_eq!(server.queries("app.internal"), 2);

    // Case and the final dot do not matter, to the server or the resolver.
    let lookup = within("ipv4_lookup", resolver.ipv4_lookup("APP.Internal"))
        .await
        .unwrap();
    assert_eq!(ttls(&lookup), [30, 30]);
    assert_eq!(server.queries("App.Internal."), 3);

    // positive_max_ttl rewrites the TTLs the lookup reports.
    let mut opts = uncached();
    opts.positive_max_ttl = Some(Duration::from_secs(5));
    let clamped = resolver_of(&server, opts);
    let before = Instant::now();
    let lookup = within("clamped lookup", clamped.ipv4_lookup("app.internal."))
        .await
        .unwrap();
    assert_eq!(ttls(&lookup), [5, 5]);
    assert_valid_for(lookup.valid_until(), before, 5);

    // TTL 0: valid until the moment it arrived, already past.
    server.set("now.internal", Answer::Addresses(vec![ip("127.0.0.4")]), 0);
    let lookup = within("TTL 0 lookup", resolver.ipv4_lookup("now.internal."))
        .await
        .unwrap();
    assert_eq!(ttls(&lookup), [0]);
    assert!(lookup.valid_until() <= Instant::now());
}

#[tokio::test]
async fn aaaa_records_on_ipv6_loopback() {
    let server = DnsServer::start().await;
    server.set("six.internal", Answer::Addresses(vec![ip("::1")]), 20);
    server.set(
        "both.internal",
        Answer::Addresses(vec![ip("127.0.0.2"), ip("::1")]),
        20,
    );
    let resolver = resolver_of(&server, uncached());

    let lookup = within("ipv6_lookup", resolver.ipv6_lookup("six.internal."))
        .await
        .unwrap();
    let six: Vec<_> = lookup.answers().iter().map(|r| r.data.ip_addr()).collect();
    assert_eq!(six, [Some(IpAddr::V6(Ipv6Addr::LOCALHOST))]);
    assert_eq!(ttls(&lookup), [20]);

    let lookup = within("lookup_ip", resolver.lookup_ip("both.internal."))
        .await
        .unwrap();
    assert_eq!(ips(lookup), ips([ip("127.0.0.2"), ip("::1")]));

    // A name with only IPv6 addresses has no A records: NODATA, not NXDOMAIN.
    let error = failure(within("ipv4_lookup", resolver.ipv4_lookup("six.internal.")).await);
    assert!(!error.is_nx_domain());
    let answer = negative(&error);
    assert_eq!(answer.response_code, ResponseCode::NoError);
    assert_eq!(answer.negative_ttl, Some(20));
}

#[tokio::test]
async fn a_change_is_seen_once_the_ttl_has_run_out() {
    let server = DnsServer::start().await;
    server.set("app.internal", Answer::Addresses(vec![ip("127.0.0.2")]), 2);
    let mut opts = uncached();
    opts.cache_size = ResolverOpts::default().cache_size;
    let cached = resolver_of(&server, opts);
    let uncached = resolver_of(&server, uncached());

    let first = within("first lookup", cached.ipv4_lookup("app.internal."))
        .await
        .unwrap();
    assert_eq!(
        ips(first.answers().iter().filter_map(|r| r.data.ip_addr())),
        ips([ip("127.0.0.2")])
    );
    assert_eq!(server.queries("app.internal"), 1);

    server.set("app.internal", Answer::Addresses(vec![ip("127.0.0.3")]), 2);

    // Without a cache the change is seen at once.
    let fresh = within("uncached lookup", uncached.ipv4_lookup("app.internal."))
        .await
        .unwrap();
    let fresh_ips = fresh.answers().iter().filter_map(|r| r.data.ip_addr());
    assert_eq!(ips(fresh_ips), ips([ip("127.0.0.3")]));
    assert_eq!(server.queries("app.internal"), 2);

    // The cache answers with the old record until the TTL runs out, without asking,
    // and its `valid_until` is later than the first one's: the TTL it reports lost
    // only the whole seconds elapsed.
    let hit = within("cached lookup", cached.ipv4_lookup("app.internal."))
        .await
        .unwrap();
    let hit_ips = hit.answers().iter().filter_map(|r| r.data.ip_addr());
    assert_eq!(ips(hit_ips), ips([ip("127.0.0.2")]));
    assert_eq!(server.queries("app.internal"), 2);
    assert!(hit.valid_until() > first.valid_until());

    // The TTL is the input here: wait for it to run out (a deadline, not a
    // synchronisation), then the cache asks again and sees the change.
    within(
        "the TTL to run out",
        tokio::time::sleep_until((first.valid_until() + Duration::from_millis(20)).into()),
    )
    .await;
    let after = within("lookup after the TTL", cached.ipv4_lookup("app.internal."))
        .await
        .unwrap();
    let after_ips = after.answers().iter().filter_map(|r| r.data.ip_addr());
    assert_eq!(ips(after_ips), ips([ip("127.0.0.3")]));
    assert_eq!(server.queries("app.internal"), 3);
}

#[tokio::test]
async fn srv_records_with_their_targets_addresses() {
    let server = DnsServer::start().await;
    server.set(
        "_http._tcp.app.consul",
        Answer::Srv(vec![
            SrvRecord::new(10, 60, 8080, "a.app.consul"),
            SrvRecord::new(10, 40, 8081, "b.app.consul."),
            SrvRecord::new(20, 0, 8082, "c.app.consul"),
        ]),
        15,
    );
    server.set("a.app.consul", Answer::Addresses(vec![ip("127.0.0.2")]), 40);
    server.set(
        "B.app.consul",
        Answer::Addresses(vec![ip("127.0.0.3"), ip("::1")]),
        50,
    );
    // c.app.consul is not set: no additional records for it.
    let resolver = resolver_of(&server, uncached());

    let before = Instant::now();
    let lookup = within("srv_lookup", resolver.srv_lookup("_http._tcp.app.consul."))
        .await
        .unwrap();
    let srv: BTreeSet<_> = lookup
        .answers()
        .iter()
        .map(|record| match &record.data {
            RData::SRV(srv) => (
                srv.priority,
                srv.weight,
                srv.port,
                srv.target.to_ascii(),
                record.ttl,
            ),
            other => panic!("not an SRV record: {other:?}"),
        })
        .collect();
    let expected: BTreeSet<_> = [
        (10, 60, 8080, "a.app.consul.".to_owned(), 15),
        (10, 40, 8081, "b.app.consul.".to_owned(), 15),
        (20, 0, 8082, "c.app.consul.".to_owned(), 15),
    ]
    .into();
    assert_eq!(srv, expected);
    assert_valid_for(lookup.valid_until(), before, 15);

    let additional: BTreeSet<_> = lookup
        .additionals()
        .iter()
        .map(|record| {
            let ip = record.data.ip_addr().expect("an address record");
            (record.name.to_ascii(), record.record_type(), ip, record.ttl)
        })
        .collect();
    let expected: BTreeSet<_> = [
        (
            "a.app.consul.".to_owned(),
            RecordType::A,
            ip("127.0.0.2"),
            40,
        ),
        (
            "b.app.consul.".to_owned(),
            RecordType::A,
            ip("127.0.0.3"),
            50,
        ),
        ("b.app.consul.".to_owned(), RecordType::AAAA, ip("::1"), 50),
    ]
    .into();
    assert_eq!(additional, expected);

    // The targets answer address queries of their own.
    let target = within("lookup_ip", resolver.lookup_ip("b.app.consul."))
        .await
        .unwrap();
    assert_eq!(ips(target), ips([ip("127.0.0.3"), ip("::1")]));
    // An address name asked for SRV is NODATA.
    let error = failure(within("srv of an address", resolver.srv_lookup("a.app.consul.")).await);
    assert_eq!(negative(&error).response_code, ResponseCode::NoError);
}

#[tokio::test]
async fn servfail_is_a_response_code_error_and_is_retried() {
    let server = DnsServer::start().await;
    server.set("broken.internal", Answer::ServFail, 30);
    let resolver = resolver_of(&server, uncached());

    let error = failure(within("lookup_ip", resolver.lookup_ip("broken.internal.")).await);
    assert!(
        matches!(
            error,
            NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail))
        ),
        "{error:?}"
    );
    assert!(!error.is_no_records_found());
    // One try for each of A and AAAA.
    assert_eq!(server.queries("broken.internal"), 2);

    // `attempts` are retries after the first try.
    let mut opts = uncached();
    opts.attempts = 2;
    let retrying = resolver_of(&server, opts);
    let error = failure(within("ipv4_lookup", retrying.ipv4_lookup("broken.internal.")).await);
    assert!(matches!(
        error,
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail))
    ));
    assert_eq!(server.queries("broken.internal"), 2 + 3);
}

#[tokio::test]
async fn nxdomain_is_no_records_found_with_its_code() {
    let server = DnsServer::start().await;
    server.set("gone.internal", Answer::NxDomain, 60);
    let mut opts = uncached();
    opts.attempts = 2;
    let resolver = resolver_of(&server, opts);

    // A name never set.
    let error = failure(within("lookup_ip", resolver.lookup_ip("never.internal.")).await);
    assert!(error.is_nx_domain(), "{error:?}");
    assert!(error.is_no_records_found());
    let answer = negative(&error);
    assert_eq!(answer.response_code, ResponseCode::NXDomain);
    assert_eq!(answer.negative_ttl, Some(0));
    // A negative answer is not retried: one query for each of A and AAAA.
    assert_eq!(server.queries("never.internal"), 2);

    // A name set NXDOMAIN: its TTL is the negative TTL.
    let error = failure(within("srv_lookup", resolver.srv_lookup("gone.internal.")).await);
    assert!(error.is_nx_domain(), "{error:?}");
    assert_eq!(negative(&error).negative_ttl, Some(60));
    assert_eq!(server.queries("gone.internal"), 1);
}

#[tokio::test]
async fn silent_is_a_timeout() {
    let server = DnsServer::start().await;
    server.set("mute.internal", Answer::Silent, 30);
    let mut opts = uncached();
    opts.timeout = Duration::from_millis(200);
    let resolver = resolver_of(&server, opts);

    let start = Instant::now();
    let error = failure(within("ipv4_lookup", resolver.ipv4_lookup("mute.internal.")).await);
    assert!(matches!(error, NetError::Timeout), "{error:?}");
    assert!(start.elapsed() >= Duration::from_millis(200));
    // The server was asked; it did not answer.
    assert!(server.queries("mute.internal") >= 1);
}

#[tokio::test]
async fn no_server_at_all_is_a_timeout_too() {
    // Nothing listens on this port: the port unreachable that comes back is not
    // reported to the resolver's socket, which waits for its timeout.
    let gone = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = gone.local_addr().unwrap();
    drop(gone);
    let mut name_server = NameServerConfig::udp(addr.ip());
    name_server.connections[0].port = addr.port();
    let mut opts = uncached();
    opts.timeout = Duration::from_millis(200);
    let resolver = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![name_server]),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .unwrap();

    let error = failure(within("ipv4_lookup", resolver.ipv4_lookup("app.internal.")).await);
    assert!(matches!(error, NetError::Timeout), "{error:?}");
}

#[tokio::test]
async fn a_truncated_answer_is_asked_again_over_tcp() {
    let server = DnsServer::start().await;
    // Far more than 512 bytes of SRV records.
    let records: Vec<_> = (0..40)
        .map(|i| {
            SrvRecord::new(
                10,
                1,
                8000 + i,
                &format!("backend-{i}.a-rather-long-name.internal"),
            )
        })
        .collect();
    server.set("_http._tcp.big.internal", Answer::Srv(records), 30);
    let mut opts = uncached();
    // No EDNS: the client takes 512 bytes over UDP.
    opts.edns0 = false;
    let resolver = resolver_of(&server, opts);

    let lookup = within(
        "srv_lookup",
        resolver.srv_lookup("_http._tcp.big.internal."),
    )
    .await
    .unwrap();
    assert_eq!(lookup.answers().len(), 40);
    // Once over UDP (truncated), once over TCP.
    assert_eq!(server.queries("_http._tcp.big.internal"), 2);
}

#[tokio::test]
async fn malformed_packets_are_ignored() {
    let server = DnsServer::start().await;
    server.set("app.internal", Answer::Addresses(vec![ip("127.0.0.2")]), 30);

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for packet in [&b""[..], b"\x12", b"\x12\x34\x01\x00\x00\x01", &[0xff; 64]] {
        socket.send_to(packet, server.addr()).await.unwrap();
    }
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"\x00\x03abc")
        .await
        .unwrap();

    // Still answering, over UDP and over TCP.
    let resolver = resolver_of(&server, uncached());
    let lookup = within("lookup_ip", resolver.lookup_ip("app.internal."))
        .await
        .unwrap();
    assert_eq!(ips(lookup), ips([ip("127.0.0.2")]));
    let mut opts = uncached();
    opts.edns0 = false;
    let mut tcp_only = NameServerConfig::tcp(server.addr().ip());
    tcp_only.connections[0].port = server.addr().port();
    let tcp = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![tcp_only]),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .unwrap();
    let lookup = within("lookup_ip over TCP", tcp.lookup_ip("app.internal."))
        .await
        .unwrap();
    assert_eq!(ips(lookup), ips([ip("127.0.0.2")]));
}

#[tokio::test]
async fn wait_queries_wakes_on_the_query() {
    let server = DnsServer::start().await;
    server.set("app.internal", Answer::Addresses(vec![ip("127.0.0.2")]), 30);
    let resolver = resolver_of(&server, uncached());

    let lookup = tokio::spawn(async move { resolver.ipv4_lookup("app.internal.").await });
    assert_eq!(server.wait_queries("app.internal", 0).await, 1);
    within("the lookup", lookup).await.unwrap().unwrap();
}
