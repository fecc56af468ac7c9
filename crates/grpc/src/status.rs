//! The one place an `EmbedError` becomes a gRPC status.

use citadel_embeddings::EmbedError;
use citadel_proto::metadata::{ERROR_PARAM as ERROR_PARAM_KEY, RETRY_AFTER as RETRY_AFTER_KEY};
use tonic::{Code, Status, metadata::MetadataValue};

pub(crate) fn to_status(error: EmbedError) -> Status {
    let message = error.to_string();
    match error {
        EmbedError::InvalidInput { param, .. } => {
            let mut status = Status::new(Code::InvalidArgument, message);
            status
                .metadata_mut()
                .insert(ERROR_PARAM_KEY, MetadataValue::from_static(param));
            status
        }
        EmbedError::ModelNotFound(_) => Status::new(Code::NotFound, message),
        EmbedError::Overloaded { retry_after, .. } => {
            let mut status = Status::new(Code::ResourceExhausted, message);
            status.metadata_mut().insert(
                RETRY_AFTER_KEY,
                MetadataValue::from(retry_after.as_secs().max(1)),
            );
            status
        }
        EmbedError::Unavailable { .. } => Status::new(Code::Unavailable, message),
        EmbedError::DeadlineExceeded { .. } => Status::new(Code::DeadlineExceeded, message),
        EmbedError::Backend { .. } => Status::new(Code::Internal, message),
    }
}
