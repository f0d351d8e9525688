//! A small authoritative name server on loopback whose records the test sets while
//! weir runs: A/AAAA and SRV answers with a chosen TTL, SERVFAIL, NXDOMAIN, or no
//! answer at all. It answers over UDP, and over TCP on the same port, where a
//! resolver asks again when the UDP answer came back truncated (longer than 512
//! bytes, or than the size the query's EDNS allows).
//!
//! The server is authoritative for every name: its one zone is the root, so the
//! negative answers (NXDOMAIN, and NODATA for a name without records of the asked
//! type) carry the root's SOA, whose TTL is the name's TTL (0 for a name never
//! set). Every query is counted per name, so a test can wait for a re-resolution.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{
    DEFAULT_MAX_PAYLOAD_LEN, Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::{SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use super::within;

/// What a name answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A queries get the IPv4 ones, AAAA queries the IPv6 ones; a family with none
    /// is an empty NOERROR answer (NODATA).
    Addresses(Vec<IpAddr>),
    /// SRV queries get these; a target that is itself set with `Addresses` has its
    /// A and AAAA records in the additional section.
    Srv(Vec<SrvRecord>),
    /// SERVFAIL to every query.
    ServFail,
    /// NXDOMAIN to every query, as for a name never set.
    NxDomain,
    /// No answer at all: the client times out.
    Silent,
}

/// One SRV record.
#[derive(Debug, Clone)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

impl SrvRecord {
    pub fn new(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.to_owned(),
        }
    }
}

/// The name server; it stops answering when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    zone: Mutex<Zone>,
    /// Bumped after every query counted, for [`DnsServer::wait_queries`].
    queried: watch::Sender<u64>,
    /// The tasks serving TCP connections, aborted with the server.
    connections: Mutex<Vec<AbortHandle>>,
}

#[derive(Default)]
struct Zone {
    /// By [`key`]: the answer and its TTL.
    names: HashMap<String, (Answer, u32)>,
    /// By [`key`]: queries received, of any type.
    queries: HashMap<String, usize>,
}

/// Names are compared case-insensitively, with or without the trailing dot.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The largest UDP answer sent to a client that did not say (RFC 1035).
const PLAIN_UDP_LIMIT: usize = 512;

impl DnsServer {
    /// Starts a server on `127.0.0.1`, UDP and TCP on the same port; no name is set.
    pub async fn start() -> DnsServer {
        for _ in 0..16 {
            let udp = UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind a UDP socket on loopback");
            let addr = udp.local_addr().unwrap();
            // The UDP port's number may be taken for TCP: then try another.
            if let Ok(tcp) = TcpListener::bind(addr).await {
                return DnsServer::serve(udp, tcp);
            }
        }
        panic!("no loopback port was free for both UDP and TCP");
    }

    fn serve(udp: UdpSocket, tcp: TcpListener) -> DnsServer {
        let addr = udp.local_addr().unwrap();
        let shared = Arc::new(Shared {
            zone: Mutex::new(Zone::default()),
            queried: watch::channel(0).0,
            connections: Mutex::new(Vec::new()),
        });
        let udp_task = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; u16::MAX as usize];
                loop {
                    let Ok((len, peer)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    if let Some(reply) = shared.reply(&buf[..len], Transport::Udp) {
                        let _ = udp.send_to(&reply, peer).await;
                    }
                }
            })
        };
        let tcp_task = {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = tcp.accept().await else {
                        continue;
                    };
                    let task = tokio::spawn(serve_tcp(stream, shared.clone()));
                    let mut connections = shared.connections.lock().unwrap();
                    connections.retain(|task| !task.is_finished());
                    connections.push(task.abort_handle());
                }
            })
        };
        DnsServer {
            addr,
            shared,
            tasks: vec![udp_task, tcp_task],
        }
    }

    /// The address to query, UDP or TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `name` answers from now on, with this TTL (seconds) on each record, and
    /// on the SOA of a negative answer.
    pub fn set(&self, name: &str, answer: Answer, ttl: u32) {
        if let Answer::Srv(records) = &answer {
            // A bad target fails the test here rather than the server's task later.
            for record in records {
                fqdn(&record.target);
            }
        }
        let mut zone = self.shared.zone.lock().unwrap();
        zone.names.insert(key(name), (answer, ttl));
    }

    /// Queries received for `name` so far (any type, UDP or TCP, answered or not).
    pub fn queries(&self, name: &str) -> usize {
        self.shared.queries(name)
    }

    /// Waits until `name` has received more than `more_than` queries, and returns
    /// how many it has; fails the test if that takes longer than the support bound.
    pub async fn wait_queries(&self, name: &str, more_than: usize) -> usize {
        // Subscribed before the first look: a query counted after it wakes us.
        let mut queried = self.shared.queried.subscribe();
        let what = format!("more than {more_than} DNS queries for {name}");
        within(&what, async {
            loop {
                let count = self.shared.queries(name);
                if count > more_than {
                    return count;
                }
                queried
                    .changed()
                    .await
                    .expect("the name server is still running");
            }
        })
        .await
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.shared.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// Serves DNS over one TCP connection: each message is prefixed with its length as
/// two bytes (RFC 1035 4.2.2), and a client may send several on one connection.
async fn serve_tcp(mut stream: TcpStream, shared: Arc<Shared>) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut request = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut request).await.is_err() {
            return;
        }
        let Some(reply) = shared.reply(&request, Transport::Tcp) else {
            continue;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            continue;
        };
        let mut framed = Vec::with_capacity(2 + reply.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

impl Shared {
    fn queries(&self, name: &str) -> usize {
        let zone = self.zone.lock().unwrap();
        zone.queries.get(&key(name)).copied().unwrap_or(0)
    }

    /// The encoded reply to one request, or `None` for no reply: a packet that is
    /// not a DNS query, or a name set `Silent`.
    fn reply(&self, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let request = Message::from_vec(request).ok()?;
        if request.metadata.message_type != MessageType::Query {
            return None;
        }

        // The id, opcode, RD and CD of the query; AA set, RA not: this server does
        // not recurse.
        let mut response = Message::response(request.id, request.op_code);
        response.metadata = Metadata::response_from_request(&request.metadata);
        response.metadata.authoritative = true;
        response.add_queries(request.queries.iter().cloned());
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(DEFAULT_MAX_PAYLOAD_LEN);
            response.set_edns(edns);
        }

        match (request.op_code, request.queries.as_slice()) {
            (OpCode::Query, [query]) => {
                let answered = self.answer(query, &mut response);
                self.queried.send_modify(|count| *count += 1);
                if !answered {
                    return None;
                }
            }
            (OpCode::Query, _) => response.metadata.response_code = ResponseCode::FormErr,
            _ => response.metadata.response_code = ResponseCode::NotImp,
        }

        let encoded = response.to_vec().ok()?;
        let limit = match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp if request.edns.is_some() => usize::from(request.max_payload()),
            Transport::Udp => PLAIN_UDP_LIMIT,
        };
        if encoded.len() <= limit {
            return Some(encoded);
        }
        // Too long for this client over UDP: the question alone, with TC set, tells
        // it to ask again over TCP.
        response.truncate().to_vec().ok()
    }

    /// Counts the query and fills in `response`'s records and code; `false` if the
    /// name is set `Silent`.
    fn answer(&self, query: &Query, response: &mut Message) -> bool {
        let mut zone = self.zone.lock().unwrap();
        let name = key(&query.name().to_ascii());
        *zone.queries.entry(name.clone()).or_default() += 1;

        // Owner names are the query's own, in the case the client sent.
        let owner = query.name().clone();
        let Some((answer, ttl)) = zone.names.get(&name) else {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(soa(0));
            return true;
        };
        let ttl = *ttl;
        match (answer, query.query_type()) {
            (Answer::Silent, _) => return false,
            (Answer::ServFail, _) => response.metadata.response_code = ResponseCode::ServFail,
            (Answer::NxDomain, _) => {
                response.metadata.response_code = ResponseCode::NXDomain;
                response.add_authority(soa(ttl));
            }
            (Answer::Addresses(ips), kind @ (RecordType::A | RecordType::AAAA)) => {
                response.add_answers(address_records(&owner, ips, kind, ttl));
            }
            (Answer::Srv(records), RecordType::SRV) => {
                for srv in records {
                    let target = fqdn(&srv.target);
                    let data = SRV::new(srv.priority, srv.weight, srv.port, target.clone());
                    response.add_answer(Record::from_rdata(owner.clone(), ttl, RData::SRV(data)));
                    if let Some((Answer::Addresses(ips), target_ttl)) =
                        zone.names.get(&key(&srv.target))
                    {
                        for kind in [RecordType::A, RecordType::AAAA] {
                            let glue = address_records(&target, ips, kind, *target_ttl);
                            response.add_additionals(glue);
                        }
                    }
                }
            }
            _ => {}
        }
        // The name exists but has no records of the asked type: NODATA.
        if response.metadata.response_code == ResponseCode::NoError && response.answers.is_empty() {
            response.add_authority(soa(ttl));
        }
        true
    }
}

/// The A (`kind` A) or AAAA records of `ips` for `owner`.
fn address_records(owner: &Name, ips: &[IpAddr], kind: RecordType, ttl: u32) -> Vec<Record> {
    ips.iter()
        .filter(|ip| match kind {
            RecordType::A => ip.is_ipv4(),
            _ => ip.is_ipv6(),
        })
        .map(|ip| Record::from_rdata(owner.clone(), ttl, RData::from(*ip)))
        .collect()
}

/// The root zone's SOA, whose TTL and minimum make the negative TTL of an answer.
fn soa(ttl: u32) -> Record {
    let data = SOA::new(
        fqdn("ns.weir.test"),
        fqdn("hostmaster.weir.test"),
        1,
        3600,
        600,
        86400,
        ttl,
    );
    Record::from_rdata(Name::root(), ttl, RData::SOA(data))
}

fn fqdn(name: &str) -> Name {
    let mut name = Name::from_ascii(name).unwrap_or_else(|err| panic!("bad name {name:?}: {err}"));
    name.set_fqdn(true);
    name
}
