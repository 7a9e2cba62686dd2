//! `resq_admin::Admin::locks` and `delete_lock`.

use resq_admin::Admin;
use resq_core::backend::Backend;
use std::sync::Arc;
use std::time::Duration;

/// Locks (Resque's `lock:` and `workerslock:` keys) are listed sorted by key with their value and remaining time to
/// live (the leader lock is not among them); a deleted lock is gone, and
/// deleting it again reports that it did not exist.
pub async fn locks_list_with_ttl_and_delete(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    assert!(backend
        .acquire_lock("lock:k2", "v2", Duration::from_secs(2))
        .await
        .unwrap());
    assert!(backend
        .acquire_lock("lock:k1", "v1", Duration::from_secs(20))
        .await
        .unwrap());
    assert!(backend.acquire_leader("boss", Duration::from_secs(20)).await.unwrap());
    let locks = admin.locks().await.unwrap();
    let keys: Vec<(&str, &str)> = locks.iter().map(|l| (l.key.as_str(), l.value.as_str())).collect();
    assert_eq!(keys, [("lock:k1", "v1"), ("lock:k2", "v2")]);
    let ttl1 = locks[0].ttl_ms.expect("k1 expires");
    let ttl2 = locks[1].ttl_ms.expect("k2 expires");
    assert!(ttl1 > 10_000 && ttl1 <= 20_000, "{ttl1}");
    assert!(ttl2 <= 2_000, "{ttl2}");
    assert!(admin.delete_lock("lock:k1").await.unwrap());
    assert!(!admin.delete_lock("lock:k1").await.unwrap());
    let keys: Vec<String> = admin.locks().await.unwrap().into_iter().map(|l| l.key).collect();
    assert_eq!(keys, ["lock:k2"]);
}
