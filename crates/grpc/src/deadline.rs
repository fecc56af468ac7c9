//! `grpc-timeout`: the caller's deadline, as the gRPC over HTTP/2 spec encodes it
//! (at most 8 digits, then H, M, S, m, u or n).
//!
//! The work is given slightly less than the caller's budget. tonic's own timeout layer, outside
//! every service, answers CANCELLED "Timeout expired" at the exact deadline, and clients that
//! enforce the deadline locally give up at that instant too; finishing a little earlier means
//! the caller receives the real DEADLINE_EXCEEDED from us.

use std::time::Duration;

use tokio::time::Instant;
use tonic::{Status, metadata::MetadataMap};

pub(crate) fn deadline(metadata: &MetadataMap) -> Result<Option<Instant>, Status> {
    let Some(value) = metadata.get("grpc-timeout") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    let Some(timeout) = parse(text) else {
        let text: String = text.chars().take(32).collect();
        return Err(Status::invalid_argument(format!(
            "malformed grpc-timeout header `{text}`"
        )));
    };
    let deadline = Instant::now() + timeout - margin(timeout);
    // A budget spent on arrival: no work could finish in it, and a cached answer must not
    // make the same call succeed one time and fail the next.
    if deadline <= Instant::now() {
        return Err(Status::deadline_exceeded(format!(
            "the call's deadline (grpc-timeout {text}) had passed when it arrived"
        )));
    }
    Ok(Some(deadline))
}

/// A tenth of the budget, at most 10 ms.
fn margin(timeout: Duration) -> Duration {
    (timeout / 10).min(Duration::from_millis(10))
}

fn parse(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at_checked(text.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_garbage() {
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
