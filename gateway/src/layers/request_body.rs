//! What a request body may cost: a size the `Content-Length` already says is too large is
//! refused at once (413, no `100 Continue` and no wait for the upload), and the body must
//! arrive within a total deadline, with a limit on each pause between its pieces (408).
//!
//! tower-http's `RequestBodyTimeoutLayer` is the pause limit alone: a client sending a byte
//! every few seconds would keep the request open forever.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    body::Body,
    extract::Request,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep, sleep_until};
use tower::{Layer, Service};

use crate::error::{ApiError, INVALID};

/// Why a body stopped being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyTimeout {
    /// The whole body did not arrive within the deadline.
    Total(Duration),
    /// No piece of it arrived for this long.
    Idle(Duration),
}

impl fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyTimeout::Total(d) => write!(
                f,
                "the request body did not arrive within {} ms",
                d.as_millis()
            ),
            BodyTimeout::Idle(d) => write!(
                f,
                "the request body stalled: nothing arrived for {} ms",
                d.as_millis()
            ),
        }
    }
}

impl std::error::Error for BodyTimeout {}

#[derive(Debug, Clone, Copy)]
pub struct RequestBodyLayer {
    limit: usize,
    total: Duration,
    idle: Duration,
}

impl<S> Layer<S> for RequestBodyLayer {
    type Service = RequestBody<S>;

    fn layer(&self, inner: S) -> RequestBody<S> {
        RequestBody {
            inner,
            settings: *self,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RequestBody<S> {
    inner: S,
    settings: RequestBodyLayer,
}

// === impl RequestBody ===

impl RequestBody<()> {
    pub fn layer(limit: usize, total: Duration, idle: Duration) -> RequestBodyLayer {
        RequestBodyLayer { limit, total, idle }
    }
}

impl<S> Service<Request> for RequestBody<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future =
        futures_util::future::Either<S::Future, std::future::Ready<Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        use futures_util::future::Either;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.settings.limit as u64) {
            let refused = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                INVALID,
                format!(
                    "the request body is larger than this server accepts ({} bytes)",
                    self.settings.limit
                ),
            );
            return Either::Right(std::future::ready(Ok(refused.into_response())));
        }
        let settings = self.settings;
        // A request without a body (GET) has nothing to time: no wrapper, no allocation.
        let request = request.map(|body| match http_body::Body::is_end_stream(&body) {
            true => body,
            false => Body::new(DeadlineBody::new(body, settings)),
        });
        Either::Left(self.inner.call(request))
    }
}

/// A body read under both clocks. The timers are made on the first read, so a body that is
/// never read pays for none.
struct DeadlineBody {
    inner: Body,
    arrived: Instant,
    settings: RequestBodyLayer,
    timers: Option<Timers>,
}

struct Timers {
    total: Pin<Box<Sleep>>,
    idle: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Body, settings: RequestBodyLayer) -> Self {
        DeadlineBody {
            inner,
            arrived: Instant::now(),
            settings,
            timers: None,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let settings = this.settings;
        let arrived = this.arrived;
        let timers = this.timers.get_or_insert_with(|| Timers {
            total: Box::pin(sleep_until(arrived + settings.total)),
            idle: Box::pin(sleep_until(Instant::now() + settings.idle)),
        });
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            timers.idle.as_mut().reset(Instant::now() + settings.idle);
            return Poll::Ready(frame);
        }
        if timers.total.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout::Total(
                settings.total,
            )))));
        }
        ready!(timers.idle.as_mut().poll(cx));
        Poll::Ready(Some(Err(axum::Error::new(BodyTimeout::Idle(
            settings.idle,
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
