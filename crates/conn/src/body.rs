//! Response bodies as hyper pulls them: cut into bounded frames, and reporting whether the
//! client is keeping up.
//!
//! hyper asks a body for its next frame only when the socket (HTTP/1) or the stream's flow
//! control window (HTTP/2) has room, so "a frame handed out and not yet followed by another
//! poll" means the client is behind. Big frames are cut into `MAX_FRAME` pieces (zero-copy),
//! so what waits in hyper's and h2's buffers for a reader that stopped is bounded per stream,
//! and the rest is freed as soon as the connection closes.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::state::ConnState;

/// The largest piece of a response handed to hyper at once.
const MAX_FRAME: usize = 64 * 1024;

/// Counts a request as in flight from its start until its response body is done or dropped.
pub(crate) struct InFlight(Arc<ConnState>);

impl InFlight {
    pub(crate) fn start(state: Arc<ConnState>) -> Self {
        state.request_started();
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

pub struct TrackedBody<B> {
    inner: B,
    /// What is left of a big data frame.
    rest: Bytes,
    /// Since when a frame handed out has not been followed by hyper asking for the next; 0
    /// while the body waits on its own source.
    awaiting_since: Arc<AtomicU64>,
    in_flight: Option<InFlight>,
}

impl<B> TrackedBody<B> {
    pub(crate) fn new(inner: B, in_flight: InFlight) -> Self {
        let state = &in_flight.0;
        let awaiting_since = state.body_clock();
        // Until hyper polls it, the body waits on the client's side of the connection.
        awaiting_since.store(state.now_ms(), Relaxed);
        TrackedBody {
            inner,
            rest: Bytes::new(),
            awaiting_since,
            in_flight: Some(in_flight),
        }
    }

    /// hyper asked for more: whatever was handed out has been taken.
    fn taken(&self) {
        if self.awaiting_since.load(Relaxed) != 0 {
            self.awaiting_since.store(0, Relaxed);
        }
    }

    fn hand_out(&self) {
        if let Some(in_flight) = &self.in_flight {
            self.awaiting_since.store(in_flight.0.now_ms(), Relaxed);
        }
    }

    /// The response is complete: the request no longer counts as in flight.
    fn finish(&mut self) {
        self.taken();
        self.in_flight = None;
    }

    fn cut(&mut self, mut data: Bytes) -> Bytes {
        if data.len() > MAX_FRAME {
            self.rest = data.split_off(MAX_FRAME);
        }
        data
    }
}

// === impl TrackedBody ===

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        this.taken();
        if !this.rest.is_empty() {
            let rest = std::mem::take(&mut this.rest);
            let piece = this.cut(rest);
            this.hand_out();
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match frame {
            Some(Ok(frame)) => {
                let frame = match frame.into_data() {
                    Ok(data) => Frame::data(this.cut(data)),
                    Err(frame) => frame,
                };
                this.hand_out();
                Poll::Ready(Some(Ok(frame)))
            }
            other => {
                this.finish();
                Poll::Ready(other)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        if rest == 0 {
            return inner;
        }
        // Upper before lower: SizeHint checks lower <= upper on every set.
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint.set_lower(inner.lower() + rest);
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::{
        future::poll_fn,
        pin::Pin,
        task::{Context, Poll},
    };

    use bytes::Bytes;
    use http_body::{Body, Frame, SizeHint};

    use super::*;
    use crate::state::Clock;

    /// One data frame, like a JSON answer.
    struct Once(Option<Bytes>);

    impl Body for Once {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_none()
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0.as_ref().map_or(0, |d| d.len() as u64))
        }
    }

    #[tokio::test]
    async fn big_frames_are_cut_and_the_request_counts_until_the_end() {
        let state = ConnState::new(Clock::new());
        let data = Bytes::from(vec![7u8; 200 * 1024]);
        let mut body = TrackedBody::new(Once(Some(data.clone())), InFlight::start(state.clone()));
        assert_eq!(body.size_hint().exact(), Some(200 * 1024));
        assert_eq!(state.active(), 1);
        assert!(state.stalled_since().is_some(), "not yet taken by hyper");
        let mut pieces = Vec::new();
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            let piece = frame.unwrap().into_data().unwrap();
            assert!(piece.len() <= MAX_FRAME);
            pieces.push(piece);
            if body.is_end_stream() {
                break;
            }
            assert_eq!(
                body.size_hint().exact(),
                Some((data.len() - pieces.iter().map(Bytes::len).sum::<usize>()) as u64)
            );
        }
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces.concat(), data.to_vec());
        drop(body);
        assert_eq!(state.active(), 0);
        assert!(state.stalled_since().is_none());
        assert!(state.idle_since().is_some());
    }
}
