//! Round trips and statements per job, counted on the wire (issue #17).
//!
//! [`Proxy`] sits on a loopback port in front of a Redis or PostgreSQL
//! server and relays every connection to it. It counts **round trips**:
//! on each connection, every time the server answers after the client
//! has sent something (a pipeline written in one go, or PostgreSQL's
//! Parse/Bind/Execute/Sync, is one round trip, as it costs one wait for
//! the server). With [`Protocol::Postgres`] it also reads the client's
//! message frames and counts **statements**: simple queries (`Q`) and
//! executions of prepared ones (`E`). Server pushes a client did not ask
//! for (pub/sub messages, `NOTIFY`) count nothing unless the client spoke
//! since the last answer, so a listener connection adds at most one per
//! command it sends.
//!
//! `cargo run --release -p resq-benches --bin per_job -- --count`

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Which protocol the proxied server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// RESP: round trips only (the server's `INFO commandstats` counts
    /// commands).
    Redis,
    /// PostgreSQL's frontend/backend protocol: round trips and statements.
    Postgres,
}

/// What a proxy has counted since it started or was last [`Proxy::take`]n.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Answers that followed a request, over all connections.
    pub round_trips: u64,
    /// PostgreSQL statements run (`Q` and `E` messages); 0 for Redis.
    pub statements: u64,
    /// Connections opened through the proxy.
    pub connections: u64,
}

#[derive(Default)]
struct Counters {
    round_trips: AtomicU64,
    statements: AtomicU64,
    connections: AtomicU64,
}

/// A counting relay to one server; it stops when dropped.
pub struct Proxy {
    /// The loopback address to connect to instead of the server.
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    stop: CancellationToken,
}

impl Proxy {
    /// Listens on a free loopback port and relays to `upstream`.
    pub async fn start(upstream: SocketAddr, protocol: Protocol) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let (c, s) = (Arc::clone(&counters), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = s.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                c.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(relay(client, upstream, protocol, Arc::clone(&c), s.clone()));
            }
        });
        Ok(Proxy { addr, counters, stop })
    }

    /// The counts so far, and zero again.
    pub fn take(&self) -> Counts {
        Counts {
            round_trips: self.counters.round_trips.swap(0, Ordering::Relaxed),
            statements: self.counters.statements.swap(0, Ordering::Relaxed),
            connections: self.counters.connections.swap(0, Ordering::Relaxed),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Relays one connection both ways until either side closes.
async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    protocol: Protocol,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Set by the client's bytes, cleared (and counted) by the next answer.
    let asked = Arc::new(AtomicBool::new(false));
    let up = {
        let (asked, counters) = (Arc::clone(&asked), Arc::clone(&counters));
        async move {
            let mut frames = Frames::new(protocol);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let chunk = buf.get(..n).unwrap_or_default();
                let statements = frames.feed(chunk);
                counters.statements.fetch_add(statements, Ordering::Relaxed);
                asked.store(true, Ordering::Release);
                if sw.write_all(chunk).await.is_err() {
                    return;
                }
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if asked.swap(false, Ordering::AcqRel) {
                counters.round_trips.fetch_add(1, Ordering::Relaxed);
            }
            if cw.write_all(buf.get(..n).unwrap_or_default()).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = up => {}
        _ = down => {}
    }
}

/// The client's PostgreSQL message frames, read across chunk boundaries:
/// the startup message (no type byte), then `type, int32 length, body`.
struct Frames {
    protocol: Protocol,
    started: bool,
    /// Bytes of the current frame's header read so far.
    header: Vec<u8>,
    /// Body bytes of the current frame still to skip.
    skip: usize,
}

impl Frames {
    fn new(protocol: Protocol) -> Self {
        Frames {
            protocol,
            started: false,
            header: Vec::with_capacity(5),
            skip: 0,
        }
    }

    /// Reads `chunk` and returns how many statements began in it.
    fn feed(&mut self, mut chunk: &[u8]) -> u64 {
        if self.protocol != Protocol::Postgres {
            return 0;
        }
        let mut statements = 0;
        while !chunk.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(chunk.len());
                self.skip -= n;
                chunk = chunk.get(n..).unwrap_or_default();
                continue;
            }
            // The startup message (and an SSL or cancel request) has only a
            // length; every later message a type byte first.
            let header_len = if self.started { 5 } else { 4 };
            let want = header_len - self.header.len();
            let n = want.min(chunk.len());
            self.header.extend_from_slice(chunk.get(..n).unwrap_or_default());
            chunk = chunk.get(n..).unwrap_or_default();
            if self.header.len() < header_len {
                break;
            }
            let len_bytes = self.header.get(header_len - 4..header_len).unwrap_or_default();
            let len = len_bytes.try_into().map(u32::from_be_bytes).unwrap_or(4) as usize;
            if self.started && matches!(self.header.first(), Some(b'Q' | b'E')) {
                statements += 1;
            }
            // The length counts itself (4 bytes) but not the type byte.
            self.skip = len.saturating_sub(4);
            self.header.clear();
            // An SSL or GSS encryption request (8 bytes in all) comes
            // before the startup message, which has no type byte either.
            self.started = self.started || len != 8;
        }
        statements
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![kind];
        f.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn counts_statements_across_chunks() {
        let mut stream = Vec::new();
        // An SSL request (refused), then the startup message.
        stream.extend_from_slice(&8u32.to_be_bytes());
        stream.extend_from_slice(&80_877_103u32.to_be_bytes());
        stream.extend_from_slice(&12u32.to_be_bytes());
        stream.extend_from_slice(&[0, 3, 0, 0, b'u', 0, b'p', 0]);
        stream.extend(frame(b'Q', b"SELECT 1\0"));
        stream.extend(frame(b'P', b"\0SELECT $1\0\0\0"));
        stream.extend(frame(b'B', b"\0\0\0\0\0\0\0"));
        stream.extend(frame(b'E', b"\0\0\0\0\0"));
        stream.extend(frame(b'S', b""));
        stream.extend(frame(b'E', b"\0\0\0\0\0"));
        for size in [1, 2, 3, 7, stream.len()] {
            let mut frames = Frames::new(Protocol::Postgres);
            let total: u64 = stream.chunks(size).map(|c| frames.feed(c)).sum();
            assert_eq!(total, 3, "chunks of {size}");
        }
        assert_eq!(Frames::new(Protocol::Redis).feed(&stream), 0);
    }
}
