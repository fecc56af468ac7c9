//! Workflow JSON at `/api/v1/workflows` and its translation to and from the proto contract.
//! Only the JSON's shape is checked here; kinds, parameters and states are the mesh's to judge.

use std::fmt::Display;

use axum::http::HeaderMap;
use citadel_proto::{
    json::{from_struct, from_value},
    v1,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

/// The header a client may send instead of the body's `idempotency_key`.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `POST /api/v1/workflows` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    pub kind: Option<String>,
    /// Missing means `{}`; anything but an object (null included) is refused.
    #[serde(default = "empty_object")]
    pub params: Value,
    pub idempotency_key: Option<String>,
    pub priority: Option<i32>,
    /// RFC 3339.
    pub not_before: Option<String>,
    pub time_limit_ms: Option<u64>,
    pub retry: Option<RetryBody>,
}

/// A retry policy; a field left out takes the server's default.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    pub max_attempts: Option<u32>,
    pub initial_backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

impl SubmitBody {
    /// The gRPC request, or a 400 naming the bad field. `headers` may carry `Idempotency-Key`.
    pub fn into_proto(self, headers: &HeaderMap) -> Result<v1::SubmitWorkflowRequest, ApiError> {
        let kind = self
            .kind
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::invalid("kind", "you must provide the workflow's kind"))?;
        if !self.params.is_object() {
            let m = "params must be a JSON object (or left out)";
            return Err(ApiError::invalid("params", m));
        }
        // As JSON text: a Struct would turn integers above 2^53 into doubles.
        let params_json = self.params.to_string();
        let not_before = match self.not_before {
            None => None,
            Some(text) => Some(text.parse().map_err(|e| {
                let msg = format!("not_before must be an RFC 3339 time, got {text:?}: {e}");
                ApiError::invalid("not_before", msg)
            })?),
        };
        let retry = self.retry.map(|r| v1::RetryPolicy {
            max_attempts: r.max_attempts.unwrap_or_default(),
            initial_backoff_ms: r.initial_backoff_ms.unwrap_or_default(),
            max_backoff_ms: r.max_backoff_ms.unwrap_or_default(),
        });
        Ok(v1::SubmitWorkflowRequest {
            kind,
            params: None,
            params_json,
            idempotency_key: idempotency_key(self.idempotency_key, headers)?,
            priority: self.priority.unwrap_or_default(),
            not_before,
            time_limit_ms: self.time_limit_ms.unwrap_or_default(),
            retry,
        })
    }
}

/// The body's key or the `Idempotency-Key` header's; both may be given only if they agree.
fn idempotency_key(body: Option<String>, headers: &HeaderMap) -> Result<String, ApiError> {
    let header = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::invalid(
                "idempotency_key",
                "the Idempotency-Key header must be ASCII",
            )
        })?),
    };
    match (body, header) {
        (Some(body), Some(header)) if body != header => Err(ApiError::invalid(
            "idempotency_key",
            "idempotency_key in the body and the Idempotency-Key header differ",
        )),
        (Some(key), _) => Ok(key),
        (None, Some(key)) => Ok(key.to_string()),
        (None, None) => Ok(String::new()),
    }
}

/// A workflow state by its Celery name (`PENDING`, ..., `CANCELLED`), any case.
pub fn parse_state(name: &str) -> Option<v1::WorkflowState> {
    let name = format!("WORKFLOW_STATE_{}", name.trim().to_ascii_uppercase());
    v1::WorkflowState::from_str_name(&name).filter(|s| *s != v1::WorkflowState::Unspecified)
}

/// The Celery name of a state: `WORKFLOW_STATE_PENDING` is `PENDING`.
pub fn state_name(state: i32) -> &'static str {
    let name = v1::WorkflowState::try_from(state)
        .unwrap_or(v1::WorkflowState::Unspecified)
        .as_str_name();
    name.strip_prefix("WORKFLOW_STATE_").unwrap_or(name)
}

/// One workflow, as every route returns it.
#[derive(Debug, Serialize)]
pub struct WorkflowObject {
    pub id: String,
    pub object: &'static str,
    pub kind: String,
    pub params: Value,
    pub state: &'static str,
    pub priority: i32,
    pub attempts: u32,
    pub max_attempts: u32,
    pub retry: RetryBody,
    pub time_limit_ms: u64,
    pub progress: ProgressObject,
    pub result: Value,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    pub cancel_requested: bool,
    pub worker: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub run_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub lease_expires_at: Option<String>,
    pub expires_at: Option<String>,
    /// Grows with every change: orders what a watcher receives.
    pub version: u64,
}

#[derive(Debug, Serialize)]
pub struct ProgressObject {
    pub done: u64,
    pub total: u64,
    pub message: Option<String>,
}

impl From<v1::Workflow> for WorkflowObject {
    fn from(w: v1::Workflow) -> Self {
        let retry = w.retry.unwrap_or_default();
        let progress = w.progress.unwrap_or_default();
        WorkflowObject {
            object: "workflow",
            params: match serde_json::from_str(&w.params_json) {
                Ok(params) => params,
                Err(_) => w.params.as_ref().map_or_else(empty_object, from_struct),
            },
            state: state_name(w.state),
            priority: w.priority,
            attempts: w.attempts,
            max_attempts: retry.max_attempts,
            retry: RetryBody {
                max_attempts: Some(retry.max_attempts),
                initial_backoff_ms: Some(retry.initial_backoff_ms),
                max_backoff_ms: Some(retry.max_backoff_ms),
            },
            time_limit_ms: w.time_limit_ms,
            progress: ProgressObject {
                done: progress.done,
                total: progress.total,
                message: non_empty(progress.message),
            },
            result: match serde_json::from_str(&w.result_json) {
                Ok(result) => result,
                Err(_) => w.result.as_ref().map_or(Value::Null, from_value),
            },
            error: non_empty(w.error),
            idempotency_key: non_empty(w.idempotency_key),
            cancel_requested: w.cancel_requested,
            worker: non_empty(w.worker),
            created_at: rfc3339(w.created_at.as_ref()),
            updated_at: rfc3339(w.updated_at.as_ref()),
            run_at: rfc3339(w.run_at.as_ref()),
            started_at: rfc3339(w.started_at.as_ref()),
            finished_at: rfc3339(w.finished_at.as_ref()),
            lease_expires_at: rfc3339(w.lease_expires_at.as_ref()),
            expires_at: rfc3339(w.expires_at.as_ref()),
            version: w.version,
            id: w.id,
            kind: w.kind,
        }
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A protobuf `Timestamp` prints as RFC 3339.
fn rfc3339(time: Option<&impl Display>) -> Option<String> {
    time.map(ToString::to_string)
}

/// `GET /api/v1/workflows`: a page, newest first.
#[derive(Debug, Serialize)]
pub struct WorkflowList {
    pub object: &'static str,
    pub data: Vec<WorkflowObject>,
    pub next_page_token: Option<String>,
    pub has_more: bool,
}

impl From<v1::ListWorkflowsResponse> for WorkflowList {
    fn from(page: v1::ListWorkflowsResponse) -> Self {
        let next_page_token = non_empty(page.next_page_token);
        WorkflowList {
            object: "list",
            data: page
                .workflows
                .into_iter()
                .map(WorkflowObject::from)
                .collect(),
            has_more: next_page_token.is_some(),
            next_page_token,
        }
    }
}

/// `GET /api/v1/workflows` query: `state=PENDING,STARTED&kind=noop&limit=50&page_token=...`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub state: Option<String>,
    pub kind: Option<String>,
    /// A string, so a bad number gets a 400 naming `limit`.
    pub limit: Option<String>,
    pub page_token: Option<String>,
}

/// Most workflows one page may hold.
const MAX_LIMIT: u32 = 500;

impl ListQuery {
    pub fn into_proto(self) -> Result<v1::ListWorkflowsRequest, ApiError> {
        let mut states = Vec::new();
        for name in self.state.iter().flat_map(|s| s.split(',')) {
            if name.trim().is_empty() {
                continue;
            }
            let state = parse_state(name).ok_or_else(|| {
                let msg = format!(
                    "unknown state {name:?}: use PENDING, STARTED, RETRY, SUCCESS, FAILURE or \
                     CANCELLED (comma-separated for several)"
                );
                ApiError::invalid("state", msg)
            })?;
            states.push(i32::from(state));
        }
        let page_size = match self.limit {
            None => 0,
            Some(text) => text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    let msg = format!("limit must be a whole number from 1 to {MAX_LIMIT}");
                    ApiError::invalid("limit", msg)
                })?,
        };
        Ok(v1::ListWorkflowsRequest {
            states,
            kind: self.kind.unwrap_or_default(),
            page_size,
            page_token: self.page_token.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_by_celery_name_in_any_case() {
        assert_eq!(parse_state("pending"), Some(v1::WorkflowState::Pending));
        assert_eq!(
            parse_state(" Cancelled "),
            Some(v1::WorkflowState::Cancelled)
        );
        assert_eq!(parse_state("unspecified"), None);
        assert_eq!(parse_state("DONE"), None);
        assert_eq!(state_name(v1::WorkflowState::Retry.into()), "RETRY");
        assert_eq!(state_name(99), "UNSPECIFIED");
    }

    #[test]
    fn body_and_header_keys_must_agree() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(None, &headers).ok(), Some(String::new()));
        headers.insert(
            IDEMPOTENCY_KEY,
            "abc".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(idempotency_key(None, &headers).ok(), Some("abc".into()));
        assert_eq!(
            idempotency_key(Some("abc".into()), &headers).ok(),
            Some("abc".into())
        );
        let err = idempotency_key(Some("xyz".into()), &headers).err();
        assert_eq!(err.and_then(|e| e.param), Some("idempotency_key".into()));
    }

    #[test]
    fn list_query_checks_state_and_limit() {
        let query = ListQuery {
            state: Some("pending,,STARTED".into()),
            limit: Some("2".into()),
            ..ListQuery::default()
        };
        let request = query.into_proto().ok();
        assert_eq!(
            request.as_ref().map(|r| (r.states.clone(), r.page_size)),
            Some((vec![1, 2], 2))
        );
        for (query, param) in [
            (
                ListQuery {
                    state: Some("done".into()),
                    ..ListQuery::default()
                },
                "state",
            ),
            (
                ListQuery {
                    limit: Some("0".into()),
                    ..ListQuery::default()
                },
                "limit",
            ),
            (
                ListQuery {
                    limit: Some("501".into()),
                    ..ListQuery::default()
                },
                "limit",
            ),
            (
                ListQuery {
                    limit: Some("x".into()),
                    ..ListQuery::default()
                },
                "limit",
            ),
        ] {
            let param_of = query.into_proto().err().and_then(|e| e.param);
            assert_eq!(param_of.as_deref(), Some(param));
        }
    }
}
