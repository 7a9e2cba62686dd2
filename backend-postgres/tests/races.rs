//! Races the advisory queue locks settle: a push racing `delete_queue`
//! lands wholly before the deletion (and goes with it) or wholly after it
//! (and registers the queue name again), never as a job on a queue whose
//! name is gone. A push inside a long caller transaction makes the race
//! easy to hit.

mod common;

use resq_core::backend::Backend;
use resq_core::QueueStore;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_queue_waits_for_an_open_push() {
    let Some(backend) = common::backend("delete_queue_waits_for_an_open_push").await else {
        return;
    };
    backend.push("doomed", "old").await.unwrap();
    let mut tx = backend.pool().begin().await.unwrap();
    // The queue's name exists already, so this push writes only its job.
    backend.push_in(&mut tx, "doomed", "new").await.unwrap();
    let deleter = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.delete_queue("doomed").await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!deleter.is_finished(), "delete_queue did not wait for the open push");
    tx.commit().await.unwrap();
    assert!(deleter.await.unwrap(), "the queue held jobs");
    assert_eq!(backend.queue_len("doomed").await.unwrap(), 0);
    assert_eq!(backend.queues().await.unwrap(), Vec::<String>::new());

    // Pushes to other queues do not wait for a deletion in progress.
    let mut tx = backend.pool().begin().await.unwrap();
    backend.push_in(&mut tx, "doomed", "again").await.unwrap();
    let other = tokio::time::timeout(Duration::from_secs(5), backend.push("other", "x")).await;
    assert!(matches!(other, Ok(Ok(()))), "a push to another queue waited");
    tx.rollback().await.unwrap();
    backend.close().await.unwrap();
}
