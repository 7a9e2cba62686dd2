//! The snapshot file: its format (codec) and atomic reads and writes.
//!
//! Layout: the 8-byte magic `RESQMEM\0`, one format-version byte, an
//! 8-byte little-endian checksum of the body, then the body: an [`Image`]
//! in bincode 2's standard configuration, through its serde integration.
//! Version 2 adds the paused queues and the jobs' enqueue times after
//! version 1's fields; version 3 (written now) adds the delayed items' due
//! times in milliseconds after those. A version 1 file still loads, with no
//! queue paused and enqueue times unknown, and versions 1 and 2 load with
//! every delayed item due when its bucket is.
//! A file with another magic, version or checksum, or a body that does not
//! decode exactly, is refused with a clear error. Bodies are decoded with a
//! size limit derived from the file's length, so a damaged length field is
//! an error, never an allocation of whatever it claims. A file that is
//! refused is left as it is: the backend is not created, so nothing
//! overwrites it.
//!
//! Locks are saved with their deadline as wall-clock epoch milliseconds (as
//! Redis saves expiry times) and loaded with what remains of their TTL; a
//! lock that lapsed while the process was down is not loaded.

use crate::state::State;
use resq_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: &[u8; 8] = b"RESQMEM\0";
/// The format this build writes and reads. Bump it on any change to the
/// saved types.
const FORMAT_VERSION: u8 = 3;
/// The older formats this build still reads.
const FORMAT_VERSION_1: u8 = 1;
const FORMAT_VERSION_2: u8 = 2;
const HEADER_LEN: usize = MAGIC.len() + 1 + 8;

/// A saved lock: key, owner token and deadline (epoch ms).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedLock {
    /// The lock's key (empty for the leader lock).
    pub(crate) key: String,
    /// The owner's token (the leader's name for the leader lock).
    pub(crate) value: String,
    /// When it lapses, epoch ms.
    pub(crate) expires_at_ms: i64,
}

/// What a snapshot holds, borrowed for writing.
#[derive(Serialize)]
struct ImageRef<'a> {
    state: &'a State,
    locks: &'a [SavedLock],
    leader: &'a Option<SavedLock>,
    paused: &'a BTreeSet<String>,
    enqueued: &'a HashMap<String, VecDeque<i64>>,
    delayed_due: Vec<i64>,
}

/// Version 1's image: [`Image`] without its last two fields.
#[derive(Debug, Deserialize)]
struct ImageV1 {
    state: State,
    locks: Vec<SavedLock>,
    leader: Option<SavedLock>,
}

/// Version 2's image: [`Image`] without its last field.
#[derive(Debug, Deserialize)]
struct ImageV2 {
    state: State,
    locks: Vec<SavedLock>,
    leader: Option<SavedLock>,
    paused: BTreeSet<String>,
    enqueued: HashMap<String, VecDeque<i64>>,
}

/// What a snapshot holds, owned after reading. Same fields, same order as
/// [`ImageRef`]; the delayed items' due times are already in `state`.
#[derive(Debug)]
pub(crate) struct Image {
    /// Queues, workers, stats, failed and delayed jobs.
    pub(crate) state: State,
    /// Plugin locks.
    pub(crate) locks: Vec<SavedLock>,
    /// The leader lock.
    pub(crate) leader: Option<SavedLock>,
    /// The paused queues.
    pub(crate) paused: BTreeSet<String>,
    /// The jobs' enqueue times by queue, tail-aligned (see `State::enqueued`).
    pub(crate) enqueued: HashMap<String, VecDeque<i64>>,
}

/// Version 3's image as read: [`ImageV2`] and the delayed items' due times
/// in the order of `Schedule::due_times`.
#[derive(Debug, Deserialize)]
struct ImageV3 {
    state: State,
    locks: Vec<SavedLock>,
    leader: Option<SavedLock>,
    paused: BTreeSet<String>,
    enqueued: HashMap<String, VecDeque<i64>>,
    delayed_due: Vec<i64>,
}

/// A fast 64-bit checksum (FNV-1a style, a word at a time): it detects a
/// truncated or damaged file, it is not a defence against tampering.
fn checksum(bytes: &[u8]) -> u64 {
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

/// Encodes a snapshot file's full contents.
pub(crate) fn encode(state: &State, locks: &[SavedLock], leader: &Option<SavedLock>) -> Result<Vec<u8>> {
    let image = ImageRef {
        state,
        locks,
        leader,
        paused: &state.paused,
        enqueued: &state.enqueued,
        delayed_due: state.schedule.due_times(),
    };
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&[0; 8]); // checksum, filled in below
    bincode::serde::encode_into_std_write(&image, &mut out, bincode::config::standard()).map_err(|e| {
        Error::Encode {
            what: "memory snapshot",
            reason: e.to_string(),
        }
    })?;
    // `out` starts with the HEADER_LEN header bytes pushed above.
    let sum = checksum(&out[HEADER_LEN..]);
    out[MAGIC.len() + 1..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// Decodes a snapshot file's full contents.
pub(crate) fn decode(bytes: &[u8]) -> Result<Image> {
    let corrupt = |reason: String| Error::Decode {
        what: "memory snapshot",
        reason,
    };
    if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a resq memory snapshot (bad magic)".into()));
    }
    let version = bytes[MAGIC.len()];
    if ![FORMAT_VERSION, FORMAT_VERSION_2, FORMAT_VERSION_1].contains(&version) {
        return Err(corrupt(format!(
            "snapshot format version {version} is not supported (this build reads version {FORMAT_VERSION})"
        )));
    }
    // From here on `bytes` is known to hold at least HEADER_LEN bytes.
    let mut stored = [0u8; 8];
    stored.copy_from_slice(&bytes[MAGIC.len() + 1..HEADER_LEN]);
    let body = &bytes[HEADER_LEN..];
    if u64::from_le_bytes(stored) != checksum(body) {
        return Err(corrupt("checksum mismatch: the file is truncated or damaged".into()));
    }
    // The due times of version 3, `None` before it.
    let decoded = if version == FORMAT_VERSION_1 {
        decode_body::<ImageV1>(body).map(|(v1, read)| {
            let image = Image {
                state: v1.state,
                locks: v1.locks,
                leader: v1.leader,
                paused: BTreeSet::new(),
                enqueued: HashMap::new(),
            };
            ((image, None), read)
        })
    } else if version == FORMAT_VERSION_2 {
        decode_body::<ImageV2>(body).map(|(v2, read)| {
            let image = Image {
                state: v2.state,
                locks: v2.locks,
                leader: v2.leader,
                paused: v2.paused,
                enqueued: v2.enqueued,
            };
            ((image, None), read)
        })
    } else {
        decode_body::<ImageV3>(body).map(|(v3, read)| {
            let image = Image {
                state: v3.state,
                locks: v3.locks,
                leader: v3.leader,
                paused: v3.paused,
                enqueued: v3.enqueued,
            };
            ((image, Some(v3.delayed_due)), read)
        })
    };
    let ((mut image, due), read) = decoded.map_err(|e| match e {
        bincode::error::DecodeError::LimitExceeded => corrupt(format!(
            "a length in the snapshot claims more data than its {} byte body holds: the file is damaged",
            body.len()
        )),
        other => corrupt(other.to_string()),
    })?;
    if read != body.len() {
        return Err(corrupt(format!("{} unexpected trailing bytes", body.len() - read)));
    }
    if !image.state.schedule.rebuild(due.as_deref()) {
        return Err(corrupt(format!(
            "the snapshot lists {} delayed due times for {} delayed items: the file is damaged",
            due.map_or(0, |d| d.len()),
            image.state.schedule.item_count()
        )));
    }
    Ok(image)
}

/// Decodes `body` with bincode's standard configuration and a byte limit
/// of the smallest of a few powers of two (spaced by factors of 8) that
/// holds the body.
///
/// bincode counts against the limit every byte it reads and, before it
/// allocates a string or byte buffer, the length the data declares. A valid
/// body never claims more than its own length, while without a limit a
/// damaged length (a checksum only detects accidents) would make bincode
/// allocate whatever it says, up to aborting the process. With the limit an
/// allocation is bounded by 8 times the file's size and a false length is a
/// [`bincode::error::DecodeError::LimitExceeded`]. The limit is a const
/// generic, hence the fixed ladder; a body beyond its last rung (512 GiB on
/// 64-bit targets, 1 GiB on 32-bit ones) is
/// refused with that error too.
fn decode_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> std::result::Result<(T, usize), bincode::error::DecodeError> {
    fn limited<T: serde::de::DeserializeOwned, const LIMIT: usize>(
        body: &[u8],
    ) -> std::result::Result<(T, usize), bincode::error::DecodeError> {
        bincode::serde::decode_from_slice(body, bincode::config::standard().with_limit::<LIMIT>())
    }
    macro_rules! ladder {
        ($($bits:literal),+) => {
            $(
                if body.len() <= 1usize << $bits {
                    return limited::<T, { 1usize << $bits }>(body);
                }
            )+
        };
    }
    ladder!(12, 15, 18, 21, 24, 27, 30);
    #[cfg(target_pointer_width = "64")]
    ladder!(33, 36, 39);
    Err(bincode::error::DecodeError::LimitExceeded)
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads and decodes the snapshot at `path`; `None` if there is no file.
pub(crate) fn read(path: &Path) -> Result<Option<Image>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    };
    match decode(&bytes) {
        Ok(image) => Ok(Some(image)),
        Err(Error::Decode { what, reason }) => Err(Error::Decode {
            what,
            reason: format!("{}: {reason}", path.display()),
        }),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` atomically: to a temporary file in the same
/// directory, flushed to disk, then renamed over `path`.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        // Best effort: the temporary file may not even exist.
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(path, e));
    }
    // Make the rename itself durable where directories can be synced.
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with `version` and `body` (checksum filled in).
    fn file(version: u8, body: Vec<u8>) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(version);
        out.extend_from_slice(&checksum(&body).to_le_bytes());
        out.extend(body);
        out
    }

    fn body<T: Serialize>(image: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(image, bincode::config::standard()).unwrap()
    }

    /// A state with two delayed items: one due at a millisecond time, one
    /// scheduled by bucket.
    fn state() -> State {
        let mut state = State::default();
        state.schedule.add_for_test(11, 10_200, "a");
        state.schedule.add_for_test(13, resq_core::time::bucket_due_ms(13), "b");
        state
    }

    /// What version 2 wrote: the image without the due times.
    #[derive(Serialize)]
    struct V2<'a> {
        state: &'a State,
        locks: Vec<SavedLock>,
        leader: Option<SavedLock>,
        paused: BTreeSet<String>,
        enqueued: HashMap<String, VecDeque<i64>>,
    }

    #[test]
    fn version_2_items_fall_due_with_their_buckets() {
        let state = state();
        let v2 = V2 {
            state: &state,
            locks: Vec::new(),
            leader: None,
            paused: BTreeSet::new(),
            enqueued: HashMap::new(),
        };
        let image = decode(&file(2, body(&v2))).unwrap();
        assert_eq!(
            image.state.schedule.due_times(),
            vec![resq_core::time::bucket_due_ms(11), resq_core::time::bucket_due_ms(13)]
        );
    }

    #[test]
    fn version_3_keeps_due_times_and_refuses_a_wrong_count() {
        let state = state();
        let bytes = encode(&state, &[], &None).unwrap();
        assert_eq!(bytes[MAGIC.len()], 3);
        let image = decode(&bytes).unwrap();
        assert_eq!(
            image.state.schedule.due_times(),
            vec![10_200, resq_core::time::bucket_due_ms(13)]
        );
        // The same image with one due time too few is damaged.
        let short = ImageRef {
            state: &state,
            locks: &[],
            leader: &None,
            paused: &state.paused,
            enqueued: &state.enqueued,
            delayed_due: vec![10_200],
        };
        let err = decode(&file(3, body(&short))).unwrap_err().to_string();
        assert!(err.contains("1 delayed due times for 2 delayed items"), "{err}");
    }
}
