//! The routes: pages (GET) and actions (POST).

use crate::html::{enc_path, enc_query, escape, pager, seconds, table, time_ms, Ctx};
use crate::State;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, OriginalUri, Path, RawQuery};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use resq_admin::{BulkOutcome, DelayedRef, FailedFilter, FailedId, FailedItem, Page};
use resq_core::Error;
use std::fmt::Write as _;
use std::sync::Arc;

type S = axum::extract::State<Arc<State>>;

/// Every route, behind the mutation guard.
pub(crate) fn routes(state: Arc<State>) -> axum::Router {
    axum::Router::new()
        .route("/", get(overview))
        .route("/overview.json", get(overview_json))
        .route("/assets/style.css", get(css))
        .route("/assets/app.js", get(js))
        .route("/queues/{name}", get(queue))
        .route("/queues/{name}/delete", post(queue_delete))
        .route("/queues/{name}/pause", post(queue_pause))
        .route("/queues/{name}/resume", post(queue_resume))
        .route("/delayed", get(delayed))
        .route("/delayed/run", post(delayed_run))
        .route("/delayed/delete", post(delayed_delete))
        .route("/failed", get(failed))
        .route("/failed/bulk", get(failed_bulk_confirm).post(failed_bulk))
        .route("/failed/selected", post(failed_selected))
        .route("/failed/{id}", get(failed_detail))
        .route("/failed/{id}/retry", post(failed_retry))
        .route("/failed/{id}/remove", post(failed_remove))
        .route("/workers", get(workers))
        .route("/workers/clean", post(worker_clean))
        .route("/workers/clean-stale", post(workers_clean_stale))
        .route("/jobs/cancel", post(job_cancel))
        .route("/jobs/cancel-class", post(jobs_cancel_class))
        .route("/locks", get(locks))
        .route("/locks/delete", post(lock_delete))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::guard::check))
        .with_state(state)
}

// ---- request context, parameters, errors -------------------------------

impl FromRequestParts<Arc<State>> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, Self::Rejection> {
        let prefix = match &state.config.base_path {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None => mount_prefix(parts),
        };
        Ok(Ctx {
            prefix,
            read_only: state.config.read_only,
            csrf: state.csrf.clone(),
            title: state.config.title.clone(),
        })
    }
}

/// The prefix `nest` stripped: the original path minus the routed one.
fn mount_prefix(parts: &Parts) -> String {
    let inner = parts.uri.path();
    let Some(original) = parts.extensions.get::<OriginalUri>().map(|o| o.0.path().to_owned()) else {
        return String::new();
    };
    if let Some(prefix) = original.strip_suffix(inner) {
        return prefix.trim_end_matches('/').to_owned();
    }
    // `/admin/jobs` (no trailing slash) routes to `/`.
    if inner == "/" {
        return original.trim_end_matches('/').to_owned();
    }
    String::new()
}

/// Decoded `name=value` pairs of a query string or a form body.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(bytes: &[u8]) -> Params {
        Params(
            url::form_urlencoded::parse(bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn query(raw: Option<String>) -> Params {
        Params::parse(raw.unwrap_or_default().as_bytes())
    }

    /// The first non-empty value of `key`.
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn required(&self, key: &str) -> Result<&str, WebError> {
        self.get(key)
            .ok_or_else(|| WebError::BadRequest(format!("the form has no `{key}`")))
    }

    fn offset(&self) -> u64 {
        self.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    fn partial(&self) -> bool {
        self.get("partial").is_some()
    }
}

/// Why a request failed.
enum WebError {
    Admin(Error),
    BadRequest(String),
}

impl From<Error> for WebError {
    fn from(e: Error) -> Self {
        WebError::Admin(e)
    }
}

/// What a page says when an action's entry moved.
const STALE: &str = "This entry moved since the page was loaded; reload.";

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            WebError::Admin(
                Error::StaleFailedEntry { .. } | Error::StaleDelayedEntry { .. } | Error::StaleJob { .. },
            ) => (StatusCode::CONFLICT, STALE.to_owned()),
            WebError::Admin(
                e @ (Error::InvalidArgument(_)
                | Error::MalformedFailedId { .. }
                | Error::MalformedJobId { .. }
                | Error::Decode { .. }),
            ) => (StatusCode::BAD_REQUEST, e.to_string()),
            WebError::Admin(e) => {
                tracing::warn!(target: "resq::web", error = %e, "a dashboard request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
            WebError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
        };
        let body = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code}</title></head>\
             <body><h1>{code}</h1><p class=\"error\">{}</p>\
             <p><a href=\"javascript:history.back()\">Back</a></p></body></html>\n",
            escape(&message),
            code = status.as_u16(),
        );
        (status, Html(body)).into_response()
    }
}

type Result<T, E = WebError> = std::result::Result<T, E>;

/// A page, or only its main fragment when the script asks (`partial=1`).
fn respond(ctx: &Ctx, params: &Params, heading: &str, body: String, live: bool) -> Response {
    let html = if params.partial() {
        body
    } else {
        ctx.page(heading, &body, live)
    };
    ([(CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// The page an action ends on: what it did and a link back.
fn done(ctx: &Ctx, status: StatusCode, message: &str, back: &str) -> Response {
    let body = format!(
        "<h1>{}</h1><p class=\"{}\">{}</p><p><a href=\"{}\">Back</a></p>",
        if status.is_success() { "Done" } else { "Nothing changed" },
        if status.is_success() { "ok" } else { "error" },
        escape(message),
        ctx.link(back)
    );
    (status, Html(ctx.page("Result", &body, false))).into_response()
}

fn json_text(v: &serde_json::Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn opt(v: Option<&str>) -> String {
    escape(v.unwrap_or("—"))
}

// ---- assets --------------------------------------------------------------

async fn css() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("assets/style.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("assets/app.js"),
    )
        .into_response()
}

// ---- overview --------------------------------------------------------------

async fn overview(state: S, ctx: Ctx, RawQuery(q): RawQuery) -> Result<Response> {
    let params = Params::query(q);
    let o = state.admin.overview().await?;
    let mut body = String::from("<h1>Overview</h1>");
    let _ = write!(
        body,
        "<div id=\"totals\" class=\"cards\" data-processed=\"{p}\" data-failed=\"{f}\">\
         <div class=\"card\"><span>processed</span><b>{p}</b></div>\
         <div class=\"card\"><span>failed (ever)</span><b>{f}</b></div>\
         <div class=\"card\"><span>delayed</span><b><a href=\"{dl}\">{d}</a></b></div>\
         <div class=\"card\"><span>failed list</span><b><a href=\"{fl}\">{fc}</a></b></div>\
         <div class=\"card\"><span>workers</span><b><a href=\"{wl}\">{busy} busy / {idle} idle</a></b></div>\
         <div class=\"card\"><span>leader</span><b>{leader}</b></div></div>",
        p = o.processed_total,
        f = o.failed_total,
        d = o.delayed,
        fc = o.failed,
        busy = o.workers.busy,
        idle = o.workers.idle,
        leader = opt(o.leader.as_deref()),
        dl = ctx.link("/delayed"),
        fl = ctx.link("/failed"),
        wl = ctx.link("/workers"),
    );
    body.push_str(
        "<figure class=\"chart\"><svg id=\"chart\" viewBox=\"0 0 300 60\" preserveAspectRatio=\"none\" \
         role=\"img\" aria-label=\"processed and failed jobs per second\"></svg>\
         <figcaption><span class=\"processed\">processed/s</span> <span class=\"failed\">failed/s</span> \
         (since this page opened)</figcaption></figure>",
    );
    let rows: Vec<String> = o
        .queues
        .iter()
        .map(|q| {
            let enc = enc_path(&q.name);
            let toggle = if q.paused {
                ctx.form(&format!("/queues/{enc}/resume"), &[], "Resume", None)
            } else {
                ctx.form(&format!("/queues/{enc}/pause"), &[], "Pause", None)
            };
            format!(
                "<tr><td><a href=\"{}\">{}</a></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                ctx.link(&format!("/queues/{enc}")),
                escape(&q.name),
                q.length,
                q.latency_seconds.map(seconds).unwrap_or_else(|| "unknown".into()),
                if q.paused { "<span class=\"badge\">paused</span>" } else { "running" },
                toggle
            )
        })
        .collect();
    body.push_str("<h2>Queues</h2>");
    body.push_str(&table(
        &["Queue", "Length", "Latency", "State", ""],
        &rows,
        "No queues.",
    ));
    Ok(respond(&ctx, &params, "Overview", body, true))
}

async fn overview_json(state: S) -> Result<Response> {
    let o = state.admin.overview().await?;
    let text = serde_json::to_string(&o).map_err(|e| WebError::BadRequest(e.to_string()))?;
    Ok(([(CONTENT_TYPE, "application/json"), (CACHE_CONTROL, "no-store")], text).into_response())
}

// ---- queues ------------------------------------------------------------------

async fn queue(state: S, ctx: Ctx, Path(name): Path<String>, RawQuery(q): RawQuery) -> Result<Response> {
    let params = Params::query(q);
    let limit = state.config.page_size.max(1);
    let d = state.admin.queue(&name, Page::new(params.offset(), limit)).await?;
    let enc = enc_path(&name);
    let mut body = format!(
        "<h1>Queue <code>{}</code></h1><p>{} jobs · latency {} · {}</p>",
        escape(&name),
        d.summary.length,
        d.summary
            .latency_seconds
            .map(seconds)
            .unwrap_or_else(|| "unknown".into()),
        if d.summary.paused { "paused" } else { "running" },
    );
    body.push_str(&if d.summary.paused {
        ctx.form(&format!("/queues/{enc}/resume"), &[], "Resume", None)
    } else {
        ctx.form(&format!("/queues/{enc}/pause"), &[], "Pause", None)
    });
    if !ctx.read_only {
        let _ = write!(
            body,
            "<form method=\"post\" class=\"inline\" action=\"{}\" data-confirm=\"Delete every job of this class?\">{}\
             <label>Class <input name=\"class\" required></label> <button type=\"submit\">Delete all of class</button></form>",
            ctx.link(&format!("/queues/{enc}/delete")),
            ctx.csrf_field()
        );
    }
    let rows: Vec<String> = d
        .jobs
        .items
        .iter()
        .map(|j| {
            let args = j.args.as_ref().map(json_text);
            let action = match (&j.class, &args) {
                (Some(class), Some(args)) => ctx.form(
                    &format!("/queues/{enc}/delete"),
                    &[("class", class), ("args", args)],
                    "Delete",
                    Some("Delete the jobs of this class with these arguments?"),
                ),
                _ => String::new(),
            };
            format!(
                "<tr><td class=\"num\">{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                j.position,
                opt(j.class.as_deref()),
                escape(args.as_deref().unwrap_or(&j.payload)),
                opt(j.error.as_deref()),
                action
            )
        })
        .collect();
    body.push_str(&table(
        &["#", "Class", "Arguments", "Problem", ""],
        &rows,
        "The queue is empty.",
    ));
    body.push_str(&pager(
        &ctx,
        &format!("/queues/{enc}?"),
        d.jobs.offset,
        limit,
        d.jobs.total,
    ));
    Ok(respond(&ctx, &params, "Queue", body, true))
}

async fn queue_delete(state: S, ctx: Ctx, Path(name): Path<String>, form: Bytes) -> Result<Response> {
    let form = Params::parse(&form);
    let class = form.required("class")?;
    let args = match form.get("args") {
        Some(text) => Some(
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| WebError::BadRequest(format!("the arguments are not JSON: {e}")))?,
        ),
        None => None,
    };
    let n = state.admin.delete_jobs(&name, class, args.as_ref()).await?;
    let back = format!("/queues/{}", enc_path(&name));
    Ok(done(
        &ctx,
        StatusCode::OK,
        &format!("Deleted {n} job(s) from {name}."),
        &back,
    ))
}

async fn queue_pause(state: S, ctx: Ctx, Path(name): Path<String>) -> Result<Response> {
    let newly = state.admin.pause(&name).await?;
    let message = if newly {
        format!("Paused {name}.")
    } else {
        format!("{name} was already paused.")
    };
    Ok(done(&ctx, StatusCode::OK, &message, "/"))
}

async fn queue_resume(state: S, ctx: Ctx, Path(name): Path<String>) -> Result<Response> {
    let was = state.admin.resume(&name).await?;
    let message = if was {
        format!("Resumed {name}.")
    } else {
        format!("{name} was not paused.")
    };
    Ok(done(&ctx, StatusCode::OK, &message, "/"))
}

// ---- delayed -----------------------------------------------------------------

async fn delayed(state: S, ctx: Ctx, RawQuery(q): RawQuery) -> Result<Response> {
    let params = Params::query(q);
    let limit = state.config.page_size.max(1);
    let page = state.admin.delayed(Page::new(params.offset(), limit)).await?;
    let mut body = String::from("<h1>Delayed jobs</h1>");
    let rows: Vec<String> = page
        .items
        .iter()
        .map(|j| {
            let ts = j.timestamp_ms.to_string();
            let fields = [("timestamp_ms", ts.as_str()), ("payload", j.payload.as_str())];
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}{}</td></tr>",
                escape(&time_ms(j.timestamp_ms)),
                opt(j.queue.as_deref()),
                opt(j.class.as_deref()),
                escape(&j.args.as_ref().map(json_text).unwrap_or_else(|| j.payload.clone())),
                ctx.form("/delayed/run", &fields, "Run now", None),
                ctx.form("/delayed/delete", &fields, "Delete", Some("Delete this delayed job?")),
            )
        })
        .collect();
    body.push_str(&table(
        &["Due", "Queue", "Class", "Arguments", ""],
        &rows,
        "Nothing is scheduled.",
    ));
    body.push_str(&pager(&ctx, "/delayed?", page.offset, limit, page.total));
    Ok(respond(&ctx, &params, "Delayed", body, true))
}

fn delayed_ref(form: &Params) -> Result<DelayedRef> {
    let timestamp_ms = form
        .required("timestamp_ms")?
        .parse()
        .map_err(|_| WebError::BadRequest("timestamp_ms is not a number".into()))?;
    // The payload's exact bytes: an empty one is still a payload.
    let payload = form
        .all("payload")
        .next()
        .ok_or_else(|| WebError::BadRequest("the form has no `payload`".into()))?
        .to_owned();
    Ok(DelayedRef { timestamp_ms, payload })
}

async fn delayed_run(state: S, ctx: Ctx, form: Bytes) -> Result<Response> {
    let r = delayed_ref(&Params::parse(&form))?;
    state.admin.run_delayed_now(&r).await?;
    Ok(done(
        &ctx,
        StatusCode::OK,
        "The job was moved to its queue.",
        "/delayed",
    ))
}

async fn delayed_delete(state: S, ctx: Ctx, form: Bytes) -> Result<Response> {
    let r = delayed_ref(&Params::parse(&form))?;
    state.admin.delete_delayed(&r).await?;
    Ok(done(&ctx, StatusCode::OK, "The delayed job was deleted.", "/delayed"))
}

// ---- failed ------------------------------------------------------------------

/// A time bound: RFC 3339, `YYYY-MM-DDTHH:MM[:SS]` (UTC, what a
/// `datetime-local` input sends), `YYYY-MM-DD`, or epoch ms.
fn parse_time(text: &str) -> Result<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(WebError::BadRequest(format!("cannot read the time {text:?}")))
}

fn filter_of(params: &Params) -> Result<FailedFilter> {
    Ok(FailedFilter {
        class: params.get("class").map(str::to_owned),
        queue: params.get("queue").map(str::to_owned),
        error: params.get("error").map(str::to_owned),
        since_ms: params.get("since").map(parse_time).transpose()?,
        until_ms: params.get("until").map(parse_time).transpose()?,
    })
}

/// The filter's fields as `(name, value)`, the set ones only.
fn filter_fields(params: &Params) -> Vec<(&'static str, String)> {
    ["class", "queue", "error", "since", "until"]
        .into_iter()
        .filter_map(|k| params.get(k).map(|v| (k, v.to_owned())))
        .collect()
}

fn filter_query(params: &Params) -> String {
    filter_fields(params)
        .iter()
        .map(|(k, v)| format!("{k}={}&", enc_query(v)))
        .collect()
}

fn failed_row(ctx: &Ctx, f: &FailedItem) -> String {
    let id = f.id.to_string();
    let check = if ctx.read_only {
        String::new()
    } else {
        format!(
            "<input type=\"checkbox\" name=\"id\" value=\"{}\" form=\"selection\" aria-label=\"select\">",
            escape(&id)
        )
    };
    format!(
        "<tr><td>{check}</td><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}: {}</td><td>{}{}</td></tr>",
        ctx.link(&format!("/failed/{}", enc_path(&id))),
        f.id.index(),
        opt(f.failed_at.as_deref()),
        opt(f.queue.as_deref()),
        opt(f.class.as_deref()),
        opt(f.exception.as_deref()),
        opt(f.error.as_deref()),
        ctx.form(&format!("/failed/{}/retry", enc_path(&id)), &[], "Retry", None),
        ctx.form(
            &format!("/failed/{}/remove", enc_path(&id)),
            &[],
            "Remove",
            Some("Remove this failed entry?")
        ),
    )
}

async fn failed(state: S, ctx: Ctx, RawQuery(q): RawQuery) -> Result<Response> {
    let params = Params::query(q);
    let filter = filter_of(&params)?;
    let limit = state.config.page_size.max(1);
    let page = state.admin.failed(&filter, Page::new(params.offset(), limit)).await?;
    let mut body = String::from("<h1>Failed jobs</h1>");
    let value = |k: &str| escape(params.get(k).unwrap_or(""));
    let _ = write!(
        body,
        "<form method=\"get\" class=\"filters\" action=\"{}\">\
         <label>Class <input name=\"class\" value=\"{}\"></label>\
         <label>Queue <input name=\"queue\" value=\"{}\"></label>\
         <label>Error text <input name=\"error\" value=\"{}\"></label>\
         <label>Since <input name=\"since\" value=\"{}\" placeholder=\"2024-01-31T12:00\"></label>\
         <label>Until <input name=\"until\" value=\"{}\" placeholder=\"UTC\"></label>\
         <button type=\"submit\">Search</button></form>",
        ctx.link("/failed"),
        value("class"),
        value("queue"),
        value("error"),
        value("since"),
        value("until"),
    );
    let fq = filter_query(&params);
    let _ = write!(body, "<p><b id=\"matching\">{}</b> matching", page.total);
    if !ctx.read_only && page.total > 0 {
        let _ = write!(
            body,
            " · <a href=\"{}\">Retry all matching…</a> · <a href=\"{}\">Remove all matching…</a>",
            ctx.link(&format!("/failed/bulk?action=retry&{fq}")),
            ctx.link(&format!("/failed/bulk?action=remove&{fq}")),
        );
    }
    body.push_str("</p>");
    if !ctx.read_only && !page.items.is_empty() {
        let _ = write!(
            body,
            "<form method=\"post\" id=\"selection\" class=\"inline\" action=\"{}\">{}\
             <button type=\"submit\" name=\"action\" value=\"retry\">Retry selected</button> \
             <button type=\"submit\" name=\"action\" value=\"remove\">Remove selected</button></form>",
            ctx.link("/failed/selected"),
            ctx.csrf_field()
        );
    }
    let rows: Vec<String> = page.items.iter().map(|f| failed_row(&ctx, f)).collect();
    body.push_str(&table(
        &["", "#", "Failed at", "Queue", "Class", "Error", ""],
        &rows,
        "No failed jobs match.",
    ));
    body.push_str(&pager(&ctx, &format!("/failed?{fq}"), page.offset, limit, page.total));
    Ok(respond(&ctx, &params, "Failed", body, true))
}

fn parse_id(text: &str) -> Result<FailedId> {
    text.parse::<FailedId>().map_err(WebError::from)
}

async fn failed_detail(state: S, ctx: Ctx, Path(id): Path<String>, RawQuery(q): RawQuery) -> Result<Response> {
    let params = Params::query(q);
    let id = parse_id(&id)?;
    let f = state.admin.failed_entry(&id).await?;
    let text = id.to_string();
    let args = f
        .args
        .as_ref()
        .map(|a| serde_json::to_string_pretty(a).unwrap_or_default());
    let mut body = format!("<h1>Failed job #{}</h1><dl class=\"detail\">", id.index());
    for (label, value) in [
        ("Class", f.class.clone()),
        ("Queue", f.queue.clone()),
        ("Exception", f.exception.clone()),
        ("Error", f.error.clone()),
        ("Worker", f.worker.clone()),
        ("Failed at", f.failed_at.clone()),
        ("Id", Some(text.clone())),
    ] {
        let _ = write!(body, "<dt>{label}</dt><dd>{}</dd>", opt(value.as_deref()));
    }
    let _ = write!(
        body,
        "</dl><h2>Arguments</h2><pre>{}</pre><h2>Backtrace</h2><pre>{}</pre><h2>Payload</h2><pre>{}</pre>",
        opt(args.as_deref()),
        escape(&f.backtrace.join("\n")),
        opt(f.payload.as_deref()),
    );
    body.push_str(&ctx.form(&format!("/failed/{}/retry", enc_path(&text)), &[], "Retry", None));
    body.push_str(&ctx.form(
        &format!("/failed/{}/remove", enc_path(&text)),
        &[],
        "Remove",
        Some("Remove this failed entry?"),
    ));
    Ok(respond(&ctx, &params, "Failed job", body, false))
}

async fn failed_retry(state: S, ctx: Ctx, Path(id): Path<String>) -> Result<Response> {
    let id = parse_id(&id)?;
    state.admin.retry_failed(&id).await?;
    Ok(done(&ctx, StatusCode::OK, "The job was enqueued again.", "/failed"))
}

async fn failed_remove(state: S, ctx: Ctx, Path(id): Path<String>) -> Result<Response> {
    let id = parse_id(&id)?;
    state.admin.remove_failed(&id).await?;
    Ok(done(&ctx, StatusCode::OK, "The failed entry was removed.", "/failed"))
}

/// Whether the form's `action` asks to retry (else to remove).
fn is_retry(params: &Params) -> Result<bool> {
    match params.get("action") {
        Some("retry") => Ok(true),
        Some("remove") => Ok(false),
        _ => Err(WebError::BadRequest("the action must be retry or remove".into())),
    }
}

fn outcome_page(ctx: &Ctx, retry: bool, out: BulkOutcome, back: &str) -> Response {
    let verb = if retry { "Retried" } else { "Removed" };
    let mut message = format!("{verb} {}.", out.done);
    if out.stale > 0 {
        let _ = write!(
            message,
            " {} entr{} moved since the page was loaded and {} left alone; reload.",
            out.stale,
            if out.stale == 1 { "y" } else { "ies" },
            if out.stale == 1 { "was" } else { "were" }
        );
    }
    if out.failed > 0 {
        let _ = write!(
            message,
            " {} could not be retried (no queue or bad payload).",
            out.failed
        );
    }
    let status = if out.done == 0 && out.stale > 0 {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    done(ctx, status, &message, back)
}

async fn failed_selected(state: S, ctx: Ctx, form: Bytes) -> Result<Response> {
    let form = Params::parse(&form);
    let retry = is_retry(&form)?;
    let ids = form.all("id").map(parse_id).collect::<Result<Vec<_>>>()?;
    if ids.is_empty() {
        return Err(WebError::BadRequest("no entry was selected".into()));
    }
    let out = if retry {
        state.admin.retry_failed_many(&ids).await?
    } else {
        state.admin.remove_failed_many(&ids).await?
    };
    Ok(outcome_page(&ctx, retry, out, "/failed"))
}

/// The confirmation step of a bulk action: the matching count, then a POST.
async fn failed_bulk_confirm(state: S, ctx: Ctx, RawQuery(q): RawQuery) -> Result<Response> {
    let params = Params::query(q);
    let retry = is_retry(&params)?;
    let filter = filter_of(&params)?;
    let count = state.admin.count_failed_matching(&filter).await?;
    let verb = if retry { "Retry" } else { "Remove" };
    let described: Vec<String> = filter_fields(&params)
        .iter()
        .map(|(k, v)| format!("{k} = <code>{}</code>", escape(v)))
        .collect();
    let mut body = format!(
        "<h1>{verb} failed jobs</h1><p>{verb} <b id=\"count\">{count}</b> failed entr{} matching {}?</p>",
        if count == 1 { "y" } else { "ies" },
        if described.is_empty() {
            "no filter (all of them)".to_owned()
        } else {
            described.join(", ")
        }
    );
    let fields = filter_fields(&params);
    let mut hidden: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    hidden.push(("action", if retry { "retry" } else { "remove" }));
    body.push_str(&ctx.form("/failed/bulk", &hidden, &format!("{verb} {count}"), None));
    let _ = write!(
        body,
        " <a href=\"{}\">Cancel</a>",
        ctx.link(&format!("/failed?{}", filter_query(&params)))
    );
    Ok(respond(&ctx, &params, "Confirm", body, false))
}

async fn failed_bulk(state: S, ctx: Ctx, form: Bytes) -> Result<Response> {
    let form = Params::parse(&form);
    let retry = is_retry(&form)?;
    let filter = filter_of(&form)?;
    let ignore = |_: resq_admin::BulkProgress| {};
    let out = if retry {
        state.admin.retry_failed_matching(&filter, &ignore).await?
    } else {
        state.admin.remove_failed_matching(&filter, &ignore).await?
    };
    Ok(outcome_page(&ctx, retry, out, "/failed"))
}

// ---- workers -------------------------------------------------------------------

async fn workers(state: S, ctx: Ctx, RawQuery(q): RawQuery) -> Result<Response> {
    let params = Params::query(q);
    let list = state.admin.workers().await?;
    let mut body = String::from("<h1>Workers</h1>");
    let stale = state.config.stale_after.as_secs();
    body.push_str(&ctx.form(
        "/workers/clean-stale",
        &[],
        &format!("Clean workers without a ping for {stale} s"),
        Some("Clean every stale worker? Their jobs go to the failed list."),
    ));
    if !ctx.read_only {
        let _ = write!(
            body,
            "<form method=\"post\" class=\"inline\" action=\"{}\" data-confirm=\"Cancel every running, queued and delayed job of this class?\">{}\
             <label>Class <input name=\"class\" required></label> \
             <label>Args <input name=\"args\" placeholder=\"JSON array; empty: any\"></label> \
             <button type=\"submit\">Cancel jobs of class</button></form>",
            ctx.link("/jobs/cancel-class"),
            ctx.csrf_field()
        );
    }
    let rows: Vec<String> = list
        .iter()
        .map(|w| {
            let job = match &w.job {
                Some(j) => format!(
                    "{} on {} since {}",
                    opt(j.class.as_deref()),
                    escape(&j.queue),
                    escape(&j.run_at)
                ),
                None => "—".to_owned(),
            };
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&w.name),
                escape(&w.queues),
                if w.busy { "busy" } else { "idle" },
                job,
                w.started_at_ms
                    .map(time_ms)
                    .map(|t| escape(&t))
                    .unwrap_or_else(|| "—".into()),
                w.ping_age_seconds.map(seconds).unwrap_or_else(|| "—".into()),
                worker_actions(&ctx, w),
            )
        })
        .collect();
    body.push_str(&table(
        &["Name", "Queues", "State", "Job", "Started", "Ping age", ""],
        &rows,
        "No workers are registered.",
    ));
    Ok(respond(&ctx, &params, "Workers", body, true))
}

/// A worker row's buttons: stop its job (when busy), remove the worker.
fn worker_actions(ctx: &Ctx, w: &resq_admin::WorkerInfo) -> String {
    let mut out = String::new();
    if let Some(job) = &w.job {
        out.push_str(&ctx.form(
            "/jobs/cancel",
            &[("id", &job.id.to_string())],
            "Cancel job",
            Some("Stop this job? It counts as cancelled, not failed, and is not retried."),
        ));
    }
    out.push_str(&ctx.form(
        "/workers/clean",
        &[("name", &w.name)],
        "Clean",
        Some("Remove this worker? Its job goes to the failed list."),
    ));
    out
}

/// What a cancel did, in words.
fn cancel_summary(report: &resq_core::CancelReport) -> String {
    format!(
        "Cancelled {} job(s): {} running (asked to stop), {} queued, {} delayed.",
        report.total(),
        report.running,
        report.queued,
        report.delayed
    )
}

async fn job_cancel(state: S, ctx: Ctx, form: Bytes) -> Result<Response> {
    let form = Params::parse(&form);
    let id: resq_core::JobId = form.required("id")?.parse()?;
    // A job that finished or moved since the page was loaded is a
    // `StaleJob` error: 409 with the usual "reload" text.
    let report = state.admin.cancel(&id).await?;
    Ok(done(&ctx, StatusCode::OK, &cancel_summary(&report), "/workers"))
}

async fn jobs_cancel_class(state: S, ctx: Ctx, form: Bytes) -> Result<Response> {
    let form = Params::parse(&form);
    let class = form.required("class")?;
    let args = match form.get("args").map(str::trim).filter(|a| !a.is_empty()) {
        None => None,
        Some(text) => Some(
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| WebError::BadRequest(format!("args is not JSON: {e}")))?,
        ),
    };
    let report = state.admin.cancel_jobs(class, args.as_ref()).await?;
    let status = if report.total() == 0 {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    Ok(done(&ctx, status, &cancel_summary(&report), "/workers"))
}

async fn worker_clean(state: S, ctx: Ctx, form: Bytes) -> Result<Response> {
    let form = Params::parse(&form);
    let name = form.required("name")?;
    let (status, message) = match state.admin.clean_worker(name).await? {
        Some(_) => (StatusCode::OK, format!("Cleaned {name}.")),
        None => (StatusCode::CONFLICT, format!("{name} was not found. {STALE}")),
    };
    Ok(done(&ctx, status, &message, "/workers"))
}

async fn workers_clean_stale(state: S, ctx: Ctx) -> Result<Response> {
    let cleaned = state.admin.clean_stale_workers(state.config.stale_after).await?;
    Ok(done(
        &ctx,
        StatusCode::OK,
        &format!("Cleaned {} stale worker(s).", cleaned.len()),
        "/workers",
    ))
}

// ---- locks ---------------------------------------------------------------------

async fn locks(state: S, ctx: Ctx, RawQuery(q): RawQuery) -> Result<Response> {
    let params = Params::query(q);
    let list = state.admin.locks().await?;
    let rows: Vec<String> = list
        .iter()
        .map(|l| {
            format!(
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                escape(&l.key),
                escape(&l.value),
                l.ttl_ms
                    .map(|t| seconds(t as f64 / 1000.0))
                    .unwrap_or_else(|| "never expires".into()),
                ctx.form("/locks/delete", &[("key", &l.key)], "Delete", Some("Delete this lock?")),
            )
        })
        .collect();
    let body = format!(
        "<h1>Locks</h1>{}",
        table(&["Key", "Value", "Expires in", ""], &rows, "No locks are held.")
    );
    Ok(respond(&ctx, &params, "Locks", body, true))
}

async fn lock_delete(state: S, ctx: Ctx, form: Bytes) -> Result<Response> {
    let form = Params::parse(&form);
    let key = form.required("key")?;
    let (status, message) = if state.admin.delete_lock(key).await? {
        (StatusCode::OK, format!("Deleted lock {key}."))
    } else {
        (
            StatusCode::CONFLICT,
            format!("The lock {key} no longer exists. {STALE}"),
        )
    };
    Ok(done(&ctx, status, &message, "/locks"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_times() {
        assert_eq!(parse_time("1700000000000").ok(), Some(1_700_000_000_000));
        assert_eq!(parse_time("2024-01-01T00:00:00Z").ok(), Some(1_704_067_200_000));
        assert_eq!(parse_time("2024-01-01T00:00").ok(), Some(1_704_067_200_000));
        assert_eq!(parse_time("2024-01-01").ok(), Some(1_704_067_200_000));
        assert!(parse_time("soon").is_err());
    }
}
