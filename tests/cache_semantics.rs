//! The response cache over real sockets, one behaviour per test (RFC 9111 as a
//! shared cache): what is stored and what is not, variants, revalidation, what an
//! unsafe request invalidates, HEAD and ranges answered from a stored GET,
//! `only-if-cached`, `stale-if-error` and `stale-while-revalidate`, and the
//! `Cache-Status` and `Age` fields that say what the cache did.
//!
//! Where time is the input (a response going stale), the stored response is
//! either sent already aged (an `Age` field past its `max-age`) or polled, at
//! most [`BOUND`], with `only-if-cached` requests until weir says it is stale.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{Notify, mpsc};

use support::*;

type HttpClient = Client<HttpConnector, Body>;

/// weir with one route, named `site`, whose `cache` key is `cache`, in front of
/// `backend`.
async fn start_cached(cache: &str, backend: &Backend) -> Lb {
    let text = format!(
        "[[routes]]\nname = \"site\"\nupstream = \"app\"\ncache = {cache}\n\n\
         [upstreams.app]\nbackends = [{{ address = \"{{app}}\" }}]\n"
    );
    start_lb(&text, &[("app", backend.addr)]).await
}

/// A response with `status`, `headers` and `body`.
fn answer(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response.body(full(body)).unwrap()
}

/// `method url` with `headers` and no body, read whole.
async fn request(client: &HttpClient, method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(client, request.body(empty()).unwrap()).await
}

async fn get_with(client: &HttpClient, url: &str, headers: &[(&str, &str)]) -> Reply {
    request(client, "GET", url, headers).await
}

/// weir's `Cache-Status` entry, or "" when the field is absent.
fn cache_status(reply: &Reply) -> &str {
    reply.header("cache-status").unwrap_or("")
}

/// Requests the backend received for `path`.
fn received(backend: &Backend, path: &str) -> usize {
    backend.paths().iter().filter(|p| *p == path).count()
}

/// Waits until the response stored for `url` is stale: a request that takes
/// only a stored answer is then refused with 504 (while fresh, it gets a 200).
/// Reaches no backend.
async fn until_stale(client: &HttpClient, url: &str) {
    within("the stored response to go stale", async {
        loop {
            let reply = get_with(client, url, &[("cache-control", "only-if-cached")]).await;
            if reply.status == 504 {
                return;
            }
            assert_eq!(reply.status, 200, "only-if-cached while fresh");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

// === stored or not ===

#[tokio::test]
async fn a_miss_is_stored_then_answered_as_a_hit_with_its_age() {
    let backend =
        spawn_backend(|_| async { answer(200, &[("cache-control", "max-age=60")], "stored body") })
            .await;
    let lb = start_cached("true", &backend).await;
    let client = client();

    let first = get(&client, &lb.url("/page"), None).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "stored body");
    assert_eq!(cache_status(&first), "weir; fwd=miss; stored");

    let second = get(&client, &lb.url("/page"), None).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), "stored body");
    assert_eq!(cache_status(&second), "weir; hit");
    let age: u64 = second
        .header("age")
        .expect("a hit carries Age")
        .parse()
        .expect("Age is whole seconds");
    assert!(age < 60, "Age {age} of a response stored just now");

    assert_eq!(backend.request_count(), 1, "the hit reached the backend");
    assert_eq!(lb.cache_results("site", "miss"), 1.0);
    assert_eq!(lb.cache_results("site", "hit"), 1.0);
}

#[tokio::test]
async fn no_store_private_set_cookie_and_vary_star_are_not_stored() {
    let backend = spawn_backend(|request| async move {
        match request.uri().path() {
            "/no-store" => answer(200, &[("cache-control", "no-store")], "a"),
            "/private" => answer(200, &[("cache-control", "private, max-age=60")], "b"),
            "/vary-star" => answer(200, &[("cache-control", "max-age=60"), ("vary", "*")], "d"),
            _ => answer(
                200,
                &[("cache-control", "max-age=60"), ("set-cookie", "id=1")],
                "c",
            ),
        }
    })
    .await;
    let lb = start_cached("true", &backend).await;
    let client = client();
    for path in ["/no-store", "/private", "/cookie", "/vary-star"] {
        for round in 0..2 {
            let reply = get(&client, &lb.url(path), None).await;
            assert_eq!(reply.status, 200, "{path}");
            assert_eq!(
                cache_status(&reply),
                "weir; fwd=miss",
                "{path}, request {round}"
            );
        }
        assert_eq!(
            received(&backend, path),
            2,
            "{path} was answered by the cache"
        );
    }
    assert_eq!(lb.cache_results("site", "hit"), 0.0);
}

#[tokio::test]
async fn vary_keeps_one_variant_per_value() {
    let backend = spawn_backend(|request| async move {
        let language = request
            .headers()
            .get("accept-language")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        answer(
            200,
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            language,
        )
    })
    .await;
    let lb = start_cached("true", &backend).await;
    let client = client();
    let url = lb.url("/greeting");
    for (language, status) in [
        ("en", "weir; fwd=miss; stored"),
        ("de", "weir; fwd=miss; stored"),
        ("en", "weir; hit"),
        ("de", "weir; hit"),
    ] {
        let reply = get_with(&client, &url, &[("accept-language", language)]).await;
        assert_eq!(reply.text(), language);
        assert_eq!(cache_status(&reply), status, "Accept-Language: {language}");
    }
    assert_eq!(backend.request_count(), 2);
}

#[tokio::test]
async fn authorization_is_stored_only_when_the_response_allows_it() {
    let backend = spawn_backend(|request| async move {
        let cache_control = match request.uri().path() {
            "/public" => "public, max-age=60",
            "/shared" => "s-maxage=60",
            "/must-revalidate" => "must-revalidate, max-age=60",
            _ => "max-age=60",
        };
        answer(200, &[("cache-control", cache_control)], "for you")
    })
    .await;
    let lb = start_cached("true", &backend).await;
    let client = client();
    for (path, expected) in [
        ("/plain", 2),
        ("/public", 1),
        ("/shared", 1),
        ("/must-revalidate", 1),
    ] {
        for _ in 0..2 {
            let reply = get_with(
                &client,
                &lb.url(path),
                &[("authorization", "Bearer secret")],
            )
            .await;
            assert_eq!(reply.status, 200);
        }
        assert_eq!(received(&backend, path), expected, "{path}");
    }
}

// === revalidation ===

#[tokio::test]
async fn a_stale_response_is_revalidated_and_updated_by_a_304() {
    let backend = spawn_backend(|request| async move {
        let validated = request
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"");
        if validated {
            answer(
                304,
                &[
                    ("cache-control", "max-age=60"),
                    ("etag", "\"v1\""),
                    ("x-version", "2"),
                ],
                "",
            )
        } else {
            answer(
                200,
                &[
                    ("cache-control", "max-age=1"),
                    ("etag", "\"v1\""),
                    ("x-version", "1"),
                ],
                "the body",
            )
        }
    })
    .await;
    let lb = start_cached("true", &backend).await;
    let client = client();
    let url = lb.url("/doc");

    let first = get(&client, &url, None).await;
    assert_eq!(cache_status(&first), "weir; fwd=miss; stored");
    assert!(
        backend
            .last_request()
            .headers
            .get("if-none-match")
            .is_none()
    );
    until_stale(&client, &url).await;

    let revalidated = get(&client, &url, None).await;
    let seen = backend.last_request();
    assert_eq!(
        seen.headers
            .get("if-none-match")
            .map(|v| v.to_str().unwrap()),
        Some("\"v1\""),
        "the revalidation carries the stored ETag"
    );
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.text(), "the body");
    assert_eq!(revalidated.header("x-version"), Some("2"));
    assert_eq!(
        cache_status(&revalidated),
        "weir; fwd=stale; fwd-status=304"
    );
    assert_eq!(lb.cache_results("site", "revalidated"), 1.0);

    // Fresh again for 60 s, with the 304's fields.
    let hit = get(&client, &url, None).await;
    assert_eq!(cache_status(&hit), "weir; hit");
    assert_eq!(hit.text(), "the body");
    assert_eq!(hit.header("x-version"), Some("2"));
    assert_eq!(backend.request_count(), 2);
}

#[tokio::test]
async fn a_conditional_request_is_answered_304_from_the_store() {
    let modified =
        httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(3600));
    let backend = {
        let modified = modified.clone();
        spawn_backend(move |_| {
            let modified = modified.clone();
            async move {
                answer(
                    200,
                    &[
                        ("cache-control", "max-age=60"),
                        ("etag", "W/\"e1\""),
                        ("last-modified", &modified),
                    ],
                    "content",
                )
            }
        })
        .await
    };
    let lb = start_cached("true", &backend).await;
    let client = client();
    let url = lb.url("/cond");
    get(&client, &url, None).await;

    for condition in [
        ("if-none-match", "\"e1\""),
        ("if-none-match", "\"zz\", W/\"e1\""),
        ("if-none-match", "*"),
        ("if-modified-since", modified.as_str()),
    ] {
        let reply = get_with(&client, &url, &[condition]).await;
        assert_eq!(reply.status, 304, "{condition:?}");
        assert!(reply.body.is_empty());
        assert_eq!(reply.header("etag"), Some("W/\"e1\""), "{condition:?}");
    }
    let changed = get_with(&client, &url, &[("if-none-match", "\"e0\"")]).await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.text(), "content");
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn default_ttl_makes_responses_without_freshness_cacheable() {
    let backend = spawn_backend(|request| async move {
        match request.uri().path() {
            "/created" => answer(201, &[], "new"),
            "/explicit" => answer(200, &[("cache-control", "max-age=0")], "zero"),
            _ => answer(200, &[], "plain"),
        }
    })
    .await;
    let with_ttl = start_cached(r#"{ default_ttl = "60s" }"#, &backend).await;
    let without = start_cached("true", &backend).await;
    let client = client();
    for (lb, path, stored) in [
        (&with_ttl, "/plain", true),
        (&with_ttl, "/created", false),
        (&with_ttl, "/explicit", false),
        (&without, "/plain", false),
    ] {
        let before = received(&backend, path);
        get(&client, &lb.url(path), None).await;
        let second = get(&client, &lb.url(path), None).await;
        let expected = if stored { 1 } else { 2 };
        assert_eq!(
            received(&backend, path) - before,
            expected,
            "{path}: {}",
            cache_status(&second)
        );
    }
}

// === invalidation ===

#[tokio::test]
async fn a_successful_unsafe_request_invalidates_the_stored_get() {
    let backend = spawn_backend(|request| async move {
        let fails = request.headers().contains_key("x-fail");
        match (request.method().as_str(), request.uri().path()) {
            ("GET", _) => answer(200, &[("cache-control", "max-age=60")], "document"),
            (_, _) if fails => answer(500, &[], "no"),
            (_, "/elsewhere") => answer(200, &[("content-location", "/doc")], "moved"),
            _ => answer(200, &[], "done"),
        }
    })
    .await;
    let lb = start_cached("true", &backend).await;
    let client = client();
    let url = lb.url("/doc");
    let gets = |backend: &Backend| {
        backend
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "GET")
            .count()
    };

    get(&client, &url, None).await;
    assert_eq!(cache_status(&get(&client, &url, None).await), "weir; hit");
    let post = request(&client, "POST", &url, &[]).await;
    assert_eq!(post.status, 200);
    let after = get(&client, &url, None).await;
    assert_eq!(
        cache_status(&after),
        "weir; fwd=miss; stored",
        "the POST left the GET stored"
    );
    assert_eq!(gets(&backend), 2);

    // A failed unsafe request changes nothing.
    let failed = request(&client, "DELETE", &url, &[("x-fail", "1")]).await;
    assert_eq!(failed.status, 500);
    assert_eq!(cache_status(&get(&client, &url, None).await), "weir; hit");

    // One whose Content-Location names the URL invalidates it too.
    let elsewhere = request(&client, "POST", &lb.url("/elsewhere"), &[]).await;
    assert_eq!(elsewhere.status, 200);
    let after = get(&client, &url, None).await;
    assert_eq!(
        cache_status(&after),
        "weir; fwd=miss; stored",
        "Content-Location: /doc left it stored"
    );
    assert_eq!(gets(&backend), 3);
}

// === answered from a stored GET ===

#[tokio::test]
async fn head_is_answered_from_a_stored_get() {
    let body = "x".repeat(1234);
    let backend = {
        let body = body.clone();
        spawn_backend(move |_| {
            let body = body.clone();
            async move { answer(200, &[("cache-control", "max-age=60")], body) }
        })
        .await
    };
    let lb = start_cached("true", &backend).await;
    let client = client();
    let url = lb.url("/file");
    let stored = get(&client, &url, None).await;
    assert_eq!(stored.body.len(), 1234);

    let head = request(&client, "HEAD", &url, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(cache_status(&head), "weir; hit");
    assert_eq!(head.header("content-length"), Some("1234"));
    assert!(head.body.is_empty());
    assert_eq!(backend.request_count(), 1, "the HEAD reached the backend");

    // Byte for byte: a HEAD answer has no body on the wire.
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"HEAD /file HTTP/1.1\r\nHost: x\r\n\r\nGET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let raw = within("a HEAD then a GET on one connection", async {
        let mut raw = Vec::new();
        while raw.len() < 1234 || !raw.ends_with(body.as_bytes()) {
            let more = conn.read_some().await;
            assert!(!more.is_empty(), "closed after {raw:?}");
            raw.extend(more);
        }
        raw
    })
    .await;
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert_eq!(text.matches(body.as_str()).count(), 1, "{text}");
}

#[tokio::test]
async fn head_of_a_stored_chunked_get_does_not_claim_an_empty_body() {
    let backend = spawn_backend(|_| async {
        let (tx, rx) = mpsc::channel::<Bytes>(2);
        tokio::spawn(async move {
            for part in ["streamed ", "in ", "parts"] {
                let _ = tx.send(Bytes::from_static(part.as_bytes())).await;
            }
        });
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(channel_body(rx))
            .unwrap()
    })
    .await;
    let lb = start_cached("true", &backend).await;
    let client = client();
    let url = lb.url("/stream");
    assert_eq!(get(&client, &url, None).await.text(), "streamed in parts");
    let hit = get(&client, &url, None).await;
    assert_eq!(cache_status(&hit), "weir; hit");
    assert_eq!(hit.text(), "streamed in parts");

    let head = request(&client, "HEAD", &url, &[]).await;
    assert_eq!(cache_status(&head), "weir; hit");
    // RFC 9110 §9.3.2: the GET's fields, or no Content-Length at all.
    let length = head.header("content-length");
    assert!(
        length.is_none() || length == Some("17"),
        "HEAD says Content-Length {length:?} for a 17-byte body"
    );
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn a_range_of_a_stored_response_is_a_206_with_those_bytes() {
    let backend = spawn_backend(|_| async {
        answer(
            200,
            &[("cache-control", "max-age=60")],
            "0123456789abcdefghij",
        )
    })
    .await;
    let lb = start_cached("true", &backend).await;
    let client = client();
    let url = lb.url("/bytes");
    get(&client, &url, None).await;

    for (range, part, content_range) in [
        ("bytes=2-5", "2345", "bytes 2-5/20"),
        ("bytes=-3", "hij", "bytes 17-19/20"),
        ("bytes=15-", "fghij", "bytes 15-19/20"),
    ] {
        let reply = get_with(&client, &url, &[("range", range)]).await;
        assert_eq!(reply.status, 206, "{range}");
        assert_eq!(reply.text(), part, "{range}");
        assert_eq!(reply.header("content-range"), Some(content_range));
        assert_eq!(
            reply.header("content-length"),
            Some(part.len().to_string().as_str())
        );
        assert_eq!(cache_status(&reply), "weir; hit", "{range}");
    }
    let beyond = get_with(&client, &url, &[("range", "bytes=20-")]).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), Some("bytes */20"));
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn only_if_cached_on_a_miss_is_a_504_that_reaches_no_backend() {
    let backend =
        spawn_backend(|_| async { answer(200, &[("cache-control", "max-age=60")], "here") }).await;
    let lb = start_cached("true", &backend).await;
    let client = client();
    let url = lb.url("/maybe");
    let only = [("cache-control", "only-if-cached")];

    let refused = get_with(&client, &url, &only).await;
    assert_eq!(refused.status, 504);
    assert!(cache_status(&refused).starts_with("weir;"));
    assert_eq!(backend.request_count(), 0);

    get(&client, &url, None).await;
    let stored = get_with(&client, &url, &only).await;
    assert_eq!(stored.status, 200);
    assert_eq!(stored.text(), "here");
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn a_route_without_cache_says_nothing_and_stores_nothing() {
    let backend =
        spawn_backend(|_| async { answer(200, &[("cache-control", "max-age=60")], "either") })
            .await;
    let lb = start_lb(
        r#"
[[routes]]
path_prefix = "/cached"
upstream = "app"
cache = true

[[routes]]
upstream = "app"

[upstreams.app]
backends = [{ address = "{app}" }]
"#,
        &[("app", backend.addr)],
    )
    .await;
    let client = client();
    for _ in 0..2 {
        let plain = get(&client, &lb.url("/plain"), None).await;
        assert_eq!(plain.status, 200);
        assert_eq!(plain.header("cache-status"), None);
        assert_eq!(plain.header("age"), None);
    }
    assert_eq!(received(&backend, "/plain"), 2);
    let cached = get(&client, &lb.url("/cached/x"), None).await;
    assert_eq!(cache_status(&cached), "weir; fwd=miss; stored");
}

#[tokio::test]
async fn only_if_cached_with_a_range_on_a_miss_is_a_504_too() {
    let backend =
        spawn_backend(|_| async { answer(200, &[("cache-control", "max-age=60")], "0123456789") })
            .await;
    let lb = start_cached("true", &backend).await;
    let client = client();
    let reply = get_with(
        &client,
        &lb.url("/part"),
        &[("cache-control", "only-if-cached"), ("range", "bytes=0-3")],
    )
    .await;
    assert_eq!(
        (reply.status.as_u16(), backend.request_count()),
        (504, 0),
        "only-if-cached reached the backend: {}",
        cache_status(&reply)
    );
}

// === request directives ===

#[tokio::test]
async fn request_directives_ask_for_revalidation_or_accept_a_stale_answer() {
    let backend = spawn_backend(|request| async move {
        let stale_on_arrival = request.uri().path() == "/old";
        let cache_control = if stale_on_arrival {
            "max-age=1"
        } else {
            "max-age=600"
        };
        // Fresh for 1 s but 10 s old on arrival: stale by 9 s at once.
        let age = if stale_on_arrival { "10" } else { "0" };
        let validated = request
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"t\"");
        let status = if validated { 304 } else { 200 };
        let body = if validated { "" } else { "content" };
        answer(
            status,
            &[
                ("cache-control", cache_control),
                ("age", age),
                ("etag", "\"t\""),
            ],
            body,
        )
    })
    .await;
    let lb = start_cached("true", &backend).await;
    let client = client();
    let url = lb.url("/doc");
    get(&client, &url, None).await;

    for directive in ["no-cache", "max-age=0", "min-fresh=3600"] {
        let before = received(&backend, "/doc");
        let reply = get_with(&client, &url, &[("cache-control", directive)]).await;
        assert_eq!(reply.status, 200, "{directive}");
        assert_eq!(reply.text(), "content", "{directive}");
        assert_eq!(received(&backend, "/doc"), before + 1, "{directive}");
        assert_eq!(
            backend.last_request().headers.get("if-none-match").unwrap(),
            "\"t\"",
            "{directive}: not a conditional request"
        );
        assert!(
            cache_status(&reply).contains("fwd-status=304"),
            "{directive}: {}",
            cache_status(&reply)
        );
    }
    // Pragma: no-cache stands for Cache-Control: no-cache when that is absent.
    let before = received(&backend, "/doc");
    get_with(&client, &url, &[("pragma", "no-cache")]).await;
    assert_eq!(received(&backend, "/doc"), before + 1, "Pragma: no-cache");
    let hit = get(&client, &url, None).await;
    assert_eq!(cache_status(&hit), "weir; hit");

    // A stale response answers a request that accepts that much staleness.
    let old = lb.url("/old");
    get(&client, &old, None).await;
    let accepted = get_with(&client, &old, &[("cache-control", "max-stale=60")]).await;
    assert_eq!(accepted.text(), "content");
    assert!(
        cache_status(&accepted).starts_with("weir; hit"),
        "{}",
        cache_status(&accepted)
    );
    let any = get_with(&client, &old, &[("cache-control", "max-stale")]).await;
    assert!(cache_status(&any).starts_with("weir; hit"));
    assert_eq!(received(&backend, "/old"), 1);
    let too_old = get_with(&client, &old, &[("cache-control", "max-stale=2")]).await;
    assert_eq!(too_old.text(), "content");
    assert_eq!(received(&backend, "/old"), 2, "9 s stale with max-stale=2");
}

// === stale answers ===

#[tokio::test]
async fn stale_if_error_answers_the_stale_copy_while_the_backend_fails() {
    let failing = Arc::new(AtomicBool::new(false));
    let backend = {
        let failing = failing.clone();
        spawn_backend(move |request| {
            let failing = failing.load(Ordering::SeqCst);
            async move {
                if failing {
                    return answer(503, &[], "down");
                }
                let cache_control = match request.uri().path() {
                    "/strict" => "max-age=1, must-revalidate",
                    "/own-window" => "max-age=1, stale-if-error=0",
                    _ => "max-age=1",
                };
                answer(200, &[("cache-control", cache_control)], "last good")
            }
        })
        .await
    };
    let lb = start_cached(r#"{ stale_if_error = "5m" }"#, &backend).await;
    let client = client();
    let url = lb.url("/page");
    let strict = lb.url("/strict");
    let own_window = lb.url("/own-window");
    for url in [&url, &strict, &own_window] {
        get(&client, url, None).await;
    }
    for url in [&url, &strict, &own_window] {
        until_stale(&client, url).await;
    }

    failing.store(true, Ordering::SeqCst);
    let stale = get(&client, &url, None).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.text(), "last good");
    assert_eq!(
        cache_status(&stale),
        "weir; fwd=stale; fwd-status=503; detail=stale-if-error"
    );
    assert!(stale.header("age").is_some());
    assert_eq!(
        received(&backend, "/page"),
        2,
        "the backend was asked first"
    );

    // must-revalidate forbids a stale answer: the error goes through; so does
    // the response's own stale-if-error=0, over the route's 5 minutes.
    assert_eq!(get(&client, &strict, None).await.status, 503);
    assert_eq!(get(&client, &own_window, None).await.status, 503);

    // A backend that is gone altogether: the stale copy still answers.
    backend.kill();
    let gone = get(&client, &url, None).await;
    assert_eq!(gone.status, 200);
    assert_eq!(gone.text(), "last good");
    assert!(
        cache_status(&gone).contains("detail=stale-if-error"),
        "{}",
        cache_status(&gone)
    );
    assert!(lb.cache_results("site", "stale") >= 2.0);
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_aside() {
    let release = Arc::new(Notify::new());
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<()>();
    let first = Arc::new(AtomicBool::new(true));
    let backend = {
        let release = release.clone();
        spawn_backend(move |_| {
            let first = first.swap(false, Ordering::SeqCst);
            let release = release.clone();
            let arrived_tx = arrived_tx.clone();
            async move {
                if first {
                    // Stale on arrival: 3 s old, fresh for 1 s.
                    return answer(200, &[("cache-control", "max-age=1"), ("age", "3")], "v1");
                }
                let _ = arrived_tx.send(());
                release.notified().await;
                answer(200, &[("cache-control", "max-age=60")], "v2")
            }
        })
        .await
    };
    let lb = start_cached(r#"{ stale_while_revalidate = "30s" }"#, &backend).await;
    let client = client();
    let url = lb.url("/feed");
    assert_eq!(
        cache_status(&get(&client, &url, None).await),
        "weir; fwd=miss; stored"
    );

    // The backend holds the revalidation; the stale copy answers meanwhile.
    let stale = get(&client, &url, None).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.text(), "v1");
    assert_eq!(
        cache_status(&stale),
        "weir; hit; detail=stale-while-revalidate"
    );
    let age: u64 = stale.header("age").expect("Age").parse().unwrap();
    assert!(age >= 3, "Age {age} of a response 3 s old on arrival");
    within("the revalidation aside", arrived.recv())
        .await
        .unwrap();
    let again = get(&client, &url, None).await;
    assert_eq!(again.text(), "v1");
    assert_eq!(backend.request_count(), 2, "one revalidation at a time");

    release.notify_one();
    within("the refreshed response", async {
        loop {
            let reply = get(&client, &url, None).await;
            if reply.text() == "v2" {
                assert_eq!(cache_status(&reply), "weir; hit");
                return;
            }
            assert_eq!(reply.text(), "v1");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(backend.request_count(), 2);
    assert!(arrived.try_recv().is_err(), "a second revalidation");
}
