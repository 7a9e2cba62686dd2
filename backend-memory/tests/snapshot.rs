//! Memory-specific behaviour: snapshot persistence and `memory://` URLs.
//! (Everything a backend must do is checked by resq-conformance.)

use resq_core::{
    Backend, DelayedStore, Error, FailedStore, LeaderLock, LockStore, Orphan, Outcome, Promotion, QueueStore,
    StatsStore, WorkerId, WorkerRegistry,
};
use resq_memory::{connect, MemoryBackend};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(3600);

/// A unique snapshot path in the temp dir, removed (with any leftovers of
/// the same name) on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> TempPath {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "resq-memory-test-{tag}-{}-{}.snapshot",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        TempPath(std::env::temp_dir().join(name))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn worker(name: &str) -> WorkerId {
    WorkerId::new(name, &["high".to_owned(), "low".to_owned()])
}

fn queues() -> Vec<String> {
    vec!["high".to_owned(), "low".to_owned()]
}

const JOB_A: &str = r#"{"class":"a","queue":"high","args":[1]}"#;
const JOB_B: &str = r#"{"class":"b","queue":"low","args":[{"x":"ü"}]}"#;
const JOB_C: &str = r#"{"class":"c","queue":"high","args":[]}"#;
const DELAYED: &str = r#"{"class":"d","queue":"later","args":[]}"#;

/// Fills every structure the snapshot must carry.
async fn populate(b: &MemoryBackend) {
    b.push("high", JOB_A).await.unwrap();
    b.push("high", JOB_C).await.unwrap();
    b.push("low", JOB_B).await.unwrap();
    b.push("emptied", JOB_A).await.unwrap();
    assert_eq!(b.remove_from_queue("emptied", JOB_A, 0).await.unwrap(), 1);

    let w1 = worker("host:1");
    b.register_worker(&w1, 1_000).await.unwrap();
    b.ping_worker(&w1, 2_000).await.unwrap();
    let claimed = b.claim(&w1, &queues(), "run-at-text").await.unwrap().unwrap();
    assert_eq!(claimed.payload, JOB_A);
    b.complete(&w1, Outcome::Success).await.unwrap();
    let claimed = b.claim(&w1, &queues(), "run-at-2").await.unwrap().unwrap();
    assert_eq!(claimed.payload, JOB_C);
    // w1 keeps working on JOB_C; w2 is registered and idle.
    b.register_worker(&worker("host:2"), 3_000).await.unwrap();
    b.incr_stat("custom:counter", 7).await.unwrap();

    b.push_failed(r#"{"failed":1}"#).await.unwrap();
    assert!(b.schedule(100, DELAYED).await.unwrap());
    assert!(b.schedule(200, DELAYED).await.unwrap());
    assert!(b.schedule(200, JOB_B).await.unwrap());

    assert!(b.acquire_lock("lock:long", "v1", LONG).await.unwrap());
    assert!(b
        .acquire_lock("lock:short", "v2", Duration::from_millis(50))
        .await
        .unwrap());
    assert!(b.acquire_leader("scheduler-1", LONG).await.unwrap());
}

/// Checks that `b` holds what [`populate`] wrote.
async fn check_populated(b: &MemoryBackend) {
    assert_eq!(b.queues().await.unwrap(), ["emptied", "high", "low"]);
    assert_eq!(b.queue_range("high", 0, -1).await.unwrap(), Vec::<String>::new());
    assert_eq!(b.queue_range("low", 0, -1).await.unwrap(), [JOB_B]);
    assert_eq!(b.workers().await.unwrap(), [worker("host:1"), worker("host:2")]);
    assert_eq!(b.worker_started(&worker("host:1")).await.unwrap(), Some(1_000));
    let wo = b.working_on(&worker("host:1")).await.unwrap().unwrap();
    assert_eq!((wo.worker.as_str(), wo.queue.as_str()), ("host:1", "high"));
    assert_eq!((wo.run_at.as_str(), wo.payload.as_str()), ("run-at-2", JOB_C));
    assert_eq!(b.working_on(&worker("host:2")).await.unwrap(), None);
    assert_eq!(b.stale_workers(2_500).await.unwrap(), [worker("host:1")]);
    let stats: Vec<(String, i64)> = vec![
        ("custom:counter".into(), 7),
        ("processed".into(), 1),
        ("processed:host:1".into(), 1),
    ];
    assert_eq!(b.stats().await.unwrap(), stats);
    assert_eq!(b.failed_range(0, -1).await.unwrap(), [r#"{"failed":1}"#]);
    assert_eq!(b.delayed_timestamps().await.unwrap(), [100, 200]);
    assert_eq!(b.delayed_at(200).await.unwrap(), [DELAYED, JOB_B]);
    assert_eq!(b.timestamps_of(DELAYED).await.unwrap(), [100, 200]);
    assert!(!b.schedule(200, DELAYED).await.unwrap(), "the duplicate index was lost");
    assert_eq!(b.locks().await.unwrap(), [("lock:long".to_owned(), "v1".to_owned())]);
    assert_eq!(b.leader().await.unwrap().as_deref(), Some("scheduler-1"));
}

#[tokio::test]
async fn snapshot_round_trip() {
    let path = TempPath::new("round-trip");
    let b = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    assert_eq!(b.snapshot_path(), Some(path.0.as_path()));
    populate(&b).await;
    tokio::time::sleep(Duration::from_millis(100)).await; // "lock:short" lapses
    b.close().await.unwrap();
    drop(b);

    let b = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    check_populated(&b).await;

    // The loaded store works on: the working-on record can be completed or
    // cleaned, and delayed items promote from the loaded index.
    let cleaned = b
        .clean_worker(&worker("host:1"), Orphan::Requeue)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cleaned.working_on.unwrap().payload, JOB_C);
    assert_eq!(b.queue_range("high", 0, -1).await.unwrap(), [JOB_C]);
    let promoted = b.promote_due(150, 10).await.unwrap();
    assert!(matches!(&promoted[..], [Promotion::Moved { timestamp: 100, .. }]));
    assert_eq!(b.timestamps_of(DELAYED).await.unwrap(), [200]);

    // Saving again replaces the file with the new state.
    b.close().await.unwrap();
    drop(b);
    let b = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    assert_eq!(b.queue_range("high", 0, -1).await.unwrap(), [JOB_C]);
    assert_eq!(b.queue_range("later", 0, -1).await.unwrap(), [DELAYED]);
    assert_eq!(b.workers().await.unwrap(), [worker("host:2")]);
}

#[tokio::test]
async fn missing_file_is_an_empty_store() {
    let path = TempPath::new("missing");
    let b = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    assert!(b.queues().await.unwrap().is_empty());
    assert!(!path.0.exists());
    // Closing writes the (empty) snapshot even though nothing changed.
    b.close().await.unwrap();
    assert!(path.0.exists());
    let b = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    assert!(b.queues().await.unwrap().is_empty());
}

fn assert_decode_error(path: &TempPath, needle: &str) {
    match MemoryBackend::with_snapshot(&path.0, None) {
        Err(Error::Decode { what, reason }) => {
            assert_eq!(what, "memory snapshot");
            assert!(reason.contains(needle), "reason {reason:?} lacks {needle:?}");
            assert!(
                reason.contains(&*path.0.to_string_lossy()),
                "reason {reason:?} lacks the path"
            );
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[tokio::test]
async fn corrupt_snapshots_are_refused() {
    let path = TempPath::new("corrupt");
    let b = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    populate(&b).await;
    b.close().await.unwrap();
    let good = std::fs::read(&path.0).unwrap();

    std::fs::write(&path.0, b"{\"not\":\"a snapshot\"}").unwrap();
    assert_decode_error(&path, "bad magic");
    std::fs::write(&path.0, b"").unwrap();
    assert_decode_error(&path, "bad magic");

    let mut other_version = good.clone();
    other_version[8] = 99;
    std::fs::write(&path.0, &other_version).unwrap();
    assert_decode_error(&path, "version 99");

    std::fs::write(&path.0, &good[..good.len() - 10]).unwrap();
    assert_decode_error(&path, "checksum");

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    std::fs::write(&path.0, &flipped).unwrap();
    assert_decode_error(&path, "checksum");

    // The good bytes still load.
    std::fs::write(&path.0, &good).unwrap();
    assert!(MemoryBackend::with_snapshot(&path.0, None).is_ok());
}

#[tokio::test]
async fn unusable_paths_are_refused_up_front() {
    let dir = std::env::temp_dir();
    assert!(matches!(
        MemoryBackend::with_snapshot(&dir, None),
        Err(Error::InvalidArgument(_))
    ));
    let nowhere = dir.join("resq-memory-no-such-dir").join("x.snapshot");
    assert!(matches!(
        MemoryBackend::with_snapshot(nowhere, None),
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn periodic_saver_writes_the_file_and_stops_when_dropped() {
    let path = TempPath::new("saver");
    let b = MemoryBackend::with_snapshot(&path.0, Some(Duration::from_millis(40))).unwrap();
    b.push("q", JOB_A).await.unwrap();
    let mut waited = 0;
    while !path.0.exists() && waited < 5_000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 20;
    }
    assert!(path.0.exists(), "the saver wrote nothing in 5 s");
    // The file is a full snapshot that loads while the writer still runs.
    let copy = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    assert_eq!(copy.queue_range("q", 0, -1).await.unwrap(), [JOB_A]);

    // Later changes are picked up by later ticks.
    b.push("q", JOB_B).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let copy = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    assert_eq!(copy.queue_len("q").await.unwrap(), 2);

    // Once the backend is gone, its saver writes no more.
    drop(b);
    std::fs::remove_file(&path.0).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!path.0.exists(), "the saver outlived its backend");
}

#[tokio::test]
async fn close_stops_the_saver_and_saves_last() {
    let path = TempPath::new("close");
    let b = MemoryBackend::with_snapshot(&path.0, Some(Duration::from_millis(20))).unwrap();
    b.push("q", JOB_A).await.unwrap();
    b.close().await.unwrap();
    std::fs::remove_file(&path.0).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!path.0.exists(), "the saver ran after close()");
    // An explicit close saves again, as the store is still usable.
    b.push("q", JOB_B).await.unwrap();
    b.close().await.unwrap();
    let copy = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    assert_eq!(copy.queue_len("q").await.unwrap(), 2);
}

#[test]
fn periodic_saver_needs_a_runtime() {
    let path = TempPath::new("no-runtime");
    let r = MemoryBackend::with_snapshot(&path.0, Some(Duration::from_secs(1)));
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    // Without a periodic saver no runtime is needed, even to close.
    let b = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(b.push("q", JOB_A)).unwrap();
    drop(rt);
    futures_lite_block_on(b.close()).unwrap();
    assert!(path.0.exists());
}

/// Polls a future to completion on this thread, outside any runtime.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
    fn noop_raw() -> RawWaker {
        fn clone(_: *const ()) -> RawWaker {
            noop_raw()
        }
        fn noop(_: *const ()) {}
        static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
        RawWaker::new(std::ptr::null(), &VTABLE)
    }
    // SAFETY: the vtable's functions ignore the data pointer.
    let waker = unsafe { Waker::from_raw(noop_raw()) };
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

#[tokio::test]
async fn connect_urls() {
    let b = connect("memory://").await.unwrap();
    assert_eq!(b.kind(), "memory");
    assert_eq!(b.snapshot_path(), None);

    let path = TempPath::new("url");
    let url = format!("memory://{}?save_interval_ms=0", path.0.display());
    let b = connect(&url).await.unwrap();
    assert_eq!(b.snapshot_path(), Some(path.0.as_path()));
    b.push("q", JOB_A).await.unwrap();
    b.close().await.unwrap();
    let again: Arc<MemoryBackend> = connect(&format!("memory://{}", path.0.display())).await.unwrap();
    assert_eq!(again.queue_len("q").await.unwrap(), 1);

    for bad in ["memory://host/x", "redis://x", "memory:///tmp/x?save_interval_ms=abc"] {
        match connect(bad).await {
            Err(Error::InvalidUrl { url, reason }) => {
                assert_eq!(url, bad);
                assert!(!reason.is_empty());
            }
            other => panic!("{bad}: expected InvalidUrl, got {other:?}"),
        }
    }
}

/// The snapshot checksum, written out again here (the crate keeps its own
/// private) so that mutated bodies get a valid header: the test then reaches
/// the body decoder, as a crafted file would. Checked against a real file
/// before use.
fn body_checksum(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(word);
        hash = (hash ^ u64::from_le_bytes(buf)).wrapping_mul(PRIME).rotate_left(29);
    }
    for byte in words.remainder() {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(PRIME);
    }
    (hash ^ bytes.len() as u64).wrapping_mul(PRIME)
}

/// The header: 8 magic bytes, the version byte, the 8-byte checksum.
const SNAPSHOT_HEADER: usize = 17;

/// A file holding `header` (magic and version as in a real file) over
/// `body`, with the body's checksum recomputed.
fn with_checksum(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut file = header[..SNAPSHOT_HEADER].to_vec();
    file[9..SNAPSHOT_HEADER].copy_from_slice(&body_checksum(body).to_le_bytes());
    file.extend_from_slice(body);
    file
}

/// A tiny deterministic generator (xorshift64*), so every run mutates the
/// same way.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

/// Crafted snapshot bodies (a valid checksum over damaged data) are refused
/// with a clear error or load, and never crash the process: a huge length
/// varint made bincode allocate what it claimed and the process abort. Every
/// position of a real body gets huge lengths written over it and inserted
/// into it, and a few hundred random byte changes are tried. A file that is
/// refused is left exactly as it was.
#[tokio::test]
async fn crafted_snapshot_bodies_never_crash_and_refused_files_are_kept() {
    let path = TempPath::new("mutated");
    let b = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    populate(&b).await;
    b.close().await.unwrap();
    let good = std::fs::read(&path.0).unwrap();
    let body = &good[SNAPSHOT_HEADER..];
    assert_eq!(with_checksum(&good, body), good, "the test's checksum is the crate's");

    // bincode varints: 251, 252, 253 and 254 announce a u16, u32, u64 or u128.
    let mut huge: Vec<Vec<u8>> = Vec::new();
    for value in [1u64 << 40, 1 << 50, u64::MAX >> 1, u64::MAX] {
        let mut v = vec![253];
        v.extend_from_slice(&value.to_le_bytes());
        huge.push(v);
    }
    let mut v = vec![252];
    v.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.push(v);
    let mut v = vec![254];
    v.extend_from_slice(&(1u128 << 40).to_le_bytes());
    huge.push(v);

    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for at in 0..body.len() {
        for (i, length) in huge.iter().enumerate() {
            // Written over the bytes at `at` (cut at the end of the body).
            let mut over = body.to_vec();
            let end = (at + length.len()).min(over.len());
            over[at..end].copy_from_slice(&length[..end - at]);
            bodies.push(over);
            // Inserted at `at`, for the two most telling ones.
            if i == 0 || i == 4 {
                let mut inserted = body.to_vec();
                inserted.splice(at..at, length.iter().copied());
                bodies.push(inserted);
            }
        }
    }
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    for _ in 0..500 {
        let mut mutated = body.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(mutated.len());
            mutated[at] = u8::try_from(rng.next() & 0xff).unwrap();
        }
        bodies.push(mutated);
    }
    assert!(bodies.len() >= 3_000, "{} bodies", bodies.len());

    let (mut loaded, mut refused, mut over_limit) = (0usize, 0usize, 0usize);
    for mutated in &bodies {
        let file = with_checksum(&good, mutated);
        std::fs::write(&path.0, &file).unwrap();
        match MemoryBackend::with_snapshot(&path.0, None) {
            Ok(_) => loaded += 1,
            Err(Error::Decode { what, reason }) => {
                assert_eq!(what, "memory snapshot");
                assert!(reason.contains(&*path.0.to_string_lossy()), "{reason}");
                refused += 1;
                if reason.contains("claims more data than") {
                    over_limit += 1;
                }
                assert_eq!(std::fs::read(&path.0).unwrap(), file, "a refused snapshot was changed");
            }
            Err(other) => panic!("expected a decode error, got {other:?}"),
        }
    }
    assert!(
        refused > 0 && over_limit > 0,
        "loaded {loaded}, refused {refused}, over the limit {over_limit}"
    );
    println!(
        "{} mutated bodies: {loaded} loaded, {refused} refused ({over_limit} for a length beyond the file)",
        bodies.len()
    );

    // The good file still loads after all that.
    std::fs::write(&path.0, &good).unwrap();
    assert!(MemoryBackend::with_snapshot(&path.0, None).is_ok());
}

/// Paused queues and the jobs' enqueue times survive a restart (snapshot
/// format version 2), so a pause set by one process (the `resq` command
/// line, say) holds in the next.
#[tokio::test]
async fn pause_marks_and_enqueue_times_survive_a_restart() {
    let path = TempPath::new("v2");
    let first = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    first
        .push("math", r#"{"class":"add","queue":"math","args":[1]}"#)
        .await
        .unwrap();
    assert!(first.pause_queue("math").await.unwrap());
    let before = first.queue_stats(&["math".to_owned()]).await.unwrap();
    let enqueued = before[0].oldest_enqueued_ms.expect("a fresh job has an enqueue time");
    first.close().await.unwrap();
    drop(first);

    let second = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    assert_eq!(second.paused_queues().await.unwrap(), vec!["math".to_owned()]);
    let after = second.queue_stats(&["math".to_owned()]).await.unwrap();
    assert_eq!(after[0].length, 1);
    assert_eq!(after[0].oldest_enqueued_ms, Some(enqueued));
    // A resume is a change that is saved too.
    assert!(second.resume_queue("math").await.unwrap());
    second.close().await.unwrap();
    drop(second);
    let third = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    assert!(third.paused_queues().await.unwrap().is_empty());
}

/// A version 1 snapshot (written before pause marks and enqueue times were
/// saved; the fixture was written by that build) still loads: its jobs and
/// failed entries are there, no queue is paused, enqueue times are unknown.
#[tokio::test]
async fn a_version_1_snapshot_still_loads() {
    let path = TempPath::new("v1");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1.snapshot");
    std::fs::copy(&fixture, &path.0).unwrap();
    let b = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    assert_eq!(
        b.queue_range("math", 0, -1).await.unwrap(),
        vec![
            r#"{"class":"add","queue":"math","args":[1,2]}"#.to_owned(),
            r#"{"class":"add","queue":"math","args":[3,4]}"#.to_owned()
        ]
    );
    assert_eq!(b.failed_count().await.unwrap(), 1);
    assert!(b.paused_queues().await.unwrap().is_empty());
    let stats = b.queue_stats(&["math".to_owned()]).await.unwrap();
    assert_eq!((stats[0].length, stats[0].oldest_enqueued_ms), (2, None));
    // A job pushed now has a time, but the head's stays unknown.
    b.push("math", r#"{"class":"add","queue":"math","args":[5,6]}"#)
        .await
        .unwrap();
    assert_eq!(
        b.queue_stats(&["math".to_owned()]).await.unwrap()[0].oldest_enqueued_ms,
        None
    );
    // Saved again, it is a file of the current version, 3.
    b.close().await.unwrap();
    assert_eq!(std::fs::read(&path.0).unwrap()[8], 3);
}

/// Delayed items keep their due times in milliseconds across a restart
/// (snapshot format version 3), and an item scheduled by bucket stays due
/// with its bucket.
#[tokio::test]
async fn delayed_due_times_survive_a_restart() {
    let path = TempPath::new("v3");
    let at = 4_102_444_800_000_i64; // 2100-01-01, a whole second
    let first = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    let by_time = r#"{"class":"a","queue":"q","args":[1]}"#;
    let by_bucket = r#"{"class":"a","queue":"q","args":[2]}"#;
    let bucket = resq_core::time::delayed_bucket_of_ms(at + 250);
    assert!(first.schedule_ms(at + 250, by_time).await.unwrap());
    assert!(first.schedule(bucket + 3, by_bucket).await.unwrap());
    first.close().await.unwrap();
    drop(first);

    let second = MemoryBackend::with_snapshot(&path.0, None).unwrap();
    assert_eq!(std::fs::read(&path.0).unwrap()[8], 3);
    assert_eq!(second.delayed_timestamps().await.unwrap(), vec![bucket, bucket + 3]);
    assert_eq!(second.next_due_ms().await.unwrap(), Some(at + 250));
    assert!(second.promote_due_ms(at + 249, 10).await.unwrap().is_empty());
    assert_eq!(second.promote_due_ms(at + 250, 10).await.unwrap().len(), 1);
    let bucket_due = resq_core::time::bucket_due_ms(bucket + 3);
    assert_eq!(second.next_due_ms().await.unwrap(), Some(bucket_due));
    assert!(second.promote_due_ms(bucket_due - 1, 10).await.unwrap().is_empty());
    assert_eq!(second.promote_due_ms(bucket_due, 10).await.unwrap().len(), 1);
    assert_eq!(
        second.queue_range("q", 0, -1).await.unwrap(),
        vec![by_time.to_owned(), by_bucket.to_owned()]
    );
}
