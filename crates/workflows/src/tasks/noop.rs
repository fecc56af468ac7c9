//! `noop`: succeeds at once with `{}`. Measures the queue itself (benchmarks, life cycle tests).

use serde_json::Value as Json;

use crate::{Task, TaskContext, TaskError};

pub struct Noop;

#[async_trait::async_trait]
impl Task for Noop {
    fn kind(&self) -> &'static str {
        "noop"
    }

    fn validate(&self, params: &Json) -> Result<(), String> {
        super::object(self.kind(), params).map(|_| ())
    }

    async fn run(&self, _ctx: TaskContext) -> Result<Json, TaskError> {
        Ok(Json::Object(serde_json::Map::new()))
    }
}
