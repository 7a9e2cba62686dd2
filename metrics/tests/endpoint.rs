//! The scrape endpoint: the router a host mounts, and the standalone server.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{families, value};
use resq_admin::Admin;
use resq_core::{Backend, CancellationToken, Queue};
use resq_metrics::{Collector, Exporter, Metrics, ServeError, CONTENT_TYPE_OPENMETRICS};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

fn memory() -> Arc<dyn Backend> {
    Arc::new(resq_memory::MemoryBackend::new())
}

#[tokio::test]
async fn the_router_answers_get_metrics_in_openmetrics_text() {
    let backend = memory();
    Queue::new(Arc::clone(&backend))
        .enqueue("mail", "send", (1,))
        .await
        .unwrap();
    let metrics = Metrics::new();
    // A family shows once it has a series.
    metrics.record(&resq_core::WorkerEvent::Success {
        worker: "w".into(),
        queue: "mail".into(),
        job: Arc::new(resq_core::Job::new("mail", "send", Vec::new())),
        result: serde_json::Value::Null,
        duration: Duration::from_millis(3),
    });
    let collector = Collector::new(Admin::new(backend));
    collector.collect().await.unwrap();
    let router = Exporter::builder()
        .metrics(&metrics)
        .collector(&collector)
        .build()
        .router();

    let response = router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some(CONTENT_TYPE_OPENMETRICS)
    );
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF: {text}");
    let types = families(&text);
    assert_eq!(types.get("resq_jobs").map(String::as_str), Some("counter"));
    assert_eq!(
        types.get("resq_job_duration_seconds").map(String::as_str),
        Some("histogram")
    );
    assert_eq!(types.get("resq_worker_slots").map(String::as_str), Some("gauge"));
    assert_eq!(value(&text, "resq_queue_length", &[("queue", "mail")]), Some(1.0));

    let missing = router
        .oneshot(Request::get("/other").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

/// A free local port (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_a_standalone_endpoint_until_cancelled() {
    let backend = memory();
    Queue::new(Arc::clone(&backend))
        .enqueue("reports", "build", (1,))
        .await
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(resq_metrics::serve(addr, Admin::new(backend), stop.clone()));
    // The first collection runs at start; wait for the server and it.
    let mut response = String::new();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            response = http_get(addr, "/metrics").await;
            if response.contains("resq_queue_length{queue=\"reports\"} 1") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains(&format!("content-type: {CONTENT_TYPE_OPENMETRICS}")),
        "{response}"
    );
    assert!(
        response.contains("resq_queue_length{queue=\"reports\"} 1"),
        "{response}"
    );
    stop.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(5), server).await;
    ended.expect("serve ends once cancelled").unwrap().unwrap();
}

#[tokio::test]
async fn serve_reports_an_address_in_use() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = resq_metrics::serve(addr, Admin::new(memory()), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::Bind { addr: a, .. } if a == addr), "{err}");
}
