//! Enqueuing inside the caller's own transaction: the job exists only if
//! the transaction commits, together with the caller's other writes.

mod common;

use resq_core::backend::Backend;
use resq_core::{QueueStore, QueuedJob, WorkerId};
use std::time::{Duration, Instant};

fn worker() -> WorkerId {
    WorkerId::new("h:1", &["mail".to_owned()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_job_is_visible_and_claimable() {
    let Some(backend) = common::backend("committed_job_is_visible_and_claimable").await else {
        return;
    };
    let orders = format!("\"{}\".orders", backend.schema());
    sqlx::query(&format!("CREATE TABLE {orders} (id int PRIMARY KEY)"))
        .execute(backend.pool())
        .await
        .unwrap();

    // A waiter that only a committed push may wake.
    let waiter = {
        let backend = backend.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            backend
                .wait_for_jobs(&["mail".to_owned()], Duration::from_secs(10))
                .await
                .unwrap();
            start.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut tx = backend.pool().begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {orders} (id) VALUES (7)"))
        .execute(&mut *tx)
        .await
        .unwrap();
    backend.enqueue_in_tx(&mut tx, "mail", "welcome", (7,)).await.unwrap();
    backend
        .push_batch_in(
            &mut tx,
            &[QueuedJob {
                queue: "mail".into(),
                payload: "raw bytes".into(),
            }],
        )
        .await
        .unwrap();
    // Not visible to anyone else before the commit.
    assert_eq!(backend.queue_len("mail").await.unwrap(), 0);
    assert!(backend
        .claim(&worker(), &["mail".to_owned()], "t")
        .await
        .unwrap()
        .is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "an uncommitted push woke a waiter");
    let committed_at = Instant::now();
    tx.commit().await.unwrap();

    let woken_after = waiter.await.unwrap();
    assert!(
        committed_at.elapsed() < Duration::from_secs(5) && woken_after < Duration::from_secs(5),
        "the commit did not wake the waiter"
    );
    assert_eq!(backend.queue_len("mail").await.unwrap(), 2);
    assert_eq!(backend.queues().await.unwrap(), vec!["mail".to_owned()]);
    let claimed = backend
        .claim(&worker(), &["mail".to_owned()], "t")
        .await
        .unwrap()
        .expect("the committed job is claimable");
    assert_eq!(claimed.payload, r#"{"class":"welcome","queue":"mail","args":[7]}"#);
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {orders}"))
        .fetch_one(backend.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    backend.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_job_leaves_no_trace() {
    let Some(backend) = common::backend("rolled_back_job_leaves_no_trace").await else {
        return;
    };
    let mut tx = backend.pool().begin().await.unwrap();
    backend.enqueue_in_tx(&mut tx, "mail", "welcome", (8,)).await.unwrap();
    backend.push_in(&mut tx, "other", "x").await.unwrap();
    tx.rollback().await.unwrap();

    assert_eq!(backend.queue_len("mail").await.unwrap(), 0);
    assert_eq!(backend.queue_len("other").await.unwrap(), 0);
    assert_eq!(backend.queues().await.unwrap(), Vec::<String>::new());
    assert!(backend
        .claim(&worker(), &["mail".to_owned()], "t")
        .await
        .unwrap()
        .is_none());
    backend.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_a_connection_of_the_callers_own_pool() {
    let Some(backend) = common::backend("works_on_a_connection_of_the_callers_own_pool").await else {
        return;
    };
    // The caller's pool knows nothing of resq's schema (no search_path).
    let own = sqlx::PgPool::connect(&resq_postgres::testing::url()).await.unwrap();
    let mut tx = own.begin().await.unwrap();
    backend.enqueue_in_tx(&mut tx, "mail", "welcome", ()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        backend.queue_range("mail", 0, -1).await.unwrap(),
        vec![r#"{"class":"welcome","queue":"mail","args":[]}"#.to_owned()]
    );
    let mut conn = own.acquire().await.unwrap();
    let err = backend.enqueue_in_tx(&mut conn, " ", "welcome", ()).await.unwrap_err();
    assert!(matches!(err, resq_core::Error::InvalidArgument(_)), "{err}");
    drop(conn);
    own.close().await;
    backend.close().await.unwrap();
}
