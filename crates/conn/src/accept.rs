//! The accept loop: admits connections under the cap, serves each on its own task with its
//! watchdog, and drains them on shutdown.

use std::{
    collections::HashMap,
    convert::Infallible,
    io,
    pin::{Pin, pin},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};
use tower::{Service, ServiceExt};

use crate::{
    Limits,
    body::{InFlight, TrackedBody},
    io::TrackedIo,
    metrics,
    state::{Clock, ConnState},
    watchdog::{self, Verdict},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What `serve` runs on each connection: a cloneable tower service answering hyper's requests.
pub trait ConnectionService<B>:
    Service<Request<Incoming>, Response = Response<B>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S, B> ConnectionService<B> for S where
    S: Service<
            Request<Incoming>,
            Response = Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// What such a service answers with.
pub trait ResponseBody: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static {}

impl<B> ResponseBody for B where
    B: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

/// Serves `service` on every connection `listener` accepts, under `limits`, until `shutdown`
/// resolves; then stops accepting, drains the connections and returns once all have closed.
/// Dropping the returned future aborts every connection.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: ConnectionService<B>,
    B: ResponseBody,
{
    let builder = builder(&limits);
    let limits = Arc::new(limits);
    let clock = Clock::new();
    let registry = Registry::default();
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(&limits, &e).await;
                    continue;
                }
            },
        };
        if !registry.admit(&limits) {
            // Counted, not logged at WARN: a flood would be a log line per connection
            // (the CitadelConnectionsRefused alert reads the counter).
            metrics::closed(limits.name, "refused");
            tracing::debug!(
                listener = limits.name,
                max_connections = limits.max_connections,
                "connection refused: every connection slot is serving a request"
            );
            continue;
        }
        // Small request/response exchanges: without TCP_NODELAY, Nagle's algorithm meets
        // delayed ACKs and adds ~40 ms.
        let _ = stream.set_nodelay(true);
        let state = ConnState::new(clock);
        let slot = registry.insert(state.clone());
        let service = ConnService {
            inner: service.clone(),
            state: state.clone(),
        };
        connections.spawn(connection(
            stream,
            service,
            builder.clone(),
            state,
            limits.clone(),
            stopped.clone(),
            slot,
        ));
    }
    // Closing the listening socket first: new clients are refused rather than left waiting.
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

fn builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout)
        .max_concurrent_streams(limits.max_concurrent_streams);
    if limits.http2_only {
        builder = builder.http2_only();
    }
    builder
}

/// Out of file descriptors and the like: wait a moment rather than spin on accept.
async fn accept_failed(limits: &Limits, error: &io::Error) {
    tracing::warn!(listener = limits.name, error = %error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn connection<S, B>(
    stream: TcpStream,
    service: ConnService<S>,
    builder: Builder<TokioExecutor>,
    state: Arc<ConnState>,
    limits: Arc<Limits>,
    mut stopped: watch::Receiver<bool>,
    slot: Slot,
) where
    S: ConnectionService<B>,
    B: ResponseBody,
{
    metrics::opened(limits.name);
    let stream = match &limits.tls {
        None => crate::tls::Stream::Plain(stream),
        Some(tls) => {
            let handshake = tokio::time::timeout(limits.header_read_timeout, tls.0.accept(stream));
            match handshake.await {
                Ok(Ok(stream)) => crate::tls::Stream::Tls(Box::new(stream)),
                Ok(Err(e)) => {
                    tracing::debug!(listener = limits.name, error = %e, "TLS handshake failed");
                    metrics::closed(limits.name, "tls_handshake_failed");
                    drop(slot);
                    metrics::gone(limits.name);
                    return;
                }
                Err(_) => {
                    closing(&limits, "tls_handshake_timeout");
                    drop(slot);
                    metrics::gone(limits.name);
                    return;
                }
            }
        }
    };
    let io = TokioIo::new(TrackedIo::new(stream, state.clone(), limits.refusal_body));
    let mut conn = pin!(builder.serve_connection_with_upgrades(io, service));
    let verdict = tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(listener = limits.name, error = %e, "connection ended with an error");
            }
            None
        }
        verdict = watchdog::watch(&state, &limits, &mut stopped) => Some(verdict),
    };
    match verdict {
        None => {}
        Some(Verdict::Close(reason)) => closing(&limits, reason),
        Some(Verdict::Drain(reason)) => {
            closing(&limits, reason);
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                reason = watchdog::drain_overdue(&state, &limits) => {
                    tracing::debug!(listener = limits.name, reason, "connection closed while draining");
                }
            }
        }
    }
    drop(slot);
    metrics::gone(limits.name);
}

fn closing(limits: &Limits, reason: &'static str) {
    metrics::closed(limits.name, reason);
    tracing::debug!(listener = limits.name, reason, "closing connection");
}

/// The connection's service: counts each request in flight and tracks its response body.
struct ConnService<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnService<S>
where
    // Spelled out: `Response = Response<B>` is what ties `B` to `S` here.
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone,
    S: ConnectionService<B>,
    B: ResponseBody,
{
    type Response = Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(self.state.clone());
        let response = self.inner.clone().oneshot(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody::new(body, in_flight)))
        })
    }
}

/// The open connections, for the cap and eviction.
#[derive(Default, Clone)]
struct Registry {
    inner: Arc<Mutex<RegistryInner>>,
}

#[derive(Default)]
struct RegistryInner {
    next: u64,
    open: HashMap<u64, Arc<ConnState>>,
}

/// A connection's place in the registry, given back when dropped.
struct Slot {
    id: u64,
    registry: Registry,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.lock().open.remove(&self.id);
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, state: Arc<ConnState>) -> Slot {
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        inner.open.insert(id, state);
        Slot {
            id,
            registry: self.clone(),
        }
    }

    /// Room for one more: below the cap, or by asking the longest-idle connection to close
    /// (a held-open slowloris connection counts as idle). False when every one is busy or
    /// already closing, so connections never exceed twice the cap.
    fn admit(&self, limits: &Limits) -> bool {
        let inner = self.lock();
        if inner.open.len() < limits.max_connections {
            return true;
        }
        let idlest = inner
            .open
            .values()
            .filter_map(|state| state.evictable_since().map(|since| (since, state)))
            .min_by_key(|(since, _)| *since);
        match idlest {
            Some((_, state)) => state.evict(),
            None => false,
        }
    }
}
