//! A completion stream once it is committed: the first chunk has arrived, so it can no longer
//! be retried or fall back. From here a failure is the stream's last item (an error), never a
//! hang and never a silent end: an idle gap past the limit, the total deadline, a broken
//! connection, a stream that closes before `[DONE]`, a malformed chunk, or the server's own
//! in-band error. Dropping the stream drops the upstream response, which closes the request
//! upstream (vLLM then aborts the generation and frees its KV cache).

use std::{collections::VecDeque, marker::PhantomData, sync::Arc};

use citadel_routing::{AttemptError, Response};
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::time::Instant;

use crate::{
    LlmError,
    flavor::Flavor,
    metrics::LlmMetrics,
    sse::{Event, SseParser},
    wire,
};

/// Chunks of one completion, in the server's order; the last carries the usage.
pub type CompletionStream<C> = BoxStream<'static, Result<C, LlmError>>;

/// What the first-chunk gate hands over when an attempt succeeds.
pub(crate) struct Opened<F: Flavor> {
    pub(crate) response: Response,
    pub(crate) parser: SseParser,
    pub(crate) first: F::Chunk,
}

/// Reads until the first chunk: the gate every attempt must pass before it is committed.
pub(crate) async fn open<F: Flavor>(
    mut response: Response,
    raw: bool,
) -> Result<Opened<F>, AttemptError> {
    let mut parser = SseParser::default();
    loop {
        match parser.next_event().map_err(AttemptError::Malformed)? {
            Some(Event::Data(data)) => {
                return match parse::<F>(raw, &data).map_err(AttemptError::Malformed)? {
                    Ok(first) => Ok(Opened {
                        response,
                        parser,
                        first,
                    }),
                    // Nothing has reached the caller yet: a 5xx may go better elsewhere, a 4xx is
                    // the request's and is passed on as such.
                    Err(in_band) => Err(AttemptError::Status {
                        code: in_band.code,
                        error: citadel_routing::UpstreamError {
                            message: in_band.message,
                            ..Default::default()
                        },
                        retry_after: None,
                    }),
                };
            }
            Some(Event::Done) => {
                return Err(AttemptError::Malformed(
                    "ended the stream before its first chunk".into(),
                ));
            }
            None => {}
        }
        match response.chunk().await? {
            Some(bytes) => parser.push(&bytes).map_err(AttemptError::Malformed)?,
            None => {
                return Err(AttemptError::Malformed(
                    "closed the stream before its first chunk".into(),
                ));
            }
        }
    }
}

/// One event's chunk: typed, or (`raw`) the server's JSON passed on as it came.
fn parse<F: Flavor>(raw: bool, data: &str) -> wire::Parsed<Result<F::Chunk, wire::InBand>> {
    if !raw {
        return F::chunk(data);
    }
    Ok(wire::raw_chunk(data)?.map(|usage| F::raw_chunk(data, usage)))
}

/// Where a committed stream is.
struct Live<F: Flavor> {
    response: Response,
    parser: SseParser,
    ready: VecDeque<F::Chunk>,
    model: String,
    server: Arc<str>,
    deadline: Instant,
    total_ms: u128,
    last: Instant,
    finished: bool,
    raw: bool,
    metrics: Arc<LlmMetrics>,
    attrs: [opentelemetry::KeyValue; 1],
    outcome: &'static str,
    _flavor: PhantomData<F>,
}

impl<F: Flavor> Live<F> {
    async fn next(&mut self) -> Option<Result<F::Chunk, LlmError>> {
        if let Some(chunk) = self.ready.pop_front() {
            return Some(Ok(self.stamp(chunk)));
        }
        if self.finished {
            return None;
        }
        loop {
            match self.parser.next_event() {
                Ok(Some(Event::Data(data))) => {
                    return Some(match parse::<F>(self.raw, &data) {
                        Ok(Ok(chunk)) => Ok(self.stamp(chunk)),
                        Ok(Err(in_band)) => Err(self.fail("failed mid-stream", &in_band.message)),
                        Err(bad) => Err(self.fail("sent an unusable chunk", &bad)),
                    });
                }
                Ok(Some(Event::Done)) => {
                    self.finished = true;
                    self.outcome = "ok";
                    return None;
                }
                Ok(None) => {}
                Err(bad) => return Some(Err(self.fail("sent an unusable stream", &bad))),
            }
            let piece = tokio::time::timeout_at(self.deadline, self.response.chunk()).await;
            match piece {
                Ok(Ok(Some(bytes))) => {
                    if let Err(bad) = self.parser.push(&bytes) {
                        return Some(Err(self.fail("sent an unusable stream", &bad)));
                    }
                }
                Ok(Ok(None)) => {
                    let why = "the body ended";
                    return Some(Err(self.fail("closed the stream before [DONE]", why)));
                }
                Ok(Err(AttemptError::Connect(why))) => {
                    return Some(Err(self.fail("closed the stream before [DONE]", &why)));
                }
                Ok(Err(AttemptError::Timeout(idle))) => {
                    let why = format!("sent nothing for {}ms", idle.as_millis());
                    return Some(Err(self.fail("stalled mid-stream", &why)));
                }
                Ok(Err(error)) => {
                    return Some(Err(self.fail("broke the stream", &error.to_string())));
                }
                Err(_) => {
                    self.finished = true;
                    self.outcome = "deadline";
                    let message = format!(
                        "the completion did not finish within {}ms (llm.request_timeout_ms or \
                         the caller's deadline)",
                        self.total_ms
                    );
                    return Some(Err(LlmError::DeadlineExceeded(message)));
                }
            }
        }
    }

    fn stamp(&mut self, mut chunk: F::Chunk) -> F::Chunk {
        let now = Instant::now();
        self.metrics.itl(&self.attrs, now - self.last);
        self.last = now;
        if let Some(usage) = F::stamp_chunk(&mut chunk, &self.server) {
            self.metrics.tokens(
                &self.model,
                &self.server,
                usage.prompt_tokens,
                usage.completion_tokens,
            );
        }
        chunk
    }

    fn fail(&mut self, what: &str, why: &str) -> LlmError {
        self.finished = true;
        self.outcome = "upstream";
        let endpoint = self.response.endpoint().url().to_string();
        tracing::warn!(model = %self.model, server = %self.server, %why, "LLM stream {what}");
        LlmError::Upstream {
            model: self.model.clone(),
            endpoint,
            message: format!("{what}: {why}"),
        }
    }
}

impl<F: Flavor> Drop for Live<F> {
    fn drop(&mut self) {
        self.metrics.stream_closed(&self.model);
        // Still running when dropped: the caller went away.
        let outcome = if self.finished {
            self.outcome
        } else {
            "cancelled"
        };
        self.metrics.request(&self.model, F::KIND, true, outcome);
    }
}

/// Turns a gated attempt into the caller's stream.
pub(crate) fn committed<F: Flavor>(
    opened: Opened<F>,
    model: String,
    started: Instant,
    deadline: Instant,
    raw: bool,
    metrics: Arc<LlmMetrics>,
) -> CompletionStream<F::Chunk> {
    let now = Instant::now();
    metrics.ttft(&model, now - started);
    metrics.stream_opened(&model);
    let server: Arc<str> = opened.response.endpoint().name().into();
    let attrs = LlmMetrics::model_attrs(&model);
    let live = Live::<F> {
        response: opened.response,
        parser: opened.parser,
        ready: VecDeque::from([opened.first]),
        model,
        server,
        deadline,
        total_ms: (deadline - started).as_millis(),
        last: now,
        finished: false,
        raw,
        metrics,
        attrs,
        outcome: "ok",
        _flavor: PhantomData,
    };
    stream::unfold(live, |mut live| async move {
        live.next().await.map(|item| (item, live))
    })
    .boxed()
}
