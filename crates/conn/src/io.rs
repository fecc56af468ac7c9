//! The socket as hyper sees it, reporting bytes read and writes the client is not taking, and
//! giving hyper's own HTTP/1 refusals (400 for a malformed head, 431 for an oversized one,
//! written before any service sees the request) the body the listener's other answers have.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{RefusalBody, state::ConnState};

/// What hyper writes after the status line of a refusal of its own: nothing a service
/// answers starts this way (their responses carry a content type first).
const HYPER_REFUSAL: &[u8] = b"\r\nconnection: close\r\ncontent-length: 0\r\n";

/// hyper's refusal, answered with `body` instead; `None` for any other write.
fn rewrite(head: &[u8], body: RefusalBody) -> Option<Bytes> {
    if !head.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let line_end = head.windows(2).position(|w| w == b"\r\n")?;
    if !head[line_end..].starts_with(HYPER_REFUSAL) {
        return None;
    }
    let status_line = std::str::from_utf8(&head[..line_end]).ok()?;
    let code: u16 = status_line.get(9..12)?.parse().ok()?;
    let status = http::StatusCode::from_u16(code).ok()?;
    let (content_type, body) = body(status);
    let response = format!(
        "{status_line}\r\nconnection: close\r\ncontent-type: {content_type}\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    Some(Bytes::from(response))
}

pub(crate) struct TrackedIo<T> {
    inner: T,
    state: Arc<ConnState>,
    refusal_body: Option<RefusalBody>,
    /// A rewritten refusal still to be sent.
    pending: Bytes,
}

impl<T> TrackedIo<T> {
    pub(crate) fn new(inner: T, state: Arc<ConnState>, refusal_body: Option<RefusalBody>) -> Self {
        TrackedIo {
            inner,
            state,
            refusal_body,
            pending: Bytes::new(),
        }
    }

    fn written(&self, poll: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match &poll {
            Poll::Ready(Ok(n)) if *n > 0 => self.state.wrote(),
            Poll::Pending => self.state.write_blocked(),
            Poll::Ready(_) => {}
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> TrackedIo<T> {
    /// Takes hyper's refusal (`written` bytes of it in this call) and queues the rewritten one.
    fn rewrote(&mut self, head: &[u8], written: usize) -> Option<usize> {
        let body = self.refusal_body?;
        self.pending = rewrite(head, body)?;
        Some(written)
    }

    /// Sends what is left of a rewritten refusal before anything else.
    fn poll_pending(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let this = &mut *self;
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &this.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            this.pending = this.pending.split_off(n);
        }
        Poll::Ready(Ok(()))
    }
}

// === impl TrackedIo ===

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.state.read(read);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.as_mut().poll_pending(cx))?;
        if let Some(n) = self.rewrote(buf, buf.len()) {
            return Poll::Ready(Ok(n));
        }
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.written(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.as_mut().poll_pending(cx))?;
        let total = bufs.iter().map(|b| b.len()).sum();
        if let Some(n) = bufs.first().and_then(|head| self.rewrote(head, total)) {
            return Poll::Ready(Ok(n));
        }
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_pending(cx))?;
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        if poll.is_pending() {
            self.state.write_blocked();
        }
        poll
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
