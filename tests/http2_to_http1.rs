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
