//! Wire rules tonic leaves to the server, as one tower layer in front of every service:
//! - a request whose `content-type` is not `application/grpc…` gets HTTP 415 (the gRPC spec's
//!   answer) with INVALID_ARGUMENT for gRPC clients;
//! - a unary or server-streaming call carrying a second request message fails with
//!   INVALID_ARGUMENT instead of having the extra messages ignored;
//! - a `grpc-message` longer than `MAX_MESSAGE_BYTES` is cut, so no status can outgrow a
//!   client's header limit (which turns it into RESOURCE_EXHAUSTED, or breaks the connection).

use std::{
    collections::HashSet,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use prost::Message;
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
}

impl HygieneLayer {
    pub fn new(unary: UnaryMethods) -> Self {
        HygieneLayer { unary }
    }
}

impl<S> Layer<S> for HygieneLayer {
    type Service = Hygiene<S>;

    fn layer(&self, inner: S) -> Hygiene<S> {
        Hygiene {
            inner,
            unary: self.unary.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Hygiene<S> {
    inner: S,
    unary: UnaryMethods,
}

// === impl Hygiene ===

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
        let request = request.map(|body| OneMessage::new(body, unary));
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

/// A request body that fails with INVALID_ARGUMENT when a unary call's second message
/// begins, by reading gRPC's length-prefixed framing (a flag byte, a 4-byte length).
pub struct OneMessage<B> {
    inner: B,
    unary: bool,
    /// Bytes of the current message's prefix still to read, and the prefix so far.
    prefix: ([u8; 5], usize),
    /// Bytes of the current message's payload still to come.
    payload_left: u64,
    messages: u32,
}

impl<B> OneMessage<B> {
    fn new(inner: B, unary: bool) -> Self {
        OneMessage {
            inner,
            unary,
            prefix: ([0; 5], 0),
            payload_left: 0,
            messages: 0,
        }
    }

    /// Follows the framing through `data`; false when a second message starts.
    fn follow(&mut self, mut data: &[u8]) -> bool {
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
                if self.messages > 1 {
                    return false;
                }
            }
            let n = (5 - *filled).min(data.len());
            prefix[*filled..*filled + n].copy_from_slice(&data[..n]);
            *filled += n;
            data = &data[n..];
            if *filled == 5 {
                let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
                self.payload_left = u64::from(length);
                *filled = 0;
            }
        }
        true
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
        let frame = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        if self.unary
            && let Some(data) = frame.data_ref()
            && !self.follow(data.chunk())
        {
            let status = Status::invalid_argument(
                "this method takes exactly one request message; the call carried more",
            );
            return Poll::Ready(Some(Err(Box::new(status))));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
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
            let mut body = OneMessage::new((), true);
            assert!(
                body.follow(&one[..cut]) && body.follow(&one[cut..]),
                "cut at {cut}"
            );
        }
        let two = [frame(b"a"), frame(b"")].concat();
        for cut in 0..two.len() {
            let mut body = OneMessage::new((), true);
            let ok = body.follow(&two[..cut]) && body.follow(&two[cut..]);
            assert!(!ok, "cut at {cut}");
        }
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
