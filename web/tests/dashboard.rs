//! The dashboard against every backend, through `tower::ServiceExt::oneshot`
//! (no browser, no socket): pages render the seeded data escaped, actions
//! change the store, stale ids answer 409, read-only mode and the CSRF and
//! same-origin checks answer 403, standalone authentication answers 401;
//! a running job is cancelled from the workers page.
//! Memory always runs; Redis, PostgreSQL and a three-shard namespace on the
//! Redis Cluster skip with a printed reason when
//! unreachable, or fail with `RESQ_REQUIRE_BACKENDS=1` (each test has its
//! own namespace or schema).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use resq_admin::{Admin, FailedFilter, Page};
use resq_core::{Backend, Queue};
use resq_web::{Auth, WebConfig};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

#[macro_use]
mod common;
use common::BACKENDS;

fn run<T, Fut>(which: usize, name: &str, test: T)
where
    T: FnOnce(Arc<dyn Backend>) -> Fut,
    Fut: Future<Output = ()>,
{
    let (kind, factory) = BACKENDS[which];
    resq_conformance::run_backend_test(&format!("{kind}::web::{name}"), factory, test);
}

const XSS: &str = "<script>alert(1)</script>";

/// Seeds: 2 jobs on `alpha` (one with a script in its arguments), 1 on
/// `beta`, 1 delayed, 3 failed entries (2 `boom`, 1 with a script in its
/// error), a worker with a ping 10 minutes old, a lock, a leader.
async fn seed(backend: &Arc<dyn Backend>) {
    let queue = Queue::new(Arc::clone(backend));
    queue.enqueue("alpha", "Mailer", (XSS,)).await.unwrap();
    queue.enqueue("alpha", "Mailer", ("plain",)).await.unwrap();
    queue.enqueue("beta", "Report", (9,)).await.unwrap();
    queue
        .enqueue_in(Duration::from_secs(3600), "alpha", "Later", (1,))
        .await
        .unwrap();
    for (class, error) in [("Crash", "boom one"), ("Crash", "boom two"), ("Evil", XSS)] {
        let entry = serde_json::json!({
            "failed_at": "2024-01-01T00:00:00Z",
            "payload": {"class": class, "queue": "alpha", "args": [error]},
            "exception": "RuntimeError",
            "error": error,
            "backtrace": ["at line 1", XSS],
            "worker": "w",
            "queue": "alpha",
        });
        backend.push_failed(&entry.to_string()).await.unwrap();
    }
    let worker = resq_conformance::fixtures::worker("web-test-worker", &["alpha"]);
    let now = resq_core::time::now_ms();
    backend.register_worker(&worker, now - 600_000).await.unwrap();
    backend.ping_worker(&worker, now - 600_000).await.unwrap();
    assert!(backend
        .acquire_lock("lock:web:test", "holder", Duration::from_secs(600))
        .await
        .unwrap());
    assert!(backend
        .acquire_leader("web-test-scheduler", Duration::from_secs(60))
        .await
        .unwrap());
}

fn app(backend: &Arc<dyn Backend>) -> axum::Router {
    resq_web::router(Admin::new(Arc::clone(backend)), WebConfig::default())
}

async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
    send(app, Request::get(path).body(Body::empty()).unwrap()).await
}

fn form_body(fields: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A same-origin POST of `fields`, as a browser sends a form.
async fn post(app: &axum::Router, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
    let req = Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("host", "localhost:8080")
        .header("origin", "http://localhost:8080")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from(form_body(fields)))
        .unwrap();
    send(app, req).await
}

/// The CSRF token the pages embed.
async fn token(app: &axum::Router) -> String {
    let (_, page) = get(app, "/workers").await;
    let start = page.find("name=\"csrf\" value=\"").expect("a form with a token") + 19;
    page[start..start + 64].to_owned()
}

async fn failed_ids(admin: &Admin, filter: &FailedFilter) -> Vec<String> {
    admin
        .failed(filter, Page::new(0, 100))
        .await
        .unwrap()
        .items
        .iter()
        .map(|f| f.id.to_string())
        .collect()
}

fn assert_escaped(page: &str, path: &str) {
    assert!(!page.contains(XSS), "{path} shows the raw script");
    assert!(!page.contains("<script>alert"), "{path} shows the raw script");
}

async fn pages_render_escaped(backend: Arc<dyn Backend>) {
    seed(&backend).await;
    let app = app(&backend);
    let admin = Admin::new(Arc::clone(&backend));
    let evil = failed_ids(
        &admin,
        &FailedFilter {
            class: Some("Evil".into()),
            ..Default::default()
        },
    )
    .await;
    let detail = format!("/failed/{}", evil[0]);
    let expectations: [(&str, &[&str]); 10] = [
        (
            "/",
            &["alpha", "beta", "web-test-scheduler", "data-processed", "/queues/alpha"],
        ),
        ("/?partial=1", &["alpha"]),
        (
            "/queues/alpha",
            &["Mailer", "&lt;script&gt;alert(1)&lt;/script&gt;", "plain"],
        ),
        ("/delayed", &["Later", "alpha", "Run now"]),
        (
            "/failed",
            &["Crash", "Evil", "&lt;script&gt;", "<b id=\"matching\">3</b>"],
        ),
        (
            "/failed?class=Crash&error=two",
            &["boom two", "<b id=\"matching\">1</b>"],
        ),
        (
            &detail,
            &[
                "Evil",
                "RuntimeError",
                "at line 1",
                "&lt;script&gt;alert(1)&lt;/script&gt;",
            ],
        ),
        ("/workers", &["web-test-worker", "idle"]),
        ("/locks", &["lock:web:test", "holder"]),
        ("/failed/bulk?action=remove", &["<b id=\"count\">3</b>"]),
    ];
    for (path, wanted) in expectations {
        let (status, page) = get(&app, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        for w in wanted {
            assert!(page.contains(w), "{path} lacks {w:?}:\n{page}");
        }
        assert_escaped(&page, path);
    }
    // The fragment the script swaps in: the main element's content only.
    let (_, fragment) = get(&app, "/failed?partial=1").await;
    assert!(
        fragment.starts_with("<h1>Failed jobs</h1>") && !fragment.contains("<html"),
        "{fragment}"
    );
    let (status, json) = get(&app, "/overview.json").await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["failed"], 3);
    assert_eq!(v["delayed"], 1);
    for asset in ["/assets/style.css", "/assets/app.js"] {
        let (status, text) = get(&app, asset).await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.len() > 100);
    }
}
per_backend!(pages_render_escaped, pages_render_escaped);

async fn retry_one_then_stale(backend: Arc<dyn Backend>) {
    seed(&backend).await;
    let app = app(&backend);
    let admin = Admin::new(Arc::clone(&backend));
    let csrf = token(&app).await;
    let ids = failed_ids(&admin, &FailedFilter::default()).await;
    let before = admin.queue("alpha", Page::default()).await.unwrap().summary.length;
    // The last entry: retrying it moves no other entry.
    let (status, page) = post(&app, &format!("/failed/{}/retry", ids[2]), &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(backend.failed_count().await.unwrap(), 2);
    assert_eq!(
        admin.queue("alpha", Page::default()).await.unwrap().summary.length,
        before + 1
    );
    // The first is removed behind the page's back: the second's id is stale.
    admin.remove_failed(&ids[0].parse().unwrap()).await.unwrap();
    for action in ["retry", "remove"] {
        let (status, page) = post(&app, &format!("/failed/{}/{action}", ids[1]), &[("csrf", &csrf)]).await;
        assert_eq!(status, StatusCode::CONFLICT, "{page}");
        assert!(page.contains("moved since the page was loaded; reload"), "{page}");
    }
    let (status, _) = post(
        &app,
        "/failed/selected",
        &[("csrf", &csrf), ("action", "retry"), ("id", &ids[1])],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(backend.failed_count().await.unwrap(), 1);
    assert_eq!(
        admin.queue("alpha", Page::default()).await.unwrap().summary.length,
        before + 1
    );
    // The current id works.
    let fresh = failed_ids(&admin, &FailedFilter::default()).await;
    let (status, _) = post(
        &app,
        "/failed/selected",
        &[("csrf", &csrf), ("action", "remove"), ("id", &fresh[0])],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(backend.failed_count().await.unwrap(), 0);
}
per_backend!(retry_one_then_stale, retry_one_then_stale);

async fn bulk_retry_by_filter(backend: Arc<dyn Backend>) {
    seed(&backend).await;
    let app = app(&backend);
    let admin = Admin::new(Arc::clone(&backend));
    let csrf = token(&app).await;
    let (status, page) = get(&app, "/failed/bulk?action=retry&error=boom").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<b id=\"count\">2</b>"), "{page}");
    assert!(page.contains("name=\"error\" value=\"boom\""), "{page}");
    let before = admin.queue("alpha", Page::default()).await.unwrap().summary.length;
    let (status, page) = post(
        &app,
        "/failed/bulk",
        &[("csrf", &csrf), ("action", "retry"), ("error", "boom")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Retried 2."), "{page}");
    assert_eq!(backend.failed_count().await.unwrap(), 1);
    assert_eq!(
        admin.queue("alpha", Page::default()).await.unwrap().summary.length,
        before + 2
    );
}
per_backend!(bulk_retry_by_filter, bulk_retry_by_filter);

async fn pause_resume_clean_lock_delayed(backend: Arc<dyn Backend>) {
    seed(&backend).await;
    let app = app(&backend);
    let admin = Admin::new(Arc::clone(&backend));
    let csrf = token(&app).await;
    let paused = |admin: Admin| async move {
        admin
            .queues()
            .await
            .unwrap()
            .into_iter()
            .find(|q| q.name == "beta")
            .unwrap()
            .paused
    };

    let (status, _) = post(&app, "/queues/beta/pause", &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(paused(admin.clone()).await);
    let (_, page) = get(&app, "/").await;
    assert!(page.contains("/queues/beta/resume"), "{page}");
    let (status, _) = post(&app, "/queues/beta/resume", &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!paused(admin.clone()).await);

    let (status, page) = post(&app, "/workers/clean-stale", &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Cleaned 1 stale worker"), "{page}");
    assert!(admin.workers().await.unwrap().is_empty());
    let (status, _) = post(&app, "/workers/clean", &[("csrf", &csrf), ("name", "web-test-worker")]).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, _) = post(&app, "/locks/delete", &[("csrf", &csrf), ("key", "lock:web:test")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(admin.locks().await.unwrap().is_empty());
    let (status, _) = post(&app, "/locks/delete", &[("csrf", &csrf), ("key", "lock:web:test")]).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let item = admin.delayed(Page::default()).await.unwrap().items.remove(0);
    let ts = item.timestamp_ms.to_string();
    let fields = [
        ("csrf", csrf.as_str()),
        ("timestamp_ms", &ts),
        ("payload", &item.payload),
    ];
    let before = admin.queue("alpha", Page::default()).await.unwrap().summary.length;
    let (status, page) = post(&app, "/delayed/run", &fields).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(backend.delayed_count().await.unwrap(), 0);
    assert_eq!(
        admin.queue("alpha", Page::default()).await.unwrap().summary.length,
        before + 1
    );
    let (status, page) = post(&app, "/delayed/delete", &fields).await;
    assert_eq!(status, StatusCode::CONFLICT, "{page}");

    let (status, page) = post(&app, "/queues/alpha/delete", &[("csrf", &csrf), ("class", "Mailer")]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Deleted 2 job(s)"), "{page}");
}
per_backend!(pause_resume_clean_lock_delayed, pause_resume_clean_lock_delayed);

/// The workers page stops a running job ("Cancel job" posts its id) and
/// cancels every job of a class; a second try of either answers 409.
async fn cancel_running_and_by_class(backend: Arc<dyn Backend>) {
    use resq_conformance::support::{quick_config, registry, spawn_worker, wait_until};
    use resq_core::{JobContext, TaskDef, TaskError};
    let limit = Duration::from_secs(10);
    let tasks = registry(vec![TaskDef::from_fn(
        "Hang",
        |_args: Vec<serde_json::Value>, ctx: JobContext| async move {
            // Ends only when cancelled (or after a minute).
            tokio::time::timeout(Duration::from_secs(60), ctx.cancelled())
                .await
                .ok();
            Ok::<_, TaskError>(())
        },
    )]);
    let queue = Queue::new(Arc::clone(&backend));
    let mut worker = spawn_worker(&backend, &tasks, quick_config(&["slow"]));
    let events = worker.take_events();
    queue.enqueue("slow", "Hang", (1,)).await.unwrap();
    queue.enqueue("idle", "Hang", (2,)).await.unwrap();
    queue.enqueue("idle", "Hang", (3,)).await.unwrap();
    let app = app(&backend);
    let csrf = token(&app).await;
    let page = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    wait_until(limit, "the workers page shows the running job", || {
        let (app, page) = (app.clone(), Arc::clone(&page));
        async move {
            let (_, body) = get(&app, "/workers").await;
            let busy = body.contains("action=\"/jobs/cancel\"");
            *page.lock().unwrap() = body;
            busy
        }
    })
    .await;
    let body = page.lock().unwrap().clone();
    let at = body.find("action=\"/jobs/cancel\"").expect("a cancel form");
    let start = body[at..].find("name=\"id\" value=\"").expect("the job id field") + at + 17;
    let id = body[start..].split('"').next().unwrap().to_owned();
    assert!(id.starts_with("running-"), "{id}");
    let (status, result) = post(&app, "/jobs/cancel", &[("csrf", &csrf), ("id", &id)]).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert!(result.contains("1 running"), "{result}");
    wait_until(limit, "the job ended as cancelled", || async {
        resq_conformance::support::count_events(&events, |e| matches!(e, resq_core::WorkerEvent::Cancelled { .. })) == 1
    })
    .await;
    wait_until(limit, "the worker is idle", || async {
        Admin::new(Arc::clone(&backend))
            .workers()
            .await
            .unwrap()
            .iter()
            .all(|w| !w.busy)
    })
    .await;
    let (status, result) = post(&app, "/jobs/cancel", &[("csrf", &csrf), ("id", &id)]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{result}");
    assert_eq!(
        backend.failed_count().await.unwrap(),
        0,
        "a cancelled job is not a failure"
    );

    let (status, result) = post(&app, "/jobs/cancel", &[("csrf", &csrf), ("id", "no-such-id")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{result}");
    let (status, result) = post(
        &app,
        "/jobs/cancel-class",
        &[("csrf", &csrf), ("class", "Hang"), ("args", "not json")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{result}");
    assert_eq!(queue.length("idle").await.unwrap(), 2);
    let (status, result) = post(
        &app,
        "/jobs/cancel-class",
        &[("csrf", &csrf), ("class", "Hang"), ("args", "[3]")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert!(result.contains("Cancelled 1 job(s)"), "{result}");
    assert_eq!(queue.length("idle").await.unwrap(), 1);
    let (status, result) = post(&app, "/jobs/cancel-class", &[("csrf", &csrf), ("class", "Hang")]).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert!(result.contains("1 queued"), "{result}");
    assert_eq!(queue.length("idle").await.unwrap(), 0);
    let (status, _) = post(&app, "/jobs/cancel-class", &[("csrf", &csrf), ("class", "Hang")]).await;
    assert_eq!(status, StatusCode::CONFLICT);
    worker.shutdown().await;
}
per_backend!(cancel_running_and_by_class, cancel_running_and_by_class);

/// Every mutating route, with plausible fields.
const MUTATIONS: [&str; 14] = [
    "/queues/alpha/delete",
    "/queues/alpha/pause",
    "/queues/alpha/resume",
    "/delayed/run",
    "/delayed/delete",
    "/failed/bulk",
    "/failed/selected",
    "/failed/0-0000000000000000000000000000000000000000000000000000000000000000/retry",
    "/failed/0-0000000000000000000000000000000000000000000000000000000000000000/remove",
    "/workers/clean",
    "/workers/clean-stale",
    "/locks/delete",
    "/jobs/cancel",
    "/jobs/cancel-class",
];

async fn read_only_refuses(backend: Arc<dyn Backend>) {
    seed(&backend).await;
    let app = resq_web::router(Admin::new(Arc::clone(&backend)), WebConfig::read_only());
    let admin = Admin::new(Arc::clone(&backend));
    let ids = failed_ids(&admin, &FailedFilter::default()).await;
    let detail = format!("/failed/{}", ids[0]);
    for path in [
        "/",
        "/queues/alpha",
        "/delayed",
        "/failed",
        &detail,
        "/workers",
        "/locks",
    ] {
        let (status, page) = get(&app, path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!page.contains("<form method=\"post\""), "{path} has a form:\n{page}");
        assert!(!page.contains("type=\"checkbox\""), "{path} has checkboxes");
        assert!(page.contains("read-only"), "{path}");
    }
    for path in MUTATIONS {
        let (status, _) = post(
            &app,
            path,
            &[("csrf", "x"), ("action", "remove"), ("key", "lock:web:test")],
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(backend.failed_count().await.unwrap(), 3);
    assert_eq!(admin.locks().await.unwrap().len(), 1);
}
per_backend!(read_only_refuses, read_only_refuses);

async fn csrf_and_origin_checked(backend: Arc<dyn Backend>) {
    seed(&backend).await;
    let app = app(&backend);
    let csrf = token(&app).await;
    let admin = Admin::new(Arc::clone(&backend));
    for path in MUTATIONS {
        for fields in [
            vec![("key", "lock:web:test")],
            vec![("csrf", "0".repeat(64).leak() as &str)],
        ] {
            let (status, _) = post(&app, path, &fields).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} {fields:?}");
        }
    }
    // The right token from another site.
    let body = form_body(&[("csrf", &csrf), ("key", "lock:web:test")]);
    for (header, value) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let req = Request::post("/locks/delete")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("host", "localhost:8080")
            .header(header, value)
            .body(Body::from(body.clone()))
            .unwrap();
        let (status, _) = send(&app, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{header}: {value}");
    }
    assert_eq!(admin.locks().await.unwrap().len(), 1);
    // A second router has another token.
    let other = token(&self::app(&backend)).await;
    assert_ne!(other, csrf);
    let (status, _) = post(&app, "/locks/delete", &[("csrf", &other), ("key", "lock:web:test")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = post(&app, "/locks/delete", &[("csrf", &csrf), ("key", "lock:web:test")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(admin.locks().await.unwrap().is_empty());
}
per_backend!(csrf_and_origin_checked, csrf_and_origin_checked);

#[tokio::test]
async fn nested_under_a_prefix_links_there() {
    let backend: Arc<dyn Backend> = Arc::new(resq_memory::MemoryBackend::new());
    seed(&backend).await;
    let host = axum::Router::new().nest("/admin/jobs", app(&backend));
    for path in ["/admin/jobs", "/admin/jobs/failed", "/admin/jobs/queues/alpha"] {
        let (status, page) = get(&host, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(page.contains("href=\"/admin/jobs/failed\""), "{path}:\n{page}");
        assert!(page.contains("href=\"/admin/jobs\">Overview"), "{path}");
        assert!(page.contains("src=\"/admin/jobs/assets/app.js\""), "{path}");
    }
    let (status, _) = get(&host, "/admin/jobs/assets/style.css").await;
    assert_eq!(status, StatusCode::OK);
    let fixed = resq_web::router(
        Admin::new(Arc::clone(&backend)),
        WebConfig {
            base_path: Some("/behind/proxy/".into()),
            ..WebConfig::default()
        },
    );
    let (_, page) = get(&fixed, "/").await;
    assert!(page.contains("href=\"/behind/proxy/failed\""));
}

#[tokio::test]
async fn standalone_auth() {
    let backend: Arc<dyn Backend> = Arc::new(resq_memory::MemoryBackend::new());
    let with = |auth: Auth| auth.protect(app(&backend));
    let bearer = with(Auth::Bearer("s3cret".into()));
    let basic = with(Auth::basic_from("ada:pa:ss").unwrap());
    let cases: [(&axum::Router, Option<&str>, StatusCode); 8] = [
        (&bearer, None, StatusCode::UNAUTHORIZED),
        (&bearer, Some("Bearer wrong"), StatusCode::UNAUTHORIZED),
        (&bearer, Some("Bearer s3cret"), StatusCode::OK),
        // user "x", password "s3cret": what a browser's prompt sends.
        (&bearer, Some("Basic eDpzM2NyZXQ="), StatusCode::OK),
        (&basic, None, StatusCode::UNAUTHORIZED),
        // "ada:wrong"
        (&basic, Some("Basic YWRhOndyb25n"), StatusCode::UNAUTHORIZED),
        (&basic, Some("Bearer pa:ss"), StatusCode::UNAUTHORIZED),
        // "ada:pa:ss"
        (&basic, Some("Basic YWRhOnBhOnNz"), StatusCode::OK),
    ];
    for (app, header, expected) in cases {
        let mut req = Request::get("/");
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), expected, "{header:?}");
        if expected == StatusCode::UNAUTHORIZED {
            assert!(resp.headers().contains_key("www-authenticate"));
        }
    }
    // POSTs are behind the same check.
    let (status, _) = post(&bearer, "/workers/clean-stale", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
