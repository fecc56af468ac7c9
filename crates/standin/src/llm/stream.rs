//! The response bodies: a unary answer, or an SSE stream paced by one timer.
//!
//! A stream is written step by step: step `s` carries content chunk `s` of every choice (the
//! first step also the role chunks, the last also the finish chunks, the usage chunk and
//! `[DONE]`), all in one buffer, then waits `itl_ms`. The [`Tracker`] rides in the body, so a
//! body dropped before its end (hyper drops it when the client goes away) counts an abort.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::{
    LlmBehaviour,
    render::{Chunks, DONE, MALFORMED, Meta},
    request::{Endpoint, Plan},
    track::Tracker,
};

/// The error a body returns to make hyper drop the connection mid-answer.
#[derive(Debug)]
pub(crate) struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stream cut on purpose")
    }
}

impl std::error::Error for Cut {}

/// How long a cut waits after its last data, so hyper flushes that data before closing.
const CUT_GRACE: Duration = Duration::from_millis(2);

pub(crate) enum LlmBody {
    Full(Option<Bytes>),
    Sse(Box<SseBody>),
}

impl Body for LlmBody {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        match self.get_mut() {
            LlmBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            LlmBody::Sse(sse) => sse.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            LlmBody::Full(data) => data.is_none(),
            LlmBody::Sse(sse) => matches!(sse.state, State::Done),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            LlmBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            LlmBody::Sse(_) => SizeHint::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The next step may be written now.
    Ready,
    /// Waiting for the timer before the next step.
    Waiting,
    /// The last data is out; close the connection once the timer fires.
    Cutting,
    /// Never writes again (the connection stays open until the client leaves).
    Stalled,
    Done,
}

pub(crate) struct SseBody {
    plan: Plan,
    chunks: Chunks,
    tracker: Tracker,
    /// The next step.
    step: usize,
    /// Content chunks per choice; the stream has at least one step even when it is 0.
    per_choice: usize,
    /// Content chunks written so far, over all choices.
    written: u32,
    cut_after: Option<u32>,
    malformed_after: Option<u32>,
    stall_after: Option<u32>,
    itl: Duration,
    timer: Pin<Box<Sleep>>,
    state: State,
}

impl SseBody {
    pub(crate) fn new(plan: Plan, meta: &Meta, behaviour: &LlmBehaviour, tracker: Tracker) -> Self {
        SseBody {
            chunks: Chunks::new(&plan, meta),
            per_choice: plan.output.chunks(),
            plan,
            tracker,
            step: 0,
            written: 0,
            cut_after: behaviour.cut_after,
            malformed_after: behaviour.malformed_after,
            stall_after: behaviour.stall_after,
            itl: Duration::from_millis(behaviour.itl_ms),
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            state: State::Ready,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        loop {
            match self.state {
                State::Done => return Poll::Ready(None),
                State::Stalled => return Poll::Pending,
                State::Waiting => {
                    std::task::ready!(self.timer.as_mut().poll(cx));
                    self.state = State::Ready;
                }
                State::Cutting => {
                    std::task::ready!(self.timer.as_mut().poll(cx));
                    self.tracker.settle();
                    self.state = State::Done;
                    return Poll::Ready(Some(Err(Cut)));
                }
                State::Ready => {
                    let data = self.step();
                    if data.is_empty() {
                        // A stall or a cut right at a step's start: nothing to write.
                        continue;
                    }
                    self.tracker.wrote();
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(data)))));
                }
            }
        }
    }

    /// Writes the next step and decides what follows it.
    fn step(&mut self) -> Vec<u8> {
        let choices = self.plan.choices;
        let mut out = Vec::with_capacity(320 * choices as usize);
        if self.step == 0 && self.plan.endpoint == Endpoint::Chat {
            for index in 0..choices {
                self.chunks.role(&mut out, index);
            }
        }
        if self.step < self.per_choice {
            for index in 0..choices {
                if let Some(next) = self.checkpoint(&mut out) {
                    self.state = next;
                    return out;
                }
                self.chunks.content(&mut out, &self.plan, index, self.step);
                self.written += 1;
            }
        }
        self.step += 1;
        if self.step < self.per_choice {
            self.wait(self.itl);
            return out;
        }
        if let Some(next) = self.checkpoint(&mut out) {
            self.state = next;
            return out;
        }
        for index in 0..choices {
            self.chunks.finish(&mut out, &self.plan, index);
        }
        if self.plan.include_usage {
            self.chunks.usage(&mut out, &self.plan);
        }
        out.extend_from_slice(DONE);
        self.tracker.complete();
        self.state = State::Done;
        out
    }

    /// Before the next content chunk (or the end): is it time to cut, stall or corrupt?
    fn checkpoint(&mut self, out: &mut Vec<u8>) -> Option<State> {
        let written = Some(self.written);
        if self.malformed_after == written {
            self.malformed_after = None;
            out.extend_from_slice(MALFORMED);
        }
        if self.cut_after == written {
            self.timer.as_mut().reset(Instant::now() + CUT_GRACE);
            return Some(State::Cutting);
        }
        if self.stall_after == written {
            return Some(State::Stalled);
        }
        None
    }

    /// Arms the stream's one timer `after` from its last deadline (so pacing does not drift).
    fn wait(&mut self, after: Duration) {
        if after.is_zero() {
            self.state = State::Ready;
            return;
        }
        let now = Instant::now();
        let deadline = (self.timer.deadline() + after).max(now);
        self.timer.as_mut().reset(deadline);
        self.state = State::Waiting;
    }
}
