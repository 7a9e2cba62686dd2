//! The dashboard at scale: response times of every resq-web page, and of
//! failed-job searches, over a Redis namespace holding a million failed
//! entries and a million queued jobs.
//!
//! [`fill`] writes the data into a fresh namespace: the queued jobs through
//! the backend's own batch push (so their enqueue-time records are resq's),
//! the failed entries with pipelined `RPUSH`es of Resque-shaped entries
//! spread over classes, queues, error texts and ten days of `failed_at`,
//! plus delayed jobs, workers (half of them busy) and locks. The
//! `dashboard` binary serves the dashboard on a loopback socket, and
//! [`time_path`] times plain HTTP/1.1 requests to it, one at a time (each a
//! new connection, as the figure is what one operator's browser waits
//! for), after a warm-up.

use resq_admin::{Admin, FailedFilter, Page};
use resq_core::backend::QueuedJob;
use resq_core::{Backend, Queue, WorkerId};
use resq_redis::RedisBackend;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A bench step's failure, as text for the report.
pub type Result<T> = std::result::Result<T, String>;

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// What [`fill`] writes.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Failed entries.
    pub failed: u64,
    /// Queued jobs (on one queue: the deepest pages are the slowest).
    pub queued: u64,
    /// Delayed jobs (spread over a thousand one-second buckets).
    pub delayed: u64,
    /// Registered workers; every other one is busy.
    pub workers: u64,
}

/// The queue holding the queued jobs.
pub const BIG_QUEUE: &str = "bulk";

/// Classes of the failed entries; entry `i` has `CLASSES[i % 10]`.
const CLASSES: [&str; 10] = [
    "SendEmail",
    "ResizeImage",
    "ChargeCard",
    "SyncInventory",
    "BuildReport",
    "IndexDocument",
    "PushNotification",
    "ExportCsv",
    "RefreshToken",
    "RareReconcile",
];

/// A class that matches one failed entry in a thousand (1,000 of 1,000,000).
pub const RARE_CLASS: &str = "RareReconcile";

/// The failed entry at position `i`: Resque's shape, with a `failed_at`
/// in the ten days before `now_ms` and, once in a thousand, the class
/// [`RARE_CLASS`] and an error containing `deadlock detected`.
fn failed_entry(i: u64, now_ms: i64) -> String {
    let rare = i % 1000 == 999;
    let class = if rare { RARE_CLASS } else { CLASSES[(i % 9) as usize] };
    let queue = ["default", "mail", "media", "billing", "reports"][(i % 5) as usize];
    let error = if rare {
        format!("PG::TRDeadlockDetected: deadlock detected on row {i}")
    } else {
        format!(
            "Net::ReadTimeout: timed out after {} ms (attempt {})",
            1000 + i % 4000,
            i % 7
        )
    };
    // Spread over ten days, oldest first, as a real list grows.
    let ten_days = 10 * 86_400_000i64;
    let at = now_ms - ten_days + (i as i64 % 1_000_000) * (ten_days / 1_000_000);
    serde_json::json!({
        "failed_at": resq_core::time::iso8601(at),
        "payload": {"class": class, "queue": queue, "args": [i, {"user_id": i * 7, "note": "bulk fill"}]},
        "exception": error.split(':').next().unwrap_or("RuntimeError"),
        "error": error,
        "backtrace": ["app/jobs/worker.rb:12:in `perform'", "lib/resque/job.rb:166:in `perform'"],
        "worker": format!("host-{}:{}:{}", i % 20, 1000 + i % 50, queue),
        "queue": queue,
    })
    .to_string()
}

/// Writes `scale` into `backend`'s namespace (which should be empty).
pub async fn fill(backend: &Arc<RedisBackend>, scale: Scale, mut progress: impl FnMut(&str)) -> Result<()> {
    let dynamic: Arc<dyn Backend> = backend.clone();
    let now = resq_core::time::now_ms();

    // Queued jobs: the backend's batch push, 10,000 at a time.
    let mut pushed = 0u64;
    while pushed < scale.queued {
        let n = (scale.queued - pushed).min(10_000);
        let jobs: Vec<QueuedJob> = (pushed..pushed + n)
            .map(|i| {
                let args = [serde_json::json!(i), serde_json::json!("order")];
                QueuedJob {
                    queue: BIG_QUEUE.to_owned(),
                    payload: resq_core::job::encode_payload(BIG_QUEUE, "ProcessOrder", &args),
                }
            })
            .collect();
        dynamic.push_batch(&jobs).await.map_err(text)?;
        pushed += n;
        if pushed.is_multiple_of(200_000) {
            progress(&format!("queued {pushed}"));
        }
    }

    // Failed entries: pipelined RPUSHes of 1,000 entries.
    let client = redis::Client::open(backend.config().url.as_str()).map_err(text)?;
    let mut conn = client.get_multiplexed_async_connection().await.map_err(text)?;
    let key = format!("{}:failed", backend.config().namespace);
    let mut written = 0u64;
    while written < scale.failed {
        let n = (scale.failed - written).min(1_000);
        let entries: Vec<String> = (written..written + n).map(|i| failed_entry(i, now)).collect();
        redis::cmd("RPUSH")
            .arg(&key)
            .arg(&entries)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(text)?;
        written += n;
        if written.is_multiple_of(200_000) {
            progress(&format!("failed {written}"));
        }
    }

    // Delayed jobs over a thousand buckets, an hour from now.
    let queue = Queue::new(Arc::clone(&dynamic));
    for i in 0..scale.delayed {
        let at_ms = now + 3_600_000 + (i % 1000) as i64 * 1000;
        queue.enqueue_at(at_ms, "mail", "Later", (i,)).await.map_err(text)?;
    }

    // Workers, every other one busy.
    for i in 0..scale.workers {
        let queues = ["mail".to_owned(), BIG_QUEUE.to_owned()];
        let worker = WorkerId::new(format!("scale-host-{i}:{}", 4000 + i), &queues);
        dynamic.register_worker(&worker, now).await.map_err(text)?;
        dynamic.ping_worker(&worker, now).await.map_err(text)?;
        if i % 2 == 0 {
            let run_at = resq_core::time::js_date_string(now);
            let claimed = dynamic.claim(&worker, &queues[1..], &run_at).await.map_err(text)?;
            if claimed.is_none() {
                return Err(format!("no job for busy worker {i}"));
            }
        }
    }
    for i in 0..20 {
        dynamic
            .acquire_lock(&format!("lock:Scale:{i}"), "holder", Duration::from_secs(3600))
            .await
            .map_err(text)?;
    }
    progress("filled");
    Ok(())
}

/// Response times of one URL.
#[derive(Clone, Debug)]
pub struct Timing {
    /// What was requested.
    pub path: String,
    /// Requests timed.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// Slowest.
    pub max: Duration,
    /// The last response body.
    pub body: String,
}

/// One `GET path` over a new HTTP/1.1 connection; its status and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header"))?;
    let status = std::str::from_utf8(&response[..head_end])
        .ok()
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    Ok((status, String::from_utf8_lossy(&response[head_end + 4..]).into_owned()))
}

/// Times `n` requests of `path` after `warm` untimed ones; an error unless
/// every answer is 200.
pub async fn time_path(addr: std::net::SocketAddr, path: &str, warm: usize, n: usize) -> Result<Timing> {
    let mut samples = Vec::with_capacity(n);
    let mut last = String::new();
    for i in 0..warm + n {
        let start = Instant::now();
        let (status, body) = get(addr, path).await.map_err(|e| format!("GET {path}: {e}"))?;
        let took = start.elapsed();
        if status != 200 {
            return Err(format!("GET {path} answered {status}"));
        }
        last = body;
        if i >= warm {
            samples.push(took);
        }
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    Ok(Timing {
        path: path.to_owned(),
        n,
        p50: at(0.50),
        p95: at(0.95),
        max: samples[samples.len() - 1],
        body: last,
    })
}

/// The pages to time: every page of the dashboard, first and deep pages of
/// the long lists, a failed entry's detail, and the live-refresh fragments.
pub async fn pages(admin: &Admin, scale: Scale) -> Result<Vec<String>> {
    let middle = admin
        .failed(&FailedFilter::default(), Page::new(scale.failed / 2, 1))
        .await
        .map_err(text)?;
    let detail = middle
        .items
        .first()
        .map(|item| format!("/failed/{}", item.id))
        .ok_or_else(|| "no failed entry in the middle of the list".to_owned())?;
    Ok(vec![
        "/".into(),
        "/?partial=1".into(),
        "/overview.json".into(),
        format!("/queues/{BIG_QUEUE}"),
        format!("/queues/{BIG_QUEUE}?offset={}", scale.queued / 2),
        format!("/queues/{BIG_QUEUE}?offset={}", scale.queued.saturating_sub(50)),
        "/delayed".into(),
        "/failed".into(),
        "/failed?partial=1".into(),
        format!("/failed?offset={}", scale.failed / 2),
        format!("/failed?offset={}", scale.failed.saturating_sub(50)),
        detail,
        "/workers".into(),
        "/locks".into(),
    ])
}

/// The failed-job searches to time: a rare class, a common class, a queue,
/// error text, a one-day window, and the bulk-retry confirmation page
/// (which counts the matches before the operator confirms), each with the
/// number of matches [`fill`] wrote for it (the confirmation page shows it).
pub fn searches() -> Vec<String> {
    let day_ago = resq_core::time::now_ms() - 86_400_000;
    vec![
        format!("/failed?class={RARE_CLASS}"),
        "/failed?class=SendEmail".into(),
        "/failed?queue=billing".into(),
        "/failed?error=deadlock".into(),
        format!("/failed?since={day_ago}"),
        format!(
            "/failed?class={RARE_CLASS}&error=deadlock&since={}",
            day_ago - 9 * 86_400_000
        ),
        format!("/failed/bulk?action=retry&class={RARE_CLASS}"),
    ]
}

/// How many entries of a [`fill`] with `failed` entries have [`RARE_CLASS`].
pub fn rare_entries(failed: u64) -> u64 {
    failed / 1000
}

/// The match count a bulk-confirmation page shows (`<b id="count">N</b>`).
pub fn confirmed_count(body: &str) -> Option<u64> {
    let start = body.find("<b id=\"count\">")? + "<b id=\"count\">".len();
    let len = body[start..].find('<')?;
    body[start..start + len].parse().ok()
}
