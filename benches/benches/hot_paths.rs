//! Criterion micro-benchmarks of resq's hot paths: payload encoding and
//! decoding (node-resque byte-compatible JSON) and the memory backend's
//! enqueue, claim and complete. Run with `cargo bench -p resq-benches`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use resq_core::failed::{encode_entry, Failure};
use resq_core::job::{encode_payload, Job};
use resq_core::json::to_js_string;
use resq_core::{Backend, Outcome, QueueStore, WorkerId};
use resq_memory::MemoryBackend;
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;

fn payloads(c: &mut Criterion) {
    let args = vec![
        json!(1),
        json!("user@example.com"),
        json!({"plan": "pro", "seats": 12, "ratio": 0.5}),
    ];
    let raw = encode_payload("default", "sendWelcomeEmail", &args);
    let mut g = c.benchmark_group("payload");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_node_resque", |b| {
        b.iter(|| encode_payload(black_box("default"), black_box("sendWelcomeEmail"), black_box(&args)))
    });
    g.bench_function("encode_serde_json_for_comparison", |b| {
        let v = json!({"class": "sendWelcomeEmail", "queue": "default", "args": args});
        b.iter(|| serde_json::to_string(black_box(&v)))
    });
    g.bench_function("encode_js_floats", |b| {
        let v = json!([1.0, 2.5, 1e21, 0.1, -3.75]);
        b.iter(|| to_js_string(black_box(&v)))
    });
    g.bench_function("decode", |b| b.iter(|| Job::decode(black_box(&raw))));
    g.bench_function("failed_entry", |b| {
        let f = Failure::new("Error", "boom").with_backtrace(vec!["at x".into()]);
        b.iter(|| encode_entry(black_box("host:1+1"), "default", black_box(&raw), &f, 0))
    });
    g.finish();
}

fn memory_backend(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let raw = encode_payload("q", "noop", &[json!(1)]);
    let worker = WorkerId::new("bench:1+1", &["q".to_owned()]);
    let queues = vec!["q".to_owned()];
    let mut g = c.benchmark_group("memory");
    g.throughput(Throughput::Elements(1));
    g.bench_function("enqueue", |b| {
        let backend = MemoryBackend::new();
        b.to_async(&rt).iter(|| backend.push("q", black_box(&raw)))
    });
    // One iteration claims and completes 1,000 jobs.
    g.throughput(Throughput::Elements(1000));
    g.bench_function("claim_and_complete_x1000", |b| {
        b.iter_batched(
            || {
                let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
                rt.block_on(async {
                    for _ in 0..1000 {
                        backend.push("q", &raw).await.expect("push");
                    }
                });
                backend
            },
            |backend| {
                rt.block_on(async {
                    for _ in 0..1000 {
                        backend.claim(&worker, &queues, "now").await.expect("claim");
                        backend.complete(&worker, Outcome::Success).await.expect("complete");
                    }
                })
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, payloads, memory_backend);
criterion_main!(benches);
