//! A seeded TCP fault proxy: sits between mailferry and a server on loopback and, at random
//! byte offsets of either direction, drops the connection, stalls it past the client's
//! timeout, truncates it, or resets it (issue 13, "Prove it": fault injection).
//!
//! Every connection gets its fault schedule from the seed and its accept index alone, so a
//! run with the same seed and the same client behaviour meets the same faults at the same
//! byte offsets. Where a fault lands:
//!
//! - **per connection**: with probability [`FaultPlan::per_connection`], one fault at an
//!   offset drawn uniformly in `[0, connection_window)` of one direction (chosen at random);
//!   low offsets hit greetings, logins and listings, the bulk direction carries the rest;
//! - **per MiB**: in each direction, the distance to a fault is drawn from an exponential
//!   distribution with [`FaultPlan::per_mib`] faults per MiB forwarded on average.
//!
//! A connection ends at its first fault, so it never meets more than one. Once
//! [`FaultPlan::max_faults`] have been injected the proxy forwards untouched: a soak loop
//! through it ends by itself. [`FaultPlan::none`] is the fault-free mode, for comparison.
//!
//! The proxy runs on a thread of its own (a current-thread tokio runtime), so it serves sync
//! tests as well as async ones; dropping the [`FaultProxy`] stops it and closes every
//! connection, stalled ones included. It listens on `127.0.0.1:0` and connects only to
//! `127.0.0.1:target`.
//!
//! ```no_run
//! use mailferry_tests::faultproxy::{FaultPlan, FaultProxy};
//! let plan = FaultPlan { per_mib: 4.0, max_faults: 30, ..FaultPlan::seeded(7) };
//! let proxy = FaultProxy::start(110, plan);
//! // point the client at 127.0.0.1:proxy.port() ...
//! eprintln!("{}", proxy.faults());
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Bytes read from one side before they are written to the other.
const CHUNK: usize = 16 * 1024;
const MIB: f64 = 1024.0 * 1024.0;
/// Bound on connecting to the target (loopback: anything slower is a dead target).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What happens to a connection at its fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The chunk in flight is discarded and both sides are closed (FIN).
    Drop,
    /// The bytes before the fault offset are forwarded, then nothing more in either
    /// direction for [`FaultPlan::stall`]; then both sides are closed.
    Stall,
    /// The bytes before the fault offset are forwarded (a prefix of the chunk, usually
    /// mid-line), then both sides are closed (FIN).
    Truncate,
    /// The chunk in flight is discarded and both sides are reset (SO_LINGER 0, so the close
    /// sends RST).
    Reset,
}

impl FaultKind {
    pub const ALL: [FaultKind; 4] = [FaultKind::Drop, FaultKind::Stall, FaultKind::Truncate, FaultKind::Reset];
}

/// Which way the bytes were going when the fault struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to target (commands, APPEND literals).
    ToTarget,
    /// Target to client (greetings, replies, RETR bodies).
    ToClient,
}

/// Relative weights of the fault kinds (0 leaves a kind out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultMix {
    pub drop: u32,
    pub stall: u32,
    pub truncate: u32,
    pub reset: u32,
}

impl Default for FaultMix {
    /// Every kind equally likely.
    fn default() -> Self {
        Self { drop: 1, stall: 1, truncate: 1, reset: 1 }
    }
}

impl FaultMix {
    /// Only `kind`.
    pub fn only(kind: FaultKind) -> Self {
        let mut mix = Self { drop: 0, stall: 0, truncate: 0, reset: 0 };
        *mix.weight_mut(kind) = 1;
        mix
    }

    fn weight_mut(&mut self, kind: FaultKind) -> &mut u32 {
        match kind {
            FaultKind::Drop => &mut self.drop,
            FaultKind::Stall => &mut self.stall,
            FaultKind::Truncate => &mut self.truncate,
            FaultKind::Reset => &mut self.reset,
        }
    }

    fn weight(&self, kind: FaultKind) -> u32 {
        match kind {
            FaultKind::Drop => self.drop,
            FaultKind::Stall => self.stall,
            FaultKind::Truncate => self.truncate,
            FaultKind::Reset => self.reset,
        }
    }

    fn pick(&self, rng: &mut StdRng) -> Option<FaultKind> {
        let total: u64 = FaultKind::ALL.iter().map(|&k| u64::from(self.weight(k))).sum();
        if total == 0 {
            return None;
        }
        let mut at = rng.gen_range(0..total);
        for k in FaultKind::ALL {
            let w = u64::from(self.weight(k));
            if at < w {
                return Some(k);
            }
            at -= w;
        }
        None
    }
}

/// Where and how often faults strike. See the module docs.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub seed: u64,
    /// Chance (0..=1) that a connection gets one fault in its first `connection_window` bytes.
    pub per_connection: f64,
    pub connection_window: u64,
    /// Average faults per MiB forwarded, in each direction (0: none).
    pub per_mib: f64,
    /// Faults injected over the proxy's life at most; it forwards untouched afterwards.
    pub max_faults: u64,
    pub mix: FaultMix,
    /// How long a stalled connection stays open and silent before it is closed: set it
    /// past the client's I/O timeout.
    pub stall: Duration,
}

impl FaultPlan {
    /// No faults at all: a plain forwarder, for comparison runs.
    pub fn none() -> Self {
        Self::seeded(0)
    }

    /// A plan with this seed and no faults yet: set the rates with struct update syntax.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            per_connection: 0.0,
            connection_window: 64 * 1024,
            per_mib: 0.0,
            max_faults: u64::MAX,
            mix: FaultMix::default(),
            stall: Duration::from_secs(3),
        }
    }

    /// The fault each direction of connection `conn` would meet: `(offset, kind)` for
    /// [`Direction::ToTarget`] then [`Direction::ToClient`]. Depends on the seed and `conn` only.
    fn schedule(&self, conn: u64) -> [Option<(u64, FaultKind)>; 2] {
        let mut rng = StdRng::seed_from_u64(splitmix(self.seed ^ splitmix(conn)));
        let mut at: [Option<u64>; 2] = [None, None];
        if self.per_connection > 0.0 && rng.gen::<f64>() < self.per_connection {
            let dir = rng.gen_range(0..2usize);
            at[dir] = Some(rng.gen_range(0..self.connection_window.max(1)));
        }
        if self.per_mib > 0.0 {
            for slot in &mut at {
                // Exponential distance with mean MiB / per_mib (float-to-int `as` saturates).
                let u: f64 = rng.gen();
                let d = (-(1.0 - u).ln() * MIB / self.per_mib) as u64;
                *slot = Some(slot.map_or(d, |s| s.min(d)));
            }
        }
        let kinds = [self.mix.pick(&mut rng), self.mix.pick(&mut rng)];
        [at[0].zip(kinds[0]), at[1].zip(kinds[1])]
    }
}

/// Faults injected so far, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub drop: u64,
    pub stall: u64,
    pub truncate: u64,
    pub reset: u64,
}

impl FaultCounts {
    pub fn total(&self) -> u64 {
        self.drop + self.stall + self.truncate + self.reset
    }

    pub fn get(&self, kind: FaultKind) -> u64 {
        match kind {
            FaultKind::Drop => self.drop,
            FaultKind::Stall => self.stall,
            FaultKind::Truncate => self.truncate,
            FaultKind::Reset => self.reset,
        }
    }
}

impl std::ops::Add for FaultCounts {
    type Output = FaultCounts;
    fn add(self, o: FaultCounts) -> FaultCounts {
        FaultCounts {
            drop: self.drop + o.drop,
            stall: self.stall + o.stall,
            truncate: self.truncate + o.truncate,
            reset: self.reset + o.reset,
        }
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} faults (drop {}, stall {}, truncate {}, reset {})",
            self.total(),
            self.drop,
            self.stall,
            self.truncate,
            self.reset
        )
    }
}

/// One injected fault, for reproducing a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultEvent {
    /// Connection index, in accept order from 0.
    pub conn: u64,
    pub direction: Direction,
    /// Bytes of that direction forwarded before the fault.
    pub offset: u64,
    pub kind: FaultKind,
}

#[derive(Debug, Default)]
struct Shared {
    counts: [AtomicU64; 4],
    injected: AtomicU64,
    connections: AtomicU64,
    bytes: [AtomicU64; 2],
    events: Mutex<Vec<FaultEvent>>,
}

impl Shared {
    /// Take one of the `max` fault slots; false once they are all used.
    fn reserve(&self, max: u64) -> bool {
        self.injected.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).is_ok()
    }

    fn record(&self, event: FaultEvent) {
        let i = FaultKind::ALL.iter().position(|&k| k == event.kind).unwrap_or(0);
        self.counts[i].fetch_add(1, Ordering::SeqCst);
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }
}

/// A running proxy on `127.0.0.1:port()`. See the module docs.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    target: u16,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Listen on `127.0.0.1:0` and forward each connection to `127.0.0.1:target` under `plan`.
    pub fn start(target: u16, plan: FaultPlan) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("local address").port();
        let shared = Arc::new(Shared::default());
        let (tx, rx) = oneshot::channel();
        let sh = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("faultproxy-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    let plan = Arc::new(plan);
                    tokio::select! {
                        () = accept_loop(listener, target, plan, sh) => {}
                        _ = rx => {}
                    }
                });
                // Dropping the runtime drops every connection task: stalled sockets close too.
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .expect("spawn proxy thread");
        FaultProxy { port, target, shared, shutdown: Some(tx), thread: Some(thread) }
    }

    /// A fault-free forwarder.
    pub fn transparent(target: u16) -> FaultProxy {
        Self::start(target, FaultPlan::none())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn target(&self) -> u16 {
        self.target
    }

    /// Faults injected so far, by kind.
    pub fn faults(&self) -> FaultCounts {
        let c = |i: usize| self.shared.counts[i].load(Ordering::SeqCst);
        FaultCounts { drop: c(0), stall: c(1), truncate: c(2), reset: c(3) }
    }

    /// Every fault injected so far, in the order they struck.
    pub fn events(&self) -> Vec<FaultEvent> {
        self.shared.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Bytes forwarded so far in one direction.
    pub fn bytes(&self, direction: Direction) -> u64 {
        self.shared.bytes[direction as usize].load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, target: u16, plan: Arc<FaultPlan>, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // EMFILE and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let conn = shared.connections.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(serve(client, target, conn, Arc::clone(&plan), Arc::clone(&shared)));
    }
}

/// How one direction ended.
enum End {
    /// The source side closed; the close was passed on.
    Eof,
    /// A read or write failed, or the other direction stopped the connection.
    Stopped,
    /// This direction's fault struck.
    Fault(FaultKind),
}

async fn serve(mut client: TcpStream, target: u16, conn: u64, plan: Arc<FaultPlan>, shared: Arc<Shared>) {
    let Ok(Ok(mut server)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(("127.0.0.1", target))).await
    else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let [up, down] = plan.schedule(conn);
    // Either direction ending abnormally stops the other one at once.
    let (stop, _) = watch::channel(false);
    let (fault_up, fault_down) = {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let ctx = Pump { conn, plan: &plan, shared: &shared, stop: &stop };
        tokio::join!(
            ctx.pump(&mut cr, &mut sw, Direction::ToTarget, up),
            ctx.pump(&mut sr, &mut cw, Direction::ToClient, down)
        )
    };
    let fault = [fault_up, fault_down].into_iter().find_map(|e| match e {
        End::Fault(k) => Some(k),
        End::Eof | End::Stopped => None,
    });
    match fault {
        Some(FaultKind::Stall) => tokio::time::sleep(plan.stall).await,
        // Deprecated because a *non-zero* linger blocks the thread on drop; zero does not: the
        // close discards the send queue and sends RST at once.
        #[allow(deprecated)]
        Some(FaultKind::Reset) => {
            let _ = client.set_linger(Some(Duration::ZERO));
            let _ = server.set_linger(Some(Duration::ZERO));
        }
        Some(FaultKind::Drop | FaultKind::Truncate) | None => {}
    }
    drop(client);
    drop(server);
}

struct Pump<'a> {
    conn: u64,
    plan: &'a FaultPlan,
    shared: &'a Shared,
    stop: &'a watch::Sender<bool>,
}

impl Pump<'_> {
    async fn pump<R, W>(&self, r: &mut R, w: &mut W, dir: Direction, mut fault: Option<(u64, FaultKind)>) -> End
    where
        R: AsyncReadExt + Unpin,
        W: AsyncWriteExt + Unpin,
    {
        let mut stopped = self.stop.subscribe();
        let mut buf = vec![0u8; CHUNK];
        let mut offset = 0u64;
        loop {
            let n = tokio::select! {
                read = r.read(&mut buf) => match read {
                    Ok(0) => {
                        let _ = w.shutdown().await;
                        return End::Eof;
                    }
                    Ok(n) => n,
                    Err(_) => return self.halt(),
                },
                () = until_stopped(&mut stopped) => return End::Stopped,
            };
            let mut chunk = &buf[..n];
            let mut struck = None;
            if let Some((at, kind)) = fault {
                if at < offset + n as u64 {
                    if self.shared.reserve(self.plan.max_faults) {
                        let prefix = (at - offset) as usize;
                        chunk = match kind {
                            FaultKind::Stall | FaultKind::Truncate => &chunk[..prefix],
                            FaultKind::Drop | FaultKind::Reset => &[],
                        };
                        self.shared.record(FaultEvent { conn: self.conn, direction: dir, offset: at, kind });
                        struck = Some(kind);
                    } else {
                        fault = None; // the cap is reached: forward untouched from now on
                    }
                }
            }
            let written = tokio::select! {
                w = async { w.write_all(chunk).await?; w.flush().await } => w.is_ok(),
                () = until_stopped(&mut stopped) => return End::Stopped,
            };
            self.shared.bytes[dir as usize].fetch_add(chunk.len() as u64, Ordering::SeqCst);
            offset += chunk.len() as u64;
            if let Some(kind) = struck {
                self.stop.send_replace(true);
                return End::Fault(kind);
            }
            if !written {
                return self.halt();
            }
        }
    }

    fn halt(&self) -> End {
        self.stop.send_replace(true);
        End::Stopped
    }
}

/// Resolves once the connection is stopped (the watch's `Ref` is not `Send`: drop it here).
async fn until_stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// SplitMix64 finaliser: spreads (seed, connection index) over the seed space.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on the test's runtime.
    async fn echo() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        port
    }

    fn data(n: usize) -> Vec<u8> {
        let mut rng = StdRng::seed_from_u64(n as u64);
        (0..n).map(|_| rng.gen()).collect()
    }

    /// Send `payload` through `port`, reading the echo concurrently; what came back, and
    /// whether the read ended in an error (reset) rather than EOF.
    async fn round_trip(port: u16, payload: &[u8]) -> (Vec<u8>, bool) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (mut r, mut w) = s.split();
        let send = async {
            let _ = w.write_all(payload).await;
            let _ = w.shutdown().await;
        };
        let recv = async {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 8192];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) => return (got, false),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(_) => return (got, true),
                }
            }
        };
        let ((), out) =
            tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(send, recv) }).await.unwrap();
        out
    }

    #[tokio::test]
    async fn without_faults_every_byte_goes_through_both_ways() {
        let proxy = FaultProxy::transparent(echo().await);
        let payload = data(3 * 1024 * 1024 + 17);
        for _ in 0..3 {
            let (got, reset) = round_trip(proxy.port(), &payload).await;
            assert!(!reset);
            assert!(got == payload, "{} bytes back of {}", got.len(), payload.len());
        }
        assert_eq!(proxy.faults().total(), 0);
        assert_eq!(proxy.connections(), 3);
        assert_eq!(proxy.bytes(Direction::ToTarget), 3 * payload.len() as u64);
        assert_eq!(proxy.bytes(Direction::ToClient), 3 * payload.len() as u64);
    }

    fn every_connection(kind: FaultKind) -> FaultPlan {
        FaultPlan {
            per_connection: 1.0,
            connection_window: 256 * 1024,
            mix: FaultMix::only(kind),
            stall: Duration::from_millis(500),
            ..FaultPlan::seeded(42)
        }
    }

    #[tokio::test]
    async fn a_truncation_forwards_exactly_the_bytes_before_the_offset() {
        let proxy = FaultProxy::start(echo().await, every_connection(FaultKind::Truncate));
        let payload = data(1024 * 1024);
        let (got, _) = round_trip(proxy.port(), &payload).await;
        let ev = proxy.events();
        assert_eq!(ev.len(), 1);
        assert_eq!(proxy.faults(), FaultCounts { truncate: 1, ..Default::default() });
        // Whichever direction was cut, the echo is a prefix that ends at or before the cut.
        assert!(got.len() as u64 <= ev[0].offset && ev[0].offset < payload.len() as u64, "{} {:?}", got.len(), ev[0]);
        assert!(payload.starts_with(&got));
        if ev[0].direction == Direction::ToClient {
            assert_eq!(got.len() as u64, ev[0].offset, "the client receives exactly the prefix");
        }
    }

    #[tokio::test]
    async fn drops_and_resets_cut_the_connection() {
        for kind in [FaultKind::Drop, FaultKind::Reset] {
            let proxy = FaultProxy::start(echo().await, every_connection(kind));
            let payload = data(1024 * 1024);
            let (got, reset) = round_trip(proxy.port(), &payload).await;
            assert!(got.len() < payload.len() && payload.starts_with(&got), "{kind:?}: {} bytes", got.len());
            // A drop may read as EOF or, with unread bytes in the proxy's buffers, as a reset.
            assert!(reset || kind == FaultKind::Drop, "{kind:?}: a reset reads as an error");
            assert_eq!(proxy.faults().get(kind), 1);
            assert_eq!(proxy.faults().total(), 1);
        }
    }

    #[tokio::test]
    async fn a_stall_holds_the_connection_silent_then_closes_it() {
        let proxy = FaultProxy::start(echo().await, every_connection(FaultKind::Stall));
        let payload = data(1024 * 1024);
        let started = Instant::now();
        let (got, _) = round_trip(proxy.port(), &payload).await;
        assert!(started.elapsed() >= Duration::from_millis(500), "{:?}", started.elapsed());
        assert!(got.len() < payload.len() && payload.starts_with(&got));
        assert_eq!(proxy.faults().stall, 1);
    }

    #[tokio::test]
    async fn the_cap_ends_the_faults_and_the_schedule_follows_the_seed() {
        let plan = FaultPlan { max_faults: 2, ..every_connection(FaultKind::Truncate) };
        let proxy = FaultProxy::start(echo().await, plan.clone());
        let payload = data(512 * 1024);
        let mut whole = 0;
        for _ in 0..5 {
            if round_trip(proxy.port(), &payload).await.0 == payload {
                whole += 1;
            }
        }
        assert_eq!(proxy.faults().total(), 2);
        assert_eq!(whole, 3, "after the cap, connections go through untouched");

        // Same seed, same schedule; another seed, another one.
        assert_eq!(plan.schedule(3), plan.schedule(3));
        let other = FaultPlan { seed: 43, ..plan.clone() };
        assert_ne!(
            (0..8).map(|c| plan.schedule(c)).collect::<Vec<_>>(),
            (0..8).map(|c| other.schedule(c)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn per_mib_faults_land_at_the_configured_rate() {
        let plan = FaultPlan { per_mib: 4.0, ..FaultPlan::seeded(9) };
        let n = 2000u64;
        let mean = (0..n).map(|c| plan.schedule(c)[1].unwrap().0).sum::<u64>() as f64 / n as f64;
        // Mean distance MiB/4 = 262,144 bytes; 2,000 draws land within 10 %.
        assert!((mean - MIB / 4.0).abs() < MIB / 40.0, "mean distance {mean}");
        assert!(FaultPlan::none().schedule(0) == [None, None]);
    }
}
