//! Requests are routed, and forwarded, on their normalised path: a path that means
//! another one to the backend (`/api/../admin`, `/%61pi`) cannot slip past the
//! route that path belongs to.

mod support;

use http::{Request, StatusCode};
use http_body_util::BodyExt;

use support::*;

/// `/api` → one backend, `/admin` → another, anything else → a third.
struct Site {
    api: Backend,
    admin: Backend,
    other: Backend,
    lb: Lb,
}

async fn site() -> Site {
    let api = spawn_named_backend("api").await;
    let admin = spawn_named_backend("admin").await;
    let other = spawn_named_backend("other").await;
    let lb = start_lb(
        r#"
[[routes]]
path_prefix = "/api"
upstream = "api"

[[routes]]
path_prefix = "/admin"
upstream = "admin"

[[routes]]
upstream = "other"

[upstreams.api]
backends = [{ address = "{api}" }]

[upstreams.admin]
backends = [{ address = "{admin}" }]

[upstreams.other]
backends = [{ address = "{other}" }]
"#,
        &[
            ("api", api.addr),
            ("admin", admin.addr),
            ("other", other.addr),
        ],
    )
    .await;
    Site {
        api,
        admin,
        other,
        lb,
    }
}

/// Sends `target` exactly as written (no client library in between to tidy it)
/// and returns the status.
async fn raw_get(lb: &Lb, target: &str) -> u16 {
    let mut connection = RawConn::connect(lb.addr).await;
    connection
        .send(format!("GET {target} HTTP/1.1\r\nHost: site.test\r\n\r\n").as_bytes())
        .await;
    connection.read_response().await.expect("a response").status
}

#[tokio::test]
async fn dot_segments_are_removed_before_routing_and_forwarding() {
    let site = site().await;
    assert_eq!(raw_get(&site.lb, "/api/../admin").await, 200);
    assert_eq!(site.admin.paths(), ["/admin"]);
    assert_eq!(site.api.request_count(), 0);

    assert_eq!(raw_get(&site.lb, "/admin/./x/../y?q=/../a%2e").await, 200);
    let seen = site.admin.last_request();
    assert_eq!(seen.uri.path(), "/admin/y");
    assert_eq!(
        seen.uri.query(),
        Some("q=/../a%2e"),
        "the query is untouched"
    );
}

#[tokio::test]
async fn encoded_unreserved_characters_are_decoded_before_routing_and_forwarding() {
    let site = site().await;
    assert_eq!(raw_get(&site.lb, "/%61pi/x").await, 200);
    assert_eq!(site.api.paths(), ["/api/x"]);

    // `%2E%2E` is `..`; `%2F` is not `/` and stays encoded (lower-case hex digits
    // are put in capitals)
    assert_eq!(raw_get(&site.lb, "/api/%2E%2e/admin/%2fz%20").await, 200);
    assert_eq!(site.admin.paths(), ["/admin/%2Fz%20"]);
    assert_eq!(site.other.request_count(), 0);
}

#[tokio::test]
async fn empty_segments_are_kept() {
    let site = site().await;
    assert_eq!(raw_get(&site.lb, "//api").await, 200);
    assert_eq!(site.other.paths(), ["//api"]);
    assert_eq!(raw_get(&site.lb, "/api//x").await, 200);
    assert_eq!(site.api.paths(), ["/api//x"]);
}

#[tokio::test]
async fn a_path_that_climbs_above_the_root_or_holds_a_bare_percent_is_refused() {
    let site = site().await;
    for target in [
        "/..",
        "/../api",
        "/api/../../admin",
        "/%2e%2e/x",
        "/100%",
        // decoded around the bare `%`s, this would become `/api/%2e%2e/admin`
        "/api/%%32%65%%32%65/admin",
    ] {
        assert_eq!(raw_get(&site.lb, target).await, 400, "{target}");
    }
    let received =
        site.api.request_count() + site.admin.request_count() + site.other.request_count();
    assert_eq!(received, 0);
}

#[tokio::test]
async fn an_http2_request_is_normalised_too() {
    let site = site().await;
    let (mut sender, _connection) = h2c_connect(site.lb.addr).await;
    let request = Request::get("http://site.test/api/x/../../%61dmin?a=..")
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
    let seen = site.admin.last_request();
    assert_eq!(seen.uri.path(), "/admin");
    assert_eq!(seen.uri.query(), Some("a=.."));
    assert_eq!(seen.headers["host"], "site.test");
}
