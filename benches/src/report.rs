//! Renders the harness's figures as the Markdown tables `BENCHMARKS.md` holds.

use crate::measure::{Footprint, NodeFigures, RawLimits, Table};
use std::fmt::Write;

fn node(node: Option<&NodeFigures>, key: &str) -> Option<f64> {
    node?.rows.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.0}"))
}

/// The full report: one column per backend, node-resque beside them, the
/// resq/node-resque ratios, the raw Redis limits and the mpsc ceiling.
pub fn render(
    tables: &[Table],
    ceiling: f64,
    raw: Option<&RawLimits>,
    node_fig: Option<&NodeFigures>,
    graphile: Option<&NodeFigures>,
) -> String {
    let mut s = String::new();
    let _ = write!(s, "| figure |");
    for t in tables {
        let _ = write!(s, " {} |", t.url);
    }
    let _ = writeln!(s, " node-resque (same Redis) |");
    let _ = write!(s, "|---|");
    for _ in tables {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s, "---:|");
    type Pick = fn(&Table) -> String;
    let rows: [(&str, Pick, Option<&str>); 5] = [
        (
            "enqueue jobs/s, one at a time",
            |t| format!("{:.0}", t.enqueue_sequential),
            Some("enqueue_sequential"),
        ),
        (
            "enqueue jobs/s, 50 producers",
            |t| format!("{:.0}", t.enqueue_concurrent),
            Some("enqueue_concurrent"),
        ),
        (
            "enqueue jobs/s, batches of 1,000",
            |t| format!("{:.0}", t.enqueue_batch),
            None,
        ),
        (
            "process no-op jobs/s, 1 worker",
            |t| format!("{:.0}", t.process_one),
            Some("process_one"),
        ),
        (
            "process no-op jobs/s, best pool (size)",
            |t| format!("{:.0} ({})", t.process_pool.1, t.process_pool.0),
            Some("process_pool"),
        ),
    ];
    for (label, pick, node_key) in rows {
        let _ = write!(s, "| {label} |");
        for t in tables {
            let _ = write!(s, " {} |", pick(t));
        }
        let _ = writeln!(s, " {} |", cell(node_key.and_then(|k| node(node_fig, k))));
    }
    let lat: [(&str, Pick); 2] = [
        ("idle pickup ms, median / p99", |t| {
            format!(
                "{:.2} / {:.2} (n={})",
                t.idle_pickup.median_ms, t.idle_pickup.p99_ms, t.idle_pickup.samples
            )
        }),
        ("due-now delayed pickup ms, median / p99", |t| {
            format!(
                "{:.0} / {:.0} (n={})",
                t.delayed_pickup.median_ms, t.delayed_pickup.p99_ms, t.delayed_pickup.samples
            )
        }),
    ];
    for (label, pick) in lat {
        let _ = write!(s, "| {label} |");
        for t in tables {
            let _ = write!(s, " {} |", pick(t));
        }
        let _ = writeln!(s, " — |");
    }
    let _ = write!(s, "| sequential claim+complete/s, 1,000 queued → N queued |");
    for t in tables {
        let (shallow, deep, n) = t.claim_at_depth;
        let _ = write!(s, " {shallow:.0} → {deep:.0} (N={n}) |");
    }
    let _ = writeln!(s, " — |");
    let _ = write!(s, "| memory with jobs queued |");
    for t in tables {
        let text = match &t.footprint {
            Footprint::PerJob {
                overhead_bytes,
                payload_bytes,
                jobs,
            } => format!("{overhead_bytes:.0} B/job beyond a {payload_bytes} B payload ({jobs} jobs)"),
            Footprint::Rss {
                small_kib,
                large_kib,
                small,
                large,
            } => format!(
                "worker RSS {small_kib} KiB at {small} jobs, {large_kib} KiB at {large} ({:+.1}%)",
                (*large_kib as f64 / (*small_kib).max(1) as f64 - 1.0) * 100.0
            ),
        };
        let _ = write!(s, " {text} |");
    }
    let _ = writeln!(s, " — |");

    if let Some(redis) = tables.iter().find(|t| t.url.starts_with("redis")) {
        let _ = writeln!(s, "\n| resq (Redis) / node-resque | ratio |\n|---|---:|");
        let pairs = [
            ("enqueue, one at a time", redis.enqueue_sequential, "enqueue_sequential"),
            ("enqueue, 50 producers", redis.enqueue_concurrent, "enqueue_concurrent"),
            ("process, 1 worker", redis.process_one, "process_one"),
            (
                "process, best pool vs node-resque's best",
                redis.process_pool.1,
                "process_pool",
            ),
        ];
        for (label, ours, key) in pairs {
            let ratio = node(node_fig, key).map(|n| ours / n);
            let _ = writeln!(
                s,
                "| {label} | {} |",
                ratio.map_or_else(|| "—".into(), |r| format!("{r:.2}×"))
            );
        }
    }
    if let Some(pg) = tables.iter().find(|t| t.url.starts_with("postgres")) {
        let _ = writeln!(
            s,
            "\n| PostgreSQL | resq | graphile-worker (same server) | ratio |\n|---|---:|---:|---:|"
        );
        let pairs = [
            (
                "enqueue jobs/s, one at a time",
                pg.enqueue_sequential,
                "enqueue_sequential",
            ),
            ("enqueue jobs/s, batch", pg.enqueue_batch, "enqueue_batch"),
            ("process no-op jobs/s, 1 worker", pg.process_one, "process_one"),
            (
                "process no-op jobs/s, best configuration",
                pg.process_pool.1,
                "process_pool",
            ),
        ];
        for (label, ours, key) in pairs {
            let theirs = node(graphile, key);
            let _ = writeln!(
                s,
                "| {label} | {ours:.0} | {} | {} |",
                cell(theirs),
                theirs.map_or_else(|| "—".into(), |t| format!("{:.2}×", ours / t))
            );
        }
    }
    if let Some(raw) = raw {
        let _ = writeln!(s, "\n| Redis raw limit (redis-benchmark) | requests/s |\n|---|---:|");
        for (label, rps) in &raw.rows {
            let _ = writeln!(s, "| {label} | {rps:.0} |");
        }
        if let (Some(redis), Some((_, pipelined))) = (
            tables.iter().find(|t| t.url.starts_with("redis")),
            raw.rows.iter().find(|(l, _)| l.contains("pipeline")),
        ) {
            let _ = writeln!(
                s,
                "\nresq batch enqueue is {:.2} of redis-benchmark's pipelined LPUSH rate.",
                redis.enqueue_batch / pipelined
            );
        }
    }
    if let Some(memory) = tables.iter().find(|t| t.url.starts_with("memory")) {
        let _ = writeln!(
            s,
            "\nBare tokio mpsc ceiling: {ceiling:.0} messages/s; the memory backend's best pool reaches {:.2} of it.",
            memory.process_pool.1 / ceiling
        );
    }
    s
}
