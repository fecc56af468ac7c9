//! Serving connections: the accept loop every listener of Citadel runs, and the limits a single
//! client cannot escape there.
//!
//! This crate owns the life of a client connection, from accept to close: a cap on open
//! connections (the longest-idle one is evicted for a newcomer, a newcomer is refused when all
//! are busy), a deadline for a request head, an idle timeout, HTTP/2 keep-alive pings, a cap on
//! concurrent HTTP/2 streams, a write timeout for responses the client stops reading (so a slow
//! reader cannot pin memory), and a drain that closes idle connections at once on shutdown. It
//! knows HTTP only as hyper frames it: nothing of routes, gRPC, JSON or configuration files.

#![forbid(unsafe_code)]

mod accept;
mod body;
mod io;
mod metrics;
mod state;
mod tls;
mod watchdog;

use std::time::Duration;

pub use accept::{ConnectionService, ResponseBody, serve};
pub use tls::{Tls, install_default_crypto};

/// The limits of one listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Used in logs and metrics (`http`, `grpc`).
    pub name: &'static str,
    /// Open connections at most; past it the longest-idle one is closed for the newcomer, or
    /// the newcomer is refused when every connection has a request in flight.
    pub max_connections: usize,
    /// Time for a request head to arrive, counted from when the connection starts waiting for
    /// one (so it also closes HTTP/1.1 keep-alive connections left silent that long), and for
    /// a new connection to send its first bytes.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// A response the client makes no progress reading for this long closes its connection.
    pub write_timeout: Duration,
    /// HTTP/2 PING interval, and how long to wait for its answer before closing.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Concurrent streams on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// At shutdown, how long a connection with no request in flight (a half-sent request head,
    /// say) may stay before it is closed; connections serving requests drain normally.
    pub drain_grace: Duration,
    /// Refuse HTTP/1 (the gRPC listener).
    pub http2_only: bool,
    /// The body of hyper's own HTTP/1 refusals (a malformed or oversized request head), which
    /// otherwise go out empty.
    pub refusal_body: Option<RefusalBody>,
    /// Serve TLS (`tls.rs`); `None`: plain TCP.
    pub tls: Option<Tls>,
}

/// A content type and body for a refusal with this status.
pub type RefusalBody = fn(http::StatusCode) -> (&'static str, String);
