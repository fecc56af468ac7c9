//! Wire rules tonic leaves to the server, as one tower layer in front of every service:
//! - a request whose `content-type` is not `application/grpc…` gets HTTP 415 (the gRPC spec's
//!   answer) with INVALID_ARGUMENT for gRPC clients;
//! - a unary or server-streaming call carrying a second request message fails with
//!   INVALID_ARGUMENT instead of having the extra messages ignored, and its one message must
//!   arrive within a deadline (DEADLINE_EXCEEDED), so a call whose body never ends cannot hold
//!   its connection forever;
//! - a `grpc-message` longer than `MAX_MESSAGE_BYTES` is cut, so no status can outgrow a
//!   client's header limit (which turns it into RESOURCE_EXHAUSTED, or breaks the connection).

use std::{
    collections::HashSet,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use prost::Message;
use tokio::time::{Instant, Sleep, sleep_until};
use tonic::{Code, Status};
use tower::{Layer, Service};

/// Longest `grpc-message` sent, in bytes of the decoded text.
const MAX_MESSAGE_BYTES: usize = 1024;
const GRPC_MESSAGE: &str = "grpc-message";
const GRPC_STATUS: &str = "grpc-status";

/// Paths (`/package.Service/Method`) whose request is a single message.
#[derive(Clone, Debug, Default)]
pub struct UnaryMethods(Arc<HashSet<String>>);

impl UnaryMethods {
    /// Every method without client streaming in the encoded descriptor sets.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        let mut paths = HashSet::new();
        for set in sets {
            let set = prost_types::FileDescriptorSet::decode(*set)?;
            for file in &set.file {
                for service in &file.service {
                    for method in service.method.iter().filter(|m| !m.client_streaming()) {
                        paths.insert(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        Ok(UnaryMethods(Arc::new(paths)))
    }
}

#[derive(Clone)]
pub struct HygieneLayer {
    unary: UnaryMethods,
    body_timeout: Duration,
}

impl<S> Layer<S> for HygieneLayer {
    type Service = Hygiene<S>;

    fn layer(&self, inner: S) -> Hygiene<S> {
        Hygiene {
            inner,
            unary: self.unary.clone(),
            body_timeout: self.body_timeout,
        }
    }
}

#[derive(Clone)]
pub struct Hygiene<S> {
    inner: S,
    unary: UnaryMethods,
    body_timeout: Duration,
}

// === impl Hygiene ===

impl Hygiene<()> {
    /// `body_timeout`: how long a unary call's request message may take to arrive.
    pub fn layer(unary: UnaryMethods, body_timeout: Duration) -> HygieneLayer {
        HygieneLayer {
            unary,
            body_timeout,
        }
    }
}

type Respond<F, R, E> = futures_util::future::Either<F, std::future::Ready<Result<R, E>>>;

impl<S, B, ResBody> Service<Request<B>> for Hygiene<S>
where
    S: Service<Request<OneMessage<B>>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<BoundedStatus<ResBody>>;
    type Error = S::Error;
    type Future = futures_util::future::MapOk<
        Respond<S::Future, Response<ResBody>, S::Error>,
        fn(Response<ResBody>) -> Response<BoundedStatus<ResBody>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        use futures_util::{TryFutureExt, future::Either};
        let bound: fn(Response<ResBody>) -> Response<BoundedStatus<ResBody>> = bound_status;
        if !is_grpc(request.headers()) {
            return Either::Right(std::future::ready(Ok(unsupported_media_type()))).map_ok(bound);
        }
        let unary = self.unary.0.contains(request.uri().path());
        let deadline = unary.then(|| Instant::now() + self.body_timeout);
        let request = request.map(|body| OneMessage::new(body, deadline));
        Either::Left(self.inner.call(request)).map_ok(bound)
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn unsupported_media_type<B: Default>() -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS, HeaderValue::from(Code::InvalidArgument as i32));
    headers.insert(
        GRPC_MESSAGE,
        HeaderValue::from_static("content-type%20must%20be%20application/grpc"),
    );
    response
}

fn bound_status<B>(response: Response<B>) -> Response<BoundedStatus<B>> {
    let (mut parts, body) = response.into_parts();
    bound_message(&mut parts.headers);
    Response::from_parts(parts, BoundedStatus(body))
}

/// Cuts an over-long `grpc-message` (a status sent in headers or trailers) on a character
/// boundary, re-encoding it as tonic does.
fn bound_message(headers: &mut HeaderMap) {
    let too_long = headers
        .get(GRPC_MESSAGE)
        .is_some_and(|v| v.len() > MAX_MESSAGE_BYTES);
    if !too_long {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let mut message = status.message().to_string();
    let mut cut = MAX_MESSAGE_BYTES.min(message.len());
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    message.truncate(cut);
    message.push('…');
    // tonic's own encoding of the shortened message, read back from a response it builds.
    let encoded = Status::new(status.code(), message).into_http::<()>();
    match encoded.headers().get(GRPC_MESSAGE) {
        Some(value) => headers.insert(GRPC_MESSAGE, value.clone()),
        None => headers.remove(GRPC_MESSAGE),
    };
}

/// A response body whose trailers carry a bounded `grpc-message`.
#[derive(Default)]
pub struct BoundedStatus<B>(B);

impl<B: Body + Unpin> Body for BoundedStatus<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let frame = ready!(Pin::new(&mut self.0).poll_frame(cx));
        Poll::Ready(frame.map(|frame| {
            frame.map(|frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    bound_message(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// A request body that reads gRPC's length-prefixed framing (a flag byte, a 4-byte length) as
/// it passes, and fails with INVALID_ARGUMENT where tonic would answer INTERNAL or nothing:
/// a second message on a unary call, a unary call with none, a flag byte other than 0 or 1,
/// a body that ends inside a message.
pub struct OneMessage<B> {
    inner: B,
    unary: bool,
    /// Unary calls: when the message must have arrived, and its timer once the body waits.
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    /// The current message's prefix so far, and how many of its 5 bytes have come.
    prefix: ([u8; 5], usize),
    /// Bytes of the current message's payload still to come.
    payload_left: u64,
    messages: u32,
    /// The end has been reached (and checked).
    ended: bool,
}

impl<B> OneMessage<B> {
    /// A unary call's body when `deadline` is set.
    fn new(inner: B, deadline: Option<Instant>) -> Self {
        OneMessage {
            inner,
            unary: deadline.is_some(),
            deadline,
            timer: None,
            prefix: ([0; 5], 0),
            payload_left: 0,
            messages: 0,
            ended: false,
        }
    }

    /// Follows the framing through `data`.
    fn follow(&mut self, mut data: &[u8]) -> Result<(), &'static str> {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.payload_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let (prefix, filled) = &mut self.prefix;
            if *filled == 0 {
                self.messages += 1;
                if self.unary && self.messages > 1 {
                    return Err(
                        "this method takes exactly one request message; the call carried more",
                    );
                }
            }
            let n = (5 - *filled).min(data.len());
            prefix[*filled..*filled + n].copy_from_slice(&data[..n]);
            *filled += n;
            data = &data[n..];
            if prefix[0] > 1 {
                return Err("a gRPC message's flag byte must be 0 or 1 (compressed)");
            }
            if *filled == 5 {
                let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
                self.payload_left = u64::from(length);
                *filled = 0;
            }
        }
        Ok(())
    }

    /// The body is complete: was it whole?
    fn end(&self) -> Result<(), &'static str> {
        if self.prefix.1 > 0 || self.payload_left > 0 {
            return Err("the request ended inside a message");
        }
        if self.unary && self.messages == 0 {
            return Err("this method takes exactly one request message; the call carried none");
        }
        Ok(())
    }
}

impl<B> Body for OneMessage<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let refused =
            |message: &'static str| -> Self::Error { Box::new(Status::invalid_argument(message)) };
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_pending()
            && let Some(deadline) = self.deadline
        {
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
            ready!(timer.as_mut().poll(cx));
            self.ended = true;
            let status = Status::deadline_exceeded(
                "the request message did not arrive in time (grpc.request_body_timeout_ms)",
            );
            return Poll::Ready(Some(Err(Box::new(status))));
        }
        let frame = match ready!(polled) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => {
                self.ended = true;
                return Poll::Ready(self.end().err().map(|m| Err(refused(m))));
            }
        };
        if let Some(data) = frame.data_ref()
            && let Err(message) = self.follow(data.chunk())
        {
            return Poll::Ready(Some(Err(refused(message))));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    /// Only once the end has been seen and checked, so the check always runs.
    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn one_message_is_followed_across_any_split_and_a_second_is_caught() {
        let one = frame(b"hello world");
        for cut in 0..one.len() {
            let mut body = OneMessage::new((), Some(Instant::now()));
            assert!(body.follow(&one[..cut]).is_ok(), "cut at {cut}");
            assert!(body.end().is_err(), "not yet whole at cut {cut}");
            assert!(
                body.follow(&one[cut..]).is_ok() && body.end().is_ok(),
                "cut at {cut}"
            );
        }
        let two = [frame(b"a"), frame(b"")].concat();
        for cut in 0..two.len() {
            let mut body = OneMessage::new((), Some(Instant::now()));
            let ok = body.follow(&two[..cut]).is_ok() && body.follow(&two[cut..]).is_ok();
            assert!(!ok, "cut at {cut}");
        }
        assert!(
            OneMessage::new((), Some(Instant::now())).end().is_err(),
            "no message at all"
        );
        assert!(
            OneMessage::new((), None).end().is_ok(),
            "a stream may carry none"
        );
        let mut flagged = OneMessage::new((), None);
        assert!(flagged.follow(&[7, 0, 0, 0, 0]).is_err(), "flag byte 7");
    }

    #[test]
    fn long_status_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(5000);
        let mut headers = Status::new(Code::NotFound, long)
            .into_http::<()>()
            .headers()
            .clone();
        bound_message(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().len() <= MAX_MESSAGE_BYTES + 3);
        assert!(status.message().ends_with('…'));
    }
}
