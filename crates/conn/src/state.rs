//! What a connection's watchdog reads: counters its IO, its requests and their response bodies
//! update as they go. Plain atomics, so the request path pays a few relaxed stores.

use std::{
    sync::{
        Arc,
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
    /// Response bodies holding data hyper has not asked for yet: the client is behind.
    awaiting_client: AtomicUsize,
    /// Last time hyper took data from a response body or wrote to the socket.
    last_progress_ms: AtomicU64,
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
            awaiting_client: AtomicUsize::new(0),
            last_progress_ms: AtomicU64::new(now),
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

    pub(crate) fn body_awaits_client(&self) {
        self.awaiting_client.fetch_add(1, Relaxed);
    }

    pub(crate) fn body_taken(&self) {
        self.awaiting_client.fetch_sub(1, Relaxed);
        self.progress();
    }

    pub(crate) fn progress(&self) {
        self.last_progress_ms.store(self.clock.now_ms(), Relaxed);
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
        self.progress();
    }

    /// Since when the client has stopped taking what is being sent, if it has.
    pub(crate) fn stalled_since(&self) -> Option<u64> {
        let blocked = self.write_blocked_since_ms.load(Relaxed);
        let waiting =
            (self.awaiting_client.load(Relaxed) > 0).then(|| self.last_progress_ms.load(Relaxed));
        match (blocked, waiting) {
            (0, waiting) => waiting,
            (blocked, Some(waiting)) => Some(blocked.min(waiting)),
            (blocked, None) => Some(blocked),
        }
    }
}
