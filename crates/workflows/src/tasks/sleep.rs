//! `sleep`: waits `ms` milliseconds in `steps` steps, reporting progress after each. With
//! `fail_attempts: n`, its first n attempts fail (retryable) after sleeping, so tests and
//! demos can see retries, time limits and cancellation on a task that behaves predictably.

use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::{Task, TaskContext, TaskError};

pub struct Sleep;

/// Longest sleep accepted: a day.
const MAX_MS: u64 = 86_400_000;
const MAX_STEPS: u64 = 10_000;

struct Params {
    ms: u64,
    steps: u64,
    fail_attempts: u64,
}

fn parse(params: &Json) -> Result<Params, String> {
    let map = super::object("sleep", params)?;
    let number = |key: &str, default: u64, max: u64| -> Result<u64, String> {
        match map.get(key) {
            None | Some(Json::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("params.{key} must be a whole number from 0 to {max}")),
        }
    };
    Ok(Params {
        ms: number("ms", 1_000, MAX_MS)?,
        steps: number("steps", 1, MAX_STEPS)?.max(1),
        fail_attempts: number("fail_attempts", 0, 1_000)?,
    })
}

#[async_trait::async_trait]
impl Task for Sleep {
    fn kind(&self) -> &'static str {
        "sleep"
    }

    fn validate(&self, params: &Json) -> Result<(), String> {
        parse(params).map(|_| ())
    }

    async fn run(&self, ctx: TaskContext) -> Result<Json, TaskError> {
        let p = parse(&ctx.params).map_err(TaskError::permanent)?;
        let step = Duration::from_millis(p.ms) / u32::try_from(p.steps).unwrap_or(1);
        for done in 1..=p.steps {
            tokio::time::sleep(step).await;
            if p.steps > 1 {
                ctx.progress(done, p.steps, "sleeping").await;
            }
        }
        if u64::from(ctx.attempt) <= p.fail_attempts {
            return Err(TaskError::retryable(format!(
                "attempt {} failed on purpose (fail_attempts = {})",
                ctx.attempt, p.fail_attempts
            )));
        }
        Ok(json!({ "slept_ms": p.ms, "attempt": ctx.attempt }))
    }
}
