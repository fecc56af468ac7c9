//! The one place an `EmbedError` becomes a gRPC status.

use citadel_embeddings::EmbedError;
use citadel_llm::LlmError;
use citadel_proto::metadata::{
    ERROR_CODE as ERROR_CODE_KEY, ERROR_PARAM as ERROR_PARAM_KEY, MISSED as MISSED_KEY,
    RETRY_AFTER as RETRY_AFTER_KEY, UPSTREAM as UPSTREAM_KEY,
};
use citadel_workflows::{StoreError, WorkflowError};
use tonic::{Code, Status, metadata::MetadataValue};

/// INVALID_ARGUMENT naming the request field.
pub(crate) fn invalid(param: &'static str, message: impl Into<String>) -> Status {
    let mut status = Status::new(Code::InvalidArgument, message.into());
    status
        .metadata_mut()
        .insert(ERROR_PARAM_KEY, MetadataValue::from_static(param));
    status
}

fn with_param(mut status: Status, param: &'static str) -> Status {
    status
        .metadata_mut()
        .insert(ERROR_PARAM_KEY, MetadataValue::from_static(param));
    status
}

/// The one place a workflow error becomes a gRPC status.
pub(crate) fn workflow_status(error: WorkflowError) -> Status {
    match error {
        WorkflowError::Invalid { param, message } => invalid(param, message),
        WorkflowError::Lagged { missed } => {
            let mut status = Status::aborted(error.to_string());
            status
                .metadata_mut()
                .insert(MISSED_KEY, MetadataValue::from(missed));
            status
        }
        WorkflowError::Store(e) => store_status(e),
    }
}

fn store_status(error: StoreError) -> Status {
    let message = error.to_string();
    match error {
        StoreError::NotFound(_) => Status::new(Code::NotFound, message),
        StoreError::Conflict(_) => Status::new(Code::FailedPrecondition, message),
        StoreError::IdempotencyKeyReused(_) => Status::new(Code::AlreadyExists, message),
        StoreError::InvalidArgument(_) => invalid("page_token", message),
        StoreError::Unavailable(_) => Status::new(Code::Unavailable, message),
    }
}

pub(crate) fn to_status(error: EmbedError) -> Status {
    let message = error.to_string();
    match error {
        EmbedError::InvalidInput { param, .. } => invalid(param, message),
        EmbedError::ModelNotFound(_) => Status::new(Code::NotFound, message),
        EmbedError::Overloaded { retry_after, .. } => with_retry_after(
            Status::new(Code::ResourceExhausted, message),
            Some(retry_after),
        ),
        EmbedError::Unavailable { retry_after, .. } => {
            with_retry_after(Status::new(Code::Unavailable, message), retry_after)
        }
        EmbedError::DeadlineExceeded { .. } => Status::new(Code::DeadlineExceeded, message),
        EmbedError::Backend { .. } => Status::new(Code::Internal, message),
        EmbedError::Upstream { endpoint, .. } => {
            let mut status = Status::new(Code::Internal, message);
            if let Ok(value) = MetadataValue::try_from(endpoint) {
                status.metadata_mut().insert(UPSTREAM_KEY, value);
            }
            status
        }
    }
}

/// Whole seconds, at least 1, so "retry after 0" never invites a hot loop.
fn with_retry_after(mut status: Status, after: Option<std::time::Duration>) -> Status {
    if let Some(after) = after {
        let seconds = after.as_secs_f64().ceil().max(1.0) as u64;
        status
            .metadata_mut()
            .insert(RETRY_AFTER_KEY, MetadataValue::from(seconds));
    }
    status
}

/// The one place an `LlmError` becomes a gRPC status.
pub(crate) fn llm_status(error: LlmError) -> Status {
    let message = error.to_string();
    match error {
        LlmError::InvalidInput { param, code, .. } => {
            let mut status = Status::new(Code::InvalidArgument, message);
            let metadata = status.metadata_mut();
            if let Some(value) = param.and_then(|p| MetadataValue::try_from(p).ok()) {
                metadata.insert(ERROR_PARAM_KEY, value);
            }
            if let Some(code) = code {
                metadata.insert(ERROR_CODE_KEY, MetadataValue::from_static(code));
            }
            status
        }
        LlmError::ModelNotFound(_) => Status::new(Code::NotFound, message),
        LlmError::Overloaded { retry_after, .. } => {
            with_retry_after(Status::new(Code::ResourceExhausted, message), retry_after)
        }
        LlmError::Unavailable { retry_after, .. } => {
            with_retry_after(Status::new(Code::Unavailable, message), retry_after)
        }
        LlmError::DeadlineExceeded(_) => Status::new(Code::DeadlineExceeded, message),
        LlmError::Upstream { endpoint, .. } => {
            let mut status = Status::new(Code::Internal, message);
            if let Ok(value) = MetadataValue::try_from(endpoint) {
                status.metadata_mut().insert(UPSTREAM_KEY, value);
            }
            status
        }
    }
}

/// The one place a vector error becomes a gRPC status; embedding failures keep the embedding
/// service's own status (a full queue is still RESOURCE_EXHAUSTED with `retry-after`).
pub(crate) fn vector_status(error: citadel_vectors::VectorError) -> Status {
    use citadel_vectors::VectorError;
    let message = error.to_string();
    match error {
        VectorError::Invalid { param, .. } => invalid(param, message),
        // Named, so the REST edge can tell an unknown collection from an unknown model.
        VectorError::NotFound(_) => with_param(Status::new(Code::NotFound, message), "collection"),
        VectorError::AlreadyExists(_) => {
            with_param(Status::new(Code::AlreadyExists, message), "name")
        }
        VectorError::Embed(e) => to_status(e),
        VectorError::Unavailable(_) => Status::new(Code::Unavailable, message),
        VectorError::Internal(_) => Status::new(Code::Internal, message),
    }
}
