//! The routing core every HTTP upstream shares: embedding servers (Ollama, OpenAI-compatible)
//! and LLM servers (vLLM) alike.
//!
//! It owns the endpoints (a base URL, a weight, a key, connect / first-byte / idle timeouts, one
//! pooled client per origin), the choice among them (power of two choices on requests in flight
//! plus the load a server reports), a circuit breaker per endpoint, retries with full-jitter
//! backoff bounded by the caller's deadline and `Retry-After`, background probes, and the
//! health vocabulary both services publish ([`ModelState`], [`BreakerState`],
//! [`EndpointView`]). [`Router::call`] is the one attempt loop (pick → call → verdict →
//! backoff); the caller's closure makes one attempt and may return a streaming [`Response`]
//! whose body is read after the loop has committed to it.
//!
//! It must not know any wire format beyond HTTP and the common error-body shapes, nor any other
//! Citadel crate: the embedding and chat adapters sit on top and map [`RouteError`] to their
//! service's error, each in one place.

#![forbid(unsafe_code)]

mod attempt;
mod balance;
mod breaker;
mod clients;
mod endpoint;
mod error;
mod health;
mod metrics;
mod probe;
mod retry;
mod router;
mod settings;

pub use attempt::{AttemptError, UpstreamError};
pub use clients::ClientPool;
pub use endpoint::{Endpoint, Response, set_header_injector};
pub use error::RouteError;
pub use health::{BreakerState, EndpointView, ModelState};
pub use probe::Probe;
pub use router::{Attempt, Router};
pub use settings::{BreakerPolicy, EndpointSettings, RetryPolicy, RouterSettings, Timeouts};
