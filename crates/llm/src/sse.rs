//! Server-sent events as OpenAI-compatible servers write them: `data: <json>\n\n` frames,
//! ending with `data: [DONE]`. Only `data` lines matter; comments and other fields are skipped.

use bytes::{Buf, BytesMut};

/// One event can be this large at most: a chunk is a few hundred bytes, and a server that
/// never ends an event must not make us buffer without bound.
const MAX_EVENT_BYTES: usize = 1 << 20;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Data(String),
    Done,
}

#[derive(Default)]
pub(crate) struct SseParser {
    buffer: BytesMut,
    /// Bytes of `buffer` already searched for a separator without finding one: a trickled
    /// event is scanned once, not once per read.
    scanned: usize,
}

impl SseParser {
    /// Adds bytes as they arrive.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() > MAX_EVENT_BYTES && self.boundary().is_none() {
            return Err(format!("sent an event over {MAX_EVENT_BYTES} bytes"));
        }
        Ok(())
    }

    /// The next complete event, if one has arrived.
    pub(crate) fn next_event(&mut self) -> Result<Option<Event>, String> {
        while let Some((end, skip)) = self.boundary() {
            let raw = self.buffer.split_to(end);
            self.buffer.advance(skip);
            self.scanned = 0;
            let text = std::str::from_utf8(&raw).map_err(|_| "sent an event that is not UTF-8")?;
            let data: Vec<&str> = text
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if data.is_empty() {
                continue;
            }
            let data = data.join("\n");
            return Ok(Some(match data.trim() {
                "[DONE]" => Event::Done,
                _ => Event::Data(data),
            }));
        }
        Ok(None)
    }

    /// Where the first event ends, and how long its separator is.
    fn boundary(&mut self) -> Option<(usize, usize)> {
        let b = &self.buffer[..];
        // A separator may straddle the end of what was scanned: step back over it.
        let from = self.scanned.saturating_sub(3);
        let found = (from..b.len()).find_map(|i| {
            if b[i..].starts_with(b"\n\n") {
                Some((i, 2))
            } else if b[i..].starts_with(b"\r\n\r\n") {
                Some((i, 4))
            } else {
                None
            }
        });
        if found.is_none() {
            self.scanned = b.len();
        }
        found
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn events_split_across_reads_are_joined() {
        let mut p = SseParser::default();
        p.push(b"data: {\"a\"").unwrap();
        assert_eq!(p.next_event().unwrap(), None);
        p.push(b": 1}\n\n: comment\n\ndata: [DONE]\r\n\r\n")
            .unwrap();
        assert_eq!(
            p.next_event().unwrap(),
            Some(Event::Data("{\"a\": 1}".into()))
        );
        assert_eq!(p.next_event().unwrap(), Some(Event::Done));
        assert_eq!(p.next_event().unwrap(), None);
    }

    #[test]
    fn an_event_trickled_byte_by_byte_is_found_once_complete() {
        let mut p = SseParser::default();
        let mut events = Vec::new();
        for byte in b"data: {\"n\": 1}\r\n\r\ndata: [DONE]\n\n" {
            p.push(&[*byte]).unwrap();
            while let Some(e) = p.next_event().unwrap() {
                events.push(e);
            }
        }
        assert_eq!(events, [Event::Data("{\"n\": 1}".into()), Event::Done]);
    }
}
