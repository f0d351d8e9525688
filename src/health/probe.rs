//! One health check: `GET path` on a fresh backend connection, closed after.

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;

use crate::config::UpstreamTimeouts;
use crate::upstream::exchange::{self, SendFailure};
use crate::upstream::pool::{self, Transport};
use crate::upstream::{RequestBody, UpstreamError};

/// Probes `address` (found by `dns_name`, if by a name) the way `transport` says (TLS, HTTP/2, a PROXY `preamble`),
/// the whole exchange within `timeout`. Returns the response status.
pub(super) async fn probe(
    address: SocketAddr,
    dns_name: Option<&str>,
    transport: &Transport,
    path: &str,
    host: &str,
    timeout: Duration,
    preamble: Option<&[u8]>,
) -> Result<http::StatusCode, UpstreamError> {
    let mut request = Request::get(path)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "weir-health-check")
        .body(RequestBody::Empty)
        .map_err(|_| UpstreamError::ClosedBeforeSend)?;
    if transport.protocol.is_http2() {
        request = exchange::into_http2(request, transport.scheme(), address);
    } else {
        request.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let exchange = async {
        let connection = pool::connect(address, dns_name, transport, timeout, preamble).await?;
        match exchange::send_on(connection, request, None, &probe_timeouts(timeout)).await {
            Ok(response) => Ok(response.status()),
            Err(SendFailure::NotSent(_)) => Err(UpstreamError::ClosedBeforeSend),
            Err(SendFailure::Failed(err)) => Err(err),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(UpstreamError::ResponseTimeout(timeout)))
}

fn probe_timeouts(timeout: Duration) -> UpstreamTimeouts {
    UpstreamTimeouts {
        connect: timeout,
        response: timeout,
        idle: Duration::ZERO,
        request: None,
    }
}
