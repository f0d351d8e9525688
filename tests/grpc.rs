//! gRPC end to end: a tonic client talks h2c to weir, weir talks h2c to a tonic
//! server. Unary and server-streaming calls, a status from the server carried in
//! trailers, and the statuses weir gives when it answers itself.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{Stream, StreamExt};
use http::uri::PathAndQuery;
use support::*;
use tokio::net::TcpListener;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct Say {
    #[prost(string, tag = "1")]
    text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Count {
    #[prost(uint32, tag = "1")]
    n: u32,
}

const SAY: &str = "/weir.test.Echo/Say";
const COUNT: &str = "/weir.test.Echo/Count";
const FAIL: &str = "/weir.test.Echo/Fail";

/// The test service, routed by hand as tonic's generated code would.
#[derive(Clone, Default)]
struct Echo {
    calls: Arc<AtomicUsize>,
}

impl NamedService for Echo {
    const NAME: &'static str = "weir.test.Echo";
}

impl Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let response = match request.uri().path() {
                SAY => {
                    Grpc::new(ProstCodec::default())
                        .unary(SayBack, request)
                        .await
                }
                COUNT => {
                    Grpc::new(ProstCodec::default())
                        .server_streaming(CountUp, request)
                        .await
                }
                FAIL => Grpc::new(ProstCodec::default()).unary(Fail, request).await,
                _ => Status::unimplemented("no such method").into_http(),
            };
            Ok(response)
        })
    }
}

struct SayBack;

impl UnaryService<Say> for SayBack {
    type Response = Say;
    type Future = BoxFuture<tonic::Response<Say>, Status>;

    fn call(&mut self, request: tonic::Request<Say>) -> Self::Future {
        let text = format!("echo: {}", request.into_inner().text);
        Box::pin(async move { Ok(tonic::Response::new(Say { text })) })
    }
}

struct Fail;

impl UnaryService<Say> for Fail {
    type Response = Say;
    type Future = BoxFuture<tonic::Response<Say>, Status>;

    fn call(&mut self, _request: tonic::Request<Say>) -> Self::Future {
        Box::pin(async move { Err(Status::not_found("no such thing")) })
    }
}

struct CountUp;

type CountStream = Pin<Box<dyn Stream<Item = Result<Count, Status>> + Send>>;

impl ServerStreamingService<Count> for CountUp {
    type Response = Count;
    type ResponseStream = CountStream;
    type Future = BoxFuture<tonic::Response<CountStream>, Status>;

    fn call(&mut self, request: tonic::Request<Count>) -> Self::Future {
        let up_to = request.into_inner().n;
        Box::pin(async move {
            let stream: CountStream = Box::pin(futures_util::stream::iter(
                (1..=up_to).map(|n| Ok(Count { n })),
            ));
            Ok(tonic::Response::new(stream))
        })
    }
}

/// A tonic server for [`Echo`] on `127.0.0.1:0`.
async fn spawn_grpc_backend(echo: Echo) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    });
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(echo)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (address, server)
}

async fn grpc_client(lb: SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{lb}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

async fn say(
    client: &mut tonic::client::Grpc<tonic::transport::Channel>,
    path: &'static str,
    text: &str,
) -> Result<String, Status> {
    client.ready().await.unwrap();
    let request = tonic::Request::new(Say { text: text.into() });
    let response = client
        .unary::<Say, Say, _>(
            request,
            PathAndQuery::from_static(path),
            ProstCodec::default(),
        )
        .await?;
    Ok(response.into_inner().text)
}

#[tokio::test]
async fn unary_and_server_streaming_calls_go_through_weir() {
    let echo = Echo::default();
    let (backend, _server) = spawn_grpc_backend(echo.clone()).await;
    let lb = start_lb(
        &one_upstream(&["grpc"], "protocol = \"h2c\""),
        &[("grpc", backend)],
    )
    .await;
    let mut client = within("the client to connect", grpc_client(lb.addr)).await;

    for i in 0..10 {
        let reply = within("a unary call", say(&mut client, SAY, &format!("hi {i}"))).await;
        assert_eq!(reply.unwrap(), format!("echo: hi {i}"));
    }

    within("the client to be ready", client.ready())
        .await
        .unwrap();
    let stream = within(
        "a server-streaming call",
        client.server_streaming::<Count, Count, _>(
            tonic::Request::new(Count { n: 500 }),
            PathAndQuery::from_static(COUNT),
            ProstCodec::default(),
        ),
    )
    .await
    .unwrap()
    .into_inner();
    let counted: Vec<u32> =
        within("the whole stream", stream.map(|m| m.unwrap().n).collect()).await;
    assert_eq!(counted, (1..=500).collect::<Vec<_>>());
    assert_eq!(echo.calls.load(Ordering::SeqCst), 11);
}

#[tokio::test]
async fn a_status_from_the_server_reaches_the_client() {
    let (backend, _server) = spawn_grpc_backend(Echo::default()).await;
    let lb = start_lb(
        &one_upstream(&["grpc"], "protocol = \"h2c\""),
        &[("grpc", backend)],
    )
    .await;
    let mut client = within("the client to connect", grpc_client(lb.addr)).await;
    let status = within("a failing call", say(&mut client, FAIL, "x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no such thing");
}

#[tokio::test]
async fn weir_answers_grpc_clients_with_grpc_statuses() {
    let down = refused_addr().await;
    let text = format!(
        "[[routes]]\npath_prefix = \"/weir.test.Echo\"\nupstream = \"grpc\"\n\n\
         [upstreams.grpc]\nprotocol = \"h2c\"\nbackends = [{{ address = \"{down}\" }}]\n"
    );
    let lb = start_lb(&text, &[]).await;
    let mut client = within("the client to connect", grpc_client(lb.addr)).await;

    // The backend refuses connections: weir answers UNAVAILABLE.
    let status = within("a call to a dead backend", say(&mut client, SAY, "x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // No route for another service: UNIMPLEMENTED.
    let status = within(
        "a call with no route",
        say(&mut client, "/other.Service/Say", "x"),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // Metrics count what the answers stand for, not the 200 they are sent with.
    let metrics = lb.running.control().metrics().encode();
    for (code, route, upstream) in [("502", "route-0", "grpc"), ("404", "", "")] {
        let series = format!(
            "weir_requests_total{{code=\"{code}\",listener=\"listener-0\",route=\"{route}\",upstream=\"{upstream}\"}} 1"
        );
        assert!(
            metrics.lines().any(|line| line == series),
            "{series} in\n{metrics}"
        );
    }
}
