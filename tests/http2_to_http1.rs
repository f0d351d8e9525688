//! What an HTTP/2 client's request becomes on its way to an HTTP/1.1 backend.

mod support;

use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;

use support::*;

/// RFC 9113 §8.2.3: an HTTP/2 client may split its cookies over several `cookie`
/// fields; HTTP/1.1 allows one `Cookie` line, so they arrive joined with "; ".
#[tokio::test]
async fn http2_cookie_fields_reach_an_http1_backend_as_one_line() {
    let backend = spawn_backend(|_request| async move { text(200, "ok") }).await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let (mut sender, _connection) = h2c_connect(lb.addr).await;
    let request = Request::get("http://app.test/")
        .header("cookie", "session=abc")
        .header("cookie", "theme=dark; lang=en")
        .header("cookie", "last=1")
        .body(empty())
        .unwrap();
    let status = within("h2 request", async {
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        response.into_body().collect().await.unwrap();
        status
    })
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = backend.last_request();
    assert_eq!(seen.version, Version::HTTP_11);
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["session=abc; theme=dark; lang=en; last=1"]);
}

/// An HTTP/1.1 backend's head reaches an HTTP/2 client as fields: every
/// end-to-end one, none that was hop-by-hop (nor one its `Connection` named),
/// and weir's own after them.
#[tokio::test]
async fn an_http1_backends_fields_reach_an_http2_client_without_the_hop_by_hop_ones() {
    let backend = spawn_backend(|_request| async move {
        http::Response::builder()
            .status(203)
            .header("connection", "keep-alive, x-backend-hop")
            .header("x-backend-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .header("x-backend-kept", "yes")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .body(full("ok"))
            .unwrap()
    })
    .await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let (mut sender, _connection) = h2c_connect(lb.addr).await;
    let request = Request::get("http://app.test/").body(empty()).unwrap();
    let (status, headers, body) = within("h2 request", async {
        let response = sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    })
    .await;
    assert_eq!(status, StatusCode::NON_AUTHORITATIVE_INFORMATION);
    assert_eq!(body, "ok");
    assert_eq!(headers["x-backend-kept"], "yes");
    let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    for hop in [
        "connection",
        "x-backend-hop",
        "keep-alive",
        "proxy-connection",
    ] {
        assert!(
            !headers.contains_key(hop),
            "{hop} reached the client: {headers:?}"
        );
    }
}
