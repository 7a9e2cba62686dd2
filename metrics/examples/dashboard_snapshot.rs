//! Renders `ops/grafana/resq-dashboard.svg`: a picture of the dashboard's
//! main panels drawn from real scrapes, for the README (no Grafana needed).
//!
//! It runs a small cluster in this process on the memory backend (a
//! scheduler, two workers of four slots with `Metrics` as their observer,
//! a producer whose rate rises and falls, tasks that sometimes fail or are
//! retried), scrapes `Exporter::render()` once a second for `SECONDS`
//! seconds, and draws the same queries the Grafana dashboard makes: queue
//! length, job rate by outcome, job duration p50/p95 from the histogram
//! buckets, worker slots busy/idle, failed jobs and the scheduler leader.
//!
//! `cargo run -p resq-metrics --example dashboard_snapshot -- [OUT.svg]`,
//! then e.g. `rsvg-convert OUT.svg -o OUT.png`.

use resq_admin::Admin;
use resq_core::plugins::Retry;
use resq_core::{
    CancellationToken, JobContext, Queue, Scheduler, SchedulerConfig, TaskDef, TaskError, Tasks, Worker, WorkerConfig,
};
use resq_metrics::{Collector, Exporter, Metrics};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

const SECONDS: usize = 60;

/// One scrape: every sample, by series name and sorted labels.
type Scrape = BTreeMap<(String, Vec<(String, String)>), f64>;

fn parse(text: &str) -> Scrape {
    let mut out = Scrape::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let mut labels: Vec<(String, String)> = rest
                    .trim_end_matches('}')
                    .split("\",")
                    .filter_map(|pair| pair.split_once("=\""))
                    .map(|(k, v)| (k.to_owned(), v.trim_end_matches('"').to_owned()))
                    .collect();
                labels.sort();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), Vec::new()),
        };
        out.insert((name, labels), value);
    }
    out
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Sum of the samples of `name`, grouped by label `by`.
fn sum_by(scrape: &Scrape, name: &str, by: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for ((n, labels), v) in scrape {
        if n == name {
            *out.entry(label(labels, by).unwrap_or("").to_owned()).or_insert(0.0) += v;
        }
    }
    out
}

/// `histogram_quantile(q, sum by (le) (increase(name_bucket[window])))`.
fn quantile(now: &Scrape, before: &Scrape, name: &str, q: f64) -> Option<f64> {
    let bucket = format!("{name}_bucket");
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for scrape_and_sign in [(now, 1.0), (before, -1.0)] {
        for ((n, labels), v) in scrape_and_sign.0 {
            if *n != bucket {
                continue;
            }
            let le = match label(labels, "le") {
                Some("+Inf") => f64::INFINITY,
                Some(le) => le.parse().ok()?,
                None => continue,
            };
            let e = by_le.entry(le.to_bits()).or_insert((le, 0.0));
            e.1 += scrape_and_sign.1 * v;
        }
    }
    let mut buckets: Vec<(f64, f64)> = by_le.into_values().collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let span = count - lower.1;
            let within = if span > 0.0 { (rank - lower.1) / span } else { 1.0 };
            return Some(lower.0 + (le - lower.0) * within);
        }
        lower = (le, count);
    }
    None
}

/// One chart: named series over time.
struct Panel {
    title: &'static str,
    unit: &'static str,
    series: BTreeMap<String, Vec<Option<f64>>>,
}

const COLORS: [&str; 6] = ["#73bf69", "#f2495c", "#fade2a", "#5794f2", "#b877d9", "#ff9830"];

fn draw(panels: &[Panel], samples: usize) -> String {
    let (w, h, cols) = (1280.0, 860.0, 2.0);
    let rows = (panels.len() as f64 / cols).ceil();
    let (pw, ph) = (w / cols, (h - 40.0) / rows);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="DejaVu Sans, sans-serif">
<rect width="100%" height="100%" fill="#111217"/>
<text x="16" y="26" fill="#d8d9da" font-size="17">resq — rendered from {samples} real scrapes of resq_metrics::Exporter::render() (memory backend, 2 workers × 4 slots)</text>
"##
    );
    for (i, p) in panels.iter().enumerate() {
        let x0 = (i as f64 % cols) * pw + 8.0;
        let y0 = 40.0 + (i as f64 / cols).floor() * ph + 4.0;
        let (iw, ih) = (pw - 16.0, ph - 12.0);
        let _ = write!(
            svg,
            r##"<rect x="{x0}" y="{y0}" width="{iw}" height="{ih}" fill="#181b1f" stroke="#2c3235" rx="3"/>
<text x="{}" y="{}" fill="#d8d9da" font-size="14" font-weight="bold">{}</text>
"##,
            x0 + 10.0,
            y0 + 20.0,
            p.title
        );
        let (cx, cy, cw, chh) = (x0 + 56.0, y0 + 34.0, iw - 70.0, ih - 80.0);
        let max = p.series.values().flatten().flatten().fold(0.0_f64, |a, b| a.max(*b));
        let top = if max <= 0.0 { 1.0 } else { max * 1.1 };
        for k in 0..=4 {
            let y = cy + chh - chh * f64::from(k) / 4.0;
            let v = top * f64::from(k) / 4.0;
            let _ = writeln!(
                svg,
                r##"<line x1="{cx}" y1="{y}" x2="{}" y2="{y}" stroke="#2c3235"/><text x="{}" y="{}" fill="#8e8e8e" font-size="11" text-anchor="end">{}</text>"##,
                cx + cw,
                cx - 6.0,
                y + 4.0,
                fmt_value(v, p.unit)
            );
        }
        let _ = writeln!(
            svg,
            r##"<text x="{cx}" y="{}" fill="#8e8e8e" font-size="11">-{}s</text><text x="{}" y="{}" fill="#8e8e8e" font-size="11" text-anchor="end">now</text>"##,
            cy + chh + 14.0,
            samples,
            cx + cw,
            cy + chh + 14.0
        );
        for (s, (name, values)) in p.series.iter().enumerate() {
            let color = color_for(name, s);
            let n = values.len().max(2) - 1;
            let mut path = String::new();
            let mut pen_down = false;
            for (t, v) in values.iter().enumerate() {
                match v {
                    Some(v) => {
                        let x = cx + cw * t as f64 / n as f64;
                        let y = cy + chh - chh * (v / top);
                        let _ = write!(path, "{}{x:.1},{y:.1} ", if pen_down { "L" } else { "M" });
                        pen_down = true;
                    }
                    None => pen_down = false,
                }
            }
            let _ = write!(
                svg,
                r##"<path d="{path}" fill="none" stroke="{color}" stroke-width="2"/>
<rect x="{}" y="{}" width="12" height="4" fill="{color}"/><text x="{}" y="{}" fill="#d8d9da" font-size="12">{name}</text>
"##,
                cx + (s as f64) * 150.0,
                cy + chh + 26.0,
                cx + (s as f64) * 150.0 + 16.0,
                cy + chh + 31.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "s" if v < 1.0 => format!("{:.0} ms", v * 1000.0),
        "s" => format!("{v:.1} s"),
        "/s" => format!("{v:.0}/s"),
        _ if v != 0.0 && v < 10.0 => format!("{v:.1}"),
        _ => format!("{v:.0}"),
    }
}

/// Grafana's habits: green for good, red for bad, yellow for in between.
fn color_for(name: &str, index: usize) -> &'static str {
    match name {
        "success" | "busy" | "p50" | "leader present" | "delayed" => "#73bf69",
        "failure" | "failed" | "p95" => "#f2495c",
        "retried" => "#fade2a",
        "skipped" | "idle" => "#5794f2",
        _ => COLORS[index % COLORS.len()],
    }
}

fn tasks() -> Result<Arc<Tasks>, resq_core::Error> {
    let mut tasks = Tasks::new();
    tasks.define(TaskDef::from_fn(
        "resize",
        |(n,): (u64,), _ctx: JobContext| async move {
            // 10 to 150 ms, varying with the job.
            tokio::time::sleep(Duration::from_millis(10 + (n * 37) % 140)).await;
            Ok::<_, TaskError>(())
        },
    ))?;
    tasks.define(TaskDef::from_fn("email", |(n,): (u64,), _ctx: JobContext| async move {
        tokio::time::sleep(Duration::from_millis(5 + n % 10)).await;
        if n % 9 == 0 {
            return Err(TaskError::new("mailbox unavailable"));
        }
        Ok(())
    }))?;
    tasks.define(
        TaskDef::from_fn("report", |(n,): (u64,), _ctx: JobContext| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            if n % 4 == 0 {
                return Err(TaskError::new("upstream timeout"));
            }
            Ok(())
        })
        .plugin(Retry::new().retry_limit(2).retry_delay(Duration::from_secs(2))),
    )?;
    Ok(Arc::new(tasks))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ops/grafana/resq-dashboard.svg".to_owned());
    let backend: Arc<dyn resq_core::Backend> = Arc::new(resq_memory::MemoryBackend::new());
    let tasks = tasks()?;
    let client = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    let metrics = Metrics::new();
    let collector = Collector::with_interval(Admin::new(Arc::clone(&backend)), Duration::from_secs(1));
    let exporter = Exporter::builder().metrics(&metrics).collector(&collector).build();
    let stop = CancellationToken::new();

    let scheduler = Scheduler::new(
        Arc::clone(&backend),
        SchedulerConfig {
            poll_interval: Duration::from_millis(200),
            ..SchedulerConfig::default()
        },
    )?
    .with_tasks(Arc::clone(&tasks));
    let mut runs = Vec::new();
    {
        let stop = stop.clone();
        runs.push(tokio::spawn(async move { scheduler.run_until(stop).await }));
    }
    for _ in 0..2 {
        let mut config = WorkerConfig::for_queues(["images", "mail", "reports"]);
        config.concurrency = 4;
        config.poll_interval = Duration::from_millis(100);
        config.observer = Some(metrics.observer());
        let worker = Worker::new(Arc::clone(&backend), Arc::clone(&tasks), config);
        let stop = stop.clone();
        runs.push(tokio::spawn(async move { worker.run_until(stop).await }));
    }
    // The producer: a rate that rises past what the workers take, then falls.
    let producer = {
        let client = client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let started = tokio::time::Instant::now();
            while !stop.is_cancelled() {
                tick.tick().await;
                let t = started.elapsed().as_secs_f64() / SECONDS as f64;
                let per_tick = (12.0 * (std::f64::consts::PI * t).sin().max(0.0)) as u64 + 1;
                for _ in 0..per_tick {
                    n += 1;
                    let (queue, class) = match n % 5 {
                        0 | 1 => ("images", "resize"),
                        2 | 3 => ("mail", "email"),
                        _ => ("reports", "report"),
                    };
                    let _ = client.enqueue(queue, class, (n,)).await;
                }
            }
        })
    };

    let mut scrapes = Vec::new();
    for _ in 0..SECONDS {
        tokio::time::sleep(Duration::from_secs(1)).await;
        collector.collect().await?;
        scrapes.push(parse(&exporter.render()));
    }
    stop.cancel();
    let _ = producer.await;
    for run in runs {
        run.await??;
    }

    let mut panels = vec![
        Panel {
            title: "Queue length",
            unit: "",
            series: BTreeMap::new(),
        },
        Panel {
            title: "Job rate by outcome",
            unit: "/s",
            series: BTreeMap::new(),
        },
        Panel {
            title: "Job duration p50 / p95",
            unit: "s",
            series: BTreeMap::new(),
        },
        Panel {
            title: "Worker slots busy / idle",
            unit: "",
            series: BTreeMap::new(),
        },
        Panel {
            title: "Failed jobs (failed list) and delayed jobs",
            unit: "",
            series: BTreeMap::new(),
        },
        Panel {
            title: "Scheduler leader",
            unit: "",
            series: BTreeMap::new(),
        },
    ];
    let push = |panel: &mut Panel, name: &str, t: usize, v: Option<f64>| {
        let values = panel
            .series
            .entry(name.to_owned())
            .or_insert_with(|| vec![None; SECONDS]);
        values[t] = v;
    };
    for (t, now) in scrapes.iter().enumerate() {
        for (queue, v) in sum_by(now, "resq_queue_length", "queue") {
            push(&mut panels[0], &queue, t, Some(v));
        }
        if t > 0 {
            let before = &scrapes[t - 1];
            let prev = sum_by(before, "resq_jobs_total", "outcome");
            for (outcome, v) in sum_by(now, "resq_jobs_total", "outcome") {
                push(
                    &mut panels[1],
                    &outcome,
                    t,
                    Some(v - prev.get(&outcome).copied().unwrap_or(0.0)),
                );
            }
        }
        let window = &scrapes[t.saturating_sub(5)];
        for (name, q) in [("p50", 0.5), ("p95", 0.95)] {
            push(
                &mut panels[2],
                name,
                t,
                quantile(now, window, "resq_job_duration_seconds", q),
            );
        }
        for (state, v) in sum_by(now, "resq_worker_slots", "state") {
            push(&mut panels[3], &state, t, Some(v));
        }
        let one = |name: &str| now.get(&(name.to_owned(), Vec::new())).copied();
        push(&mut panels[4], "failed", t, one("resq_failed_jobs"));
        push(&mut panels[4], "delayed", t, one("resq_delayed_jobs"));
        push(&mut panels[5], "leader present", t, one("resq_scheduler_leader"));
    }
    std::fs::write(&out, draw(&panels, scrapes.len()))?;
    println!("wrote {out} from {} scrapes", scrapes.len());
    Ok(())
}
