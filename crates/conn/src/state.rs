//! What a connection's watchdog reads: counters its IO, its requests and their response bodies
//! update as they go. Plain atomics, so the request path pays a few relaxed stores.

use std::{
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::Instant,
};

use tokio::sync::Notify;

/// Milliseconds on a clock shared by every connection of a listener; 0 means "not set".
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock(Instant);

impl Clock {
    pub(crate) fn new() -> Self {
        Clock(Instant::now())
    }

    /// Never 0, so 0 can mean "not set".
    pub(crate) fn now_ms(self) -> u64 {
        self.0.elapsed().as_millis() as u64 + 1
    }
}

pub(crate) struct ConnState {
    pub(crate) clock: Clock,
    pub(crate) accepted_ms: u64,
    /// Requests whose response has not been fully handed to hyper (or dropped).
    active: AtomicUsize,
    /// Requests started on this connection, ever.
    started: AtomicU64,
    /// When `active` last went to 0.
    idle_since_ms: AtomicU64,
    /// Each open response body's clock: since when it has held data hyper has not asked for
    /// (the client is behind on that stream), 0 while it waits on its own source. One clock
    /// per body, so a client reading one HTTP/2 stream cannot hide others it has stalled, and
    /// PINGs written on the socket are no progress.
    bodies: Mutex<Vec<Weak<AtomicU64>>>,
    /// When a socket write started to wait for the client (0: not waiting).
    write_blocked_since_ms: AtomicU64,
    bytes_read: AtomicU64,
    /// Asks the connection to close (another connection needs its slot).
    pub(crate) evicted: Notify,
    evicting: AtomicBool,
}

impl ConnState {
    pub(crate) fn new(clock: Clock) -> Arc<Self> {
        let now = clock.now_ms();
        Arc::new(ConnState {
            clock,
            accepted_ms: now,
            active: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(now),
            bodies: Mutex::new(Vec::new()),
            write_blocked_since_ms: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            evicted: Notify::new(),
            evicting: AtomicBool::new(false),
        })
    }

    pub(crate) fn request_started(&self) {
        self.active.fetch_add(1, Relaxed);
        self.started.fetch_add(1, Relaxed);
    }

    pub(crate) fn request_finished(&self) {
        if self.active.fetch_sub(1, Relaxed) == 1 {
            self.idle_since_ms.store(self.clock.now_ms(), Relaxed);
        }
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Relaxed)
    }

    pub(crate) fn ever_started(&self) -> bool {
        self.started.load(Relaxed) > 0
    }

    /// Since when nothing has been in flight, if nothing is.
    pub(crate) fn idle_since(&self) -> Option<u64> {
        (self.active() == 0).then(|| self.idle_since_ms.load(Relaxed))
    }

    /// Asks the connection to close for a newcomer; false if it was already asked.
    pub(crate) fn evict(&self) -> bool {
        let first = !self.evicting.swap(true, Relaxed);
        if first {
            self.evicted.notify_one();
        }
        first
    }

    pub(crate) fn evictable_since(&self) -> Option<u64> {
        self.idle_since().filter(|_| !self.evicting.load(Relaxed))
    }

    /// A clock for a new response body, watched until the body is dropped.
    pub(crate) fn body_clock(&self) -> Arc<AtomicU64> {
        let clock = Arc::new(AtomicU64::new(0));
        let mut bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        bodies.retain(|body| body.strong_count() > 0);
        bodies.push(Arc::downgrade(&clock));
        clock
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(crate) fn read(&self, bytes: usize) {
        self.bytes_read.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Relaxed)
    }

    pub(crate) fn write_blocked(&self) {
        if self.write_blocked_since_ms.load(Relaxed) == 0 {
            self.write_blocked_since_ms
                .store(self.clock.now_ms(), Relaxed);
        }
    }

    pub(crate) fn wrote(&self) {
        if self.write_blocked_since_ms.load(Relaxed) != 0 {
            self.write_blocked_since_ms.store(0, Relaxed);
        }
    }

    /// Since when the client has stopped taking what is being sent, if it has: the socket
    /// refusing writes, or the response body that has waited longest for hyper to take more.
    pub(crate) fn stalled_since(&self) -> Option<u64> {
        let blocked = self.write_blocked_since_ms.load(Relaxed);
        let bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        bodies
            .iter()
            .filter_map(Weak::upgrade)
            .map(|clock| clock.load(Relaxed))
            .chain(std::iter::once(blocked))
            .filter(|&since| since != 0)
            .min()
    }
}
