//! The dashboard in a real headless Chromium, driven over WebDriver
//! (chromedriver + `fantoccini`), against every backend: the pages are
//! clicked through by their navigation links and photographed, the
//! actions are taken by clicking their buttons and their effect is read
//! back from the backend, a stale page's action is refused, the overview
//! shows a job enqueued behind its back without a reload, and a
//! read-only dashboard shows no action and answers 403 to a POST sent
//! from the page.
//!
//! Chromium and chromedriver missing, or a backend unreachable: the test
//! prints `SKIP` and passes, or fails with `RESQ_REQUIRE_BACKENDS=1`.
//! Screenshots go to `target/web-screenshots/<backend>/<page>.png`; with
//! `RESQ_UPDATE_SCREENSHOTS=1` the memory backend's overview and failed
//! pages are also copied to `web/screenshots/` (shown in the README).

use fantoccini::{Client, ClientBuilder, Locator};
use resq_admin::{Admin, FailedFilter, Page};
use resq_core::{Backend, Queue};
use resq_web::WebConfig;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[macro_use]
mod common;
use common::BACKENDS;

/// A browser test may take longer than a backend test: Chromium starts.
const BROWSER_TEST_TIMEOUT: Duration = Duration::from_secs(180);

const CHROMIUM: &str = "/usr/bin/chromium";

/// What a browser test gets: the backend, a browser session, the
/// backend's name (for screenshot paths).
struct Env {
    backend: Arc<dyn Backend>,
    browser: Client,
    kind: &'static str,
    _driver: Driver,
}

fn run<T, Fut>(which: usize, name: &str, test: T)
where
    T: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    let (kind, factory) = BACKENDS[which];
    let path = format!("{kind}::browser::{name}");
    let Some(chromedriver) = tools() else {
        let reason = format!("{CHROMIUM} or chromedriver (on PATH) not installed");
        if resq_conformance::backends_required() {
            panic!("{path}: {reason} and {}=1", resq_conformance::REQUIRE_BACKENDS_ENV);
        }
        eprintln!("SKIP {path}: {reason}");
        return;
    };
    resq_conformance::test_runtime().block_on(async {
        let Some(backend) = resq_conformance::connect(&path, factory).await else {
            return;
        };
        let (driver, browser) = match start_browser(&chromedriver).await {
            Ok(pair) => pair,
            Err(e) => panic!("{path}: cannot start the browser: {e}"),
        };
        let env = Env {
            backend: Arc::clone(&backend),
            browser: browser.clone(),
            kind,
            _driver: driver,
        };
        let outcome = tokio::time::timeout(BROWSER_TEST_TIMEOUT, test(env)).await;
        let _ = browser.close().await;
        if outcome.is_err() {
            panic!("{path}: did not finish within {BROWSER_TEST_TIMEOUT:?}");
        }
        if let Err(e) = backend.close().await {
            panic!("{path}: close() failed: {e}");
        }
    });
}

/// chromedriver's path, when it and Chromium are installed.
fn tools() -> Option<PathBuf> {
    if !Path::new(CHROMIUM).exists() {
        return None;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("chromedriver"))
        .find(|p| p.is_file())
}

/// The chromedriver child process, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

async fn start_browser(chromedriver: &Path) -> Result<(Driver, Client), String> {
    let port = free_port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", chromedriver.display()))?;
    let driver = Driver(child);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await;
        match builder {
            Ok(client) => return Ok((driver, client)),
            Err(e) if Instant::now() > deadline => return Err(format!("connecting to chromedriver: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Serves the dashboard over `backend` on a free local port; returns its
/// base URL. The server stops with the test's runtime.
async fn serve(backend: &Arc<dyn Backend>, config: WebConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = resq_web::router(Admin::new(Arc::clone(backend)), config);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// Seeds: 2 jobs on `alpha`, 1 on `beta`, 1 delayed, 3 failed entries of
/// queue `gamma` (2 `Crash` with errors `boom one`/`boom two`, 1 `Other`
/// with `bad value`), a worker with a ping 10 minutes old, a lock.
async fn seed(backend: &Arc<dyn Backend>) {
    let queue = Queue::new(Arc::clone(backend));
    queue.enqueue("alpha", "Mailer", ("hello",)).await.unwrap();
    queue.enqueue("alpha", "Mailer", ("world",)).await.unwrap();
    queue.enqueue("beta", "Report", (9,)).await.unwrap();
    queue
        .enqueue_in(Duration::from_secs(3600), "alpha", "Later", (1,))
        .await
        .unwrap();
    for (class, error) in [("Crash", "boom one"), ("Crash", "boom two"), ("Other", "bad value")] {
        let entry = serde_json::json!({
            "failed_at": "2024-01-01T00:00:00Z",
            "payload": {"class": class, "queue": "gamma", "args": [error]},
            "exception": "RuntimeError",
            "error": error,
            "backtrace": ["at line 1", "at line 2"],
            "worker": "w",
            "queue": "gamma",
        });
        backend.push_failed(&entry.to_string()).await.unwrap();
    }
    let worker = resq_conformance::fixtures::worker("browser-test-worker", &["alpha"]);
    let now = resq_core::time::now_ms();
    backend.register_worker(&worker, now - 600_000).await.unwrap();
    backend.ping_worker(&worker, now - 600_000).await.unwrap();
    assert!(backend
        .acquire_lock("lock:browser:test", "holder", Duration::from_secs(600))
        .await
        .unwrap());
}

/// After a page load: accept the pages' confirmation questions and stop
/// the live refresh, so elements found stay in the document.
async fn settle(browser: &Client) {
    browser
        .execute(
            "window.resqSettled = true;\
             window.confirm = function () { return true; };\
             var last = window.setInterval(function () {}, 100000);\
             for (var i = 0; i <= last; i++) { window.clearInterval(i); }",
            vec![],
        )
        .await
        .unwrap();
}

async fn goto(browser: &Client, url: &str) {
    browser.goto(url).await.unwrap();
    settle(browser).await;
}

async fn click(browser: &Client, locator: Locator<'_>) {
    browser.find(locator).await.unwrap().click().await.unwrap();
    // A click that submits a form or follows a link loads a new page
    // (without the mark `settle` left on this one).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let loaded = browser
            .execute(
                "return window.resqSettled !== true && document.readyState === 'complete';",
                vec![],
            )
            .await;
        if matches!(loaded, Ok(serde_json::Value::Bool(true))) {
            break;
        }
        assert!(Instant::now() < deadline, "no new page after the click");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    settle(browser).await;
}

async fn nav(browser: &Client, label: &str) {
    let link = format!("//header//nav/a[normalize-space()='{label}']");
    click(browser, Locator::XPath(&link)).await;
}

async fn source(browser: &Client) -> String {
    browser.source().await.unwrap()
}

async fn text(browser: &Client, locator: Locator<'_>) -> String {
    browser.find(locator).await.unwrap().text().await.unwrap()
}

fn screenshot_dir(kind: &str) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("web-screenshots").join(kind)
}

/// Saves the current page as `<page>.png`; the memory backend's overview
/// and failed pages also to `web/screenshots/` when asked to.
async fn shoot(env: &Env, page: &str) {
    let png = env.browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{page}: not a PNG");
    let dir = screenshot_dir(env.kind);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{page}.png")), &png).unwrap();
    let update = std::env::var("RESQ_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1");
    if update && env.kind == "memory" && (page == "overview" || page == "failed") {
        let readme_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("screenshots");
        std::fs::create_dir_all(&readme_dir).unwrap();
        std::fs::write(readme_dir.join(format!("{page}.png")), &png).unwrap();
    }
}

async fn failed_ids(admin: &Admin) -> Vec<String> {
    admin
        .failed(&FailedFilter::default(), Page::new(0, 100))
        .await
        .unwrap()
        .items
        .iter()
        .map(|f| f.id.to_string())
        .collect()
}

/// The number in the overview's queue table next to `queue`'s name.
async fn overview_length(browser: &Client, queue: &str) -> String {
    let cell = format!("//main//tr[td/a[normalize-space()='{queue}']]/td[2]");
    text(browser, Locator::XPath(&cell)).await
}

/// Every page through the navigation links, photographed; then each
/// action by its button, checked against the backend.
async fn click_through_and_act(env: Env) {
    let backend = Arc::clone(&env.backend);
    seed(&backend).await;
    let base = serve(&backend, WebConfig::default()).await;
    let b = &env.browser;

    // Overview: queue names and lengths.
    goto(b, &format!("{base}/")).await;
    assert_eq!(overview_length(b, "alpha").await, "2");
    assert_eq!(overview_length(b, "beta").await, "1");
    shoot(&env, "overview").await;

    // Queue detail through the overview's link.
    click(b, Locator::XPath("//main//a[normalize-space()='alpha']")).await;
    assert!(b.current_url().await.unwrap().path().ends_with("/queues/alpha"));
    let page = source(b).await;
    assert!(page.contains("Mailer") && page.contains("hello"), "{page}");
    shoot(&env, "queue").await;

    nav(b, "Delayed").await;
    let page = source(b).await;
    assert!(page.contains("Later"), "{page}");
    shoot(&env, "delayed").await;

    nav(b, "Failed").await;
    assert_eq!(text(b, Locator::Id("matching")).await, "3");
    let page = source(b).await;
    assert!(page.contains("boom one") && page.contains("bad value"), "{page}");
    shoot(&env, "failed").await;

    // Failed detail through its link in the list.
    let admin = Admin::new(Arc::clone(&backend));
    let ids = failed_ids(&admin).await;
    let detail = format!("//main//a[contains(@href, '/failed/{}')]", ids[0]);
    click(b, Locator::XPath(&detail)).await;
    assert!(source(b).await.contains("at line 2"));
    shoot(&env, "failed-detail").await;

    nav(b, "Workers").await;
    assert!(source(b).await.contains("browser-test-worker"));
    shoot(&env, "workers").await;

    nav(b, "Locks").await;
    assert!(source(b).await.contains("lock:browser:test"));
    shoot(&env, "locks").await;

    // Retry one failed job: the `Other` one.
    nav(b, "Failed").await;
    click(
        b,
        Locator::XPath("//main//tr[td[contains(., 'bad value')]]//form[contains(@action, '/retry')]/button"),
    )
    .await;
    assert!(source(b).await.contains("class=\"ok\""), "{}", source(b).await);
    assert_eq!(backend.failed_count().await.unwrap(), 2);
    assert_eq!(backend.queue_len("gamma").await.unwrap(), 1);

    // Bulk retry by filter: class Crash, error "boom".
    nav(b, "Failed").await;
    let class = b.find(Locator::Css("form.filters input[name=class]")).await.unwrap();
    class.send_keys("Crash").await.unwrap();
    let error = b.find(Locator::Css("form.filters input[name=error]")).await.unwrap();
    error.send_keys("boom").await.unwrap();
    click(b, Locator::Css("form.filters button[type=submit]")).await;
    assert_eq!(text(b, Locator::Id("matching")).await, "2");
    click(b, Locator::LinkText("Retry all matching…")).await;
    assert_eq!(text(b, Locator::Id("count")).await, "2");
    shoot(&env, "failed-bulk-confirm").await;
    assert_eq!(
        backend.failed_count().await.unwrap(),
        2,
        "the confirm page changes nothing"
    );
    click(b, Locator::Css("main form[method=post][action$='/failed/bulk'] button")).await;
    assert!(source(b).await.contains("class=\"ok\""));
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    assert_eq!(backend.queue_len("gamma").await.unwrap(), 3);

    // Pause, then resume, `beta` from the overview.
    nav(b, "Overview").await;
    click(b, Locator::Css("form[action$='/queues/beta/pause'] button")).await;
    assert_eq!(backend.paused_queues().await.unwrap(), vec!["beta".to_owned()]);
    nav(b, "Overview").await;
    shoot(&env, "overview-paused").await;
    click(b, Locator::Css("form[action$='/queues/beta/resume'] button")).await;
    assert!(backend.paused_queues().await.unwrap().is_empty());

    // Stop a running job with its worker's "Cancel job" button.
    {
        use resq_conformance::support::{count_events, quick_config, registry, spawn_worker, wait_until};
        use resq_core::{JobContext, TaskDef, TaskError, WorkerEvent};
        let tasks = registry(vec![TaskDef::from_fn(
            "Hang",
            |_args: Vec<serde_json::Value>, _ctx: JobContext| async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, TaskError>(())
            },
        )]);
        let mut worker = spawn_worker(&backend, &tasks, quick_config(&["slow"]));
        let events = worker.take_events();
        Queue::new(Arc::clone(&backend))
            .enqueue("slow", "Hang", (1,))
            .await
            .unwrap();
        let busy = Arc::new(std::sync::Mutex::new(String::new()));
        wait_until(Duration::from_secs(10), "the job runs", || {
            let (admin, busy) = (Admin::new(Arc::clone(&backend)), Arc::clone(&busy));
            async move {
                let found = admin.workers().await.unwrap().into_iter().find(|w| w.busy);
                let seen = found.is_some();
                if let Some(w) = found {
                    *busy.lock().unwrap() = w.name;
                }
                seen
            }
        })
        .await;
        let name = busy.lock().unwrap().clone();
        nav(b, "Workers").await;
        let button = format!("//main//tr[td[contains(., '{name}')]]//form[contains(@action, '/jobs/cancel')]/button");
        click(b, Locator::XPath(&button)).await;
        assert!(source(b).await.contains("class=\"ok\""));
        wait_until(Duration::from_secs(10), "the job ended as cancelled", || async {
            count_events(&events, |e| matches!(e, WorkerEvent::Cancelled { .. })) == 1
        })
        .await;
        worker.shutdown().await;
    }

    // Clean the stale worker.
    nav(b, "Workers").await;
    click(
        b,
        Locator::XPath(
            "//main//tr[td[contains(., 'browser-test-worker')]]//form[contains(@action, '/workers/clean')]/button",
        ),
    )
    .await;
    assert!(source(b).await.contains("class=\"ok\""));
    assert!(backend.workers().await.unwrap().is_empty());

    // Delete the lock.
    nav(b, "Locks").await;
    click(
        b,
        Locator::XPath(
            "//main//tr[td[contains(., 'lock:browser:test')]]//form[contains(@action, '/locks/delete')]/button",
        ),
    )
    .await;
    assert!(source(b).await.contains("class=\"ok\""));
    let locks = backend.locks().await.unwrap();
    assert!(!locks.iter().any(|(k, _)| k == "lock:browser:test"), "{locks:?}");
}

/// A POST from the page's own context (same origin, the browser's
/// headers); the HTTP status it answered.
async fn post_from_page(browser: &Client, path: &str, body: &str) -> u64 {
    let status = browser
        .execute_async(
            "var done = arguments[arguments.length - 1];\
             fetch(arguments[0], {method: 'POST', credentials: 'same-origin',\
               headers: {'content-type': 'application/x-www-form-urlencoded'}, body: arguments[1]})\
             .then(function (r) { done(r.status); }, function (e) { done(String(e)); });",
            vec![path.into(), body.into()],
        )
        .await
        .unwrap();
    status.as_u64().unwrap_or_else(|| panic!("{path}: {status}"))
}

/// The failed page loaded, its first entry removed behind its back: its
/// Retry button answers 409 "moved" and changes nothing.
async fn stale_page_refused(env: Env) {
    let backend = Arc::clone(&env.backend);
    seed(&backend).await;
    let base = serve(&backend, WebConfig::default()).await;
    let b = &env.browser;
    let admin = Admin::new(Arc::clone(&backend));
    goto(b, &format!("{base}/failed")).await;
    let ids = failed_ids(&admin).await;
    let first = admin.failed(&FailedFilter::default(), Page::new(0, 1)).await.unwrap();
    admin.remove_failed(&first.items[0].id).await.unwrap();
    assert_eq!(backend.failed_count().await.unwrap(), 2);

    let form = format!("main form[action$='/failed/{}/retry']", ids[0]);
    // The form's own fields, posted from the page: 409.
    let fields: String = b
        .execute(
            "return new URLSearchParams(new FormData(document.querySelector(arguments[0]))).toString();",
            vec![form.clone().into()],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let action = b
        .find(Locator::Css(&form))
        .await
        .unwrap()
        .attr("action")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(post_from_page(b, &action, &fields).await, 409);
    // The button itself: the page says the entry moved.
    click(b, Locator::Css(&format!("{form} button"))).await;
    let page = source(b).await;
    assert!(page.contains("moved since the page was loaded"), "{page}");
    shoot(&env, "stale").await;
    assert_eq!(backend.failed_count().await.unwrap(), 2);
    assert_eq!(backend.queue_len("gamma").await.unwrap(), 0);
}

/// Every mutating route, with a placeholder id.
const MUTATING: [&str; 12] = [
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
];

/// A read-only dashboard: no POST form on any page, and a POST to each
/// mutating route sent from the page answers 403 and changes nothing.
async fn read_only_refuses(env: Env) {
    let backend = Arc::clone(&env.backend);
    seed(&backend).await;
    let base = serve(&backend, WebConfig::read_only()).await;
    let b = &env.browser;
    let admin = Admin::new(Arc::clone(&backend));
    let ids = failed_ids(&admin).await;
    let pages = [
        "/".to_owned(),
        "/queues/alpha".to_owned(),
        "/delayed".to_owned(),
        "/failed".to_owned(),
        format!("/failed/{}", ids[0]),
        "/workers".to_owned(),
        "/locks".to_owned(),
        "/failed/bulk?action=retry&class=Crash".to_owned(),
    ];
    for path in &pages {
        goto(b, &format!("{base}{path}")).await;
        let forms = b.find_all(Locator::Css("form[method=post]")).await.unwrap();
        assert!(forms.is_empty(), "{path}: {} POST forms", forms.len());
        let buttons = b.find_all(Locator::Css("button")).await.unwrap();
        for button in buttons {
            let label = button.text().await.unwrap();
            assert_eq!(label, "Search", "{path}: an action button {label:?}");
        }
    }
    shoot(&env, "read-only-failed").await;
    goto(b, &format!("{base}/")).await;
    for path in MUTATING {
        let body = "csrf=0&name=browser-test-worker&key=lock%3Abrowser%3Atest&class=Mailer&action=retry";
        assert_eq!(post_from_page(b, path, body).await, 403, "{path}");
    }
    assert_eq!(backend.failed_count().await.unwrap(), 3);
    assert_eq!(backend.queue_len("alpha").await.unwrap(), 2);
    assert!(backend.paused_queues().await.unwrap().is_empty());
    assert_eq!(backend.workers().await.unwrap().len(), 1);
    let locks = backend.locks().await.unwrap();
    assert!(locks.iter().any(|(k, _)| k == "lock:browser:test"), "{locks:?}");
}

/// The overview refreshes itself: a job enqueued behind the page's back
/// shows in the queue's length within a few refresh periods, and the page
/// was not reloaded (a mark set on it is still there).
async fn live_refresh_without_reload(env: Env) {
    let backend = Arc::clone(&env.backend);
    seed(&backend).await;
    let base = serve(&backend, WebConfig::default()).await;
    let b = &env.browser;
    // No `settle`: the refresh keeps running.
    b.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(overview_length(b, "alpha").await, "2");
    b.execute("window.resqSameDocument = true;", vec![]).await.unwrap();
    let queue = Queue::new(Arc::clone(&backend));
    queue.enqueue("alpha", "Mailer", ("live",)).await.unwrap();
    queue.enqueue("alpha", "Mailer", ("refresh",)).await.unwrap();
    // Refreshes come every 2 s; allow several on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // The cell is found afresh each time: a refresh replaces it.
        let shown = b
            .execute(
                "var c = document.evaluate(arguments[0], document, null, 9, null).singleNodeValue;\
                 return c ? c.textContent.trim() : null;",
                vec![serde_json::json!("//main//tr[td/a[normalize-space()='alpha']]/td[2]")],
            )
            .await
            .unwrap();
        if shown == serde_json::json!("4") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the overview still shows {shown} jobs on alpha after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let same = b
        .execute("return window.resqSameDocument === true;", vec![])
        .await
        .unwrap();
    assert_eq!(
        same,
        serde_json::json!(true),
        "the page was reloaded instead of refreshed in place"
    );
}

per_backend!(click_through_and_act, super::click_through_and_act);
per_backend!(live_refresh_without_reload, super::live_refresh_without_reload);
per_backend!(stale_page_refused, super::stale_page_refused);
per_backend!(read_only_refuses, super::read_only_refuses);
