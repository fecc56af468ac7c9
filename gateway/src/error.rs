//! `ApiError`: every failure at the REST edge leaves as OpenAI's error body,
//! `{"error":{"message","type","param","code"}}`, with the matching HTTP status.

use axum::{
    Json,
    extract::rejection::JsonRejection,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use citadel_proto::metadata::{ERROR_CODE, ERROR_PARAM, RETRY_AFTER, UPSTREAM};
use serde_json::json;
use tonic::{Code, Status};

use crate::layers::request_body::BodyTimeout;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds, for the `Retry-After` header of a 429.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400 about one request field.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.to_string()),
            ..Self::new(StatusCode::BAD_REQUEST, INVALID, message)
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
}

pub(crate) const INVALID: &str = "invalid_request_error";
const SERVER: &str = "server_error";

impl ApiError {
    /// OpenAI's error object, as a response body or an in-band stream event.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// OpenAI's codes a gRPC status may carry in `x-citadel-error-code`.
fn known_code(code: &str) -> Option<&'static str> {
    ["context_length_exceeded"].into_iter().find(|c| *c == code)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The body of a refusal the HTTP library writes itself, before any route sees the request
/// (see `citadel-conn`): the same error shape as every other answer.
pub fn refusal_body(status: StatusCode) -> (&'static str, String) {
    let message = match status {
        StatusCode::BAD_REQUEST => {
            "the request is not valid HTTP/1.1: check the request line, the header syntax and \
             that Content-Length appears at most once"
        }
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            "the request's headers are too large or too many for this server"
        }
        _ => status
            .canonical_reason()
            .unwrap_or("the request was refused"),
    };
    let body = json!({"error": {
        "message": message,
        "type": INVALID,
        "param": null,
        "code": null,
    }});
    ("application/json", body.to_string())
}

/// The one mapping from a gRPC status to an HTTP error.
impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        let message = status.message().to_string();
        let (http, kind, code) = match status.code() {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                (StatusCode::BAD_REQUEST, INVALID, None)
            }
            Code::NotFound => (StatusCode::NOT_FOUND, INVALID, Some("model_not_found")),
            Code::ResourceExhausted => (
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                Some("rate_limit_exceeded"),
            ),
            Code::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                SERVER,
                Some("service_unavailable"),
            ),
            Code::DeadlineExceeded | Code::Cancelled => {
                (StatusCode::GATEWAY_TIMEOUT, SERVER, Some("timeout"))
            }
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, INVALID, Some("invalid_api_key")),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, INVALID, Some("permission_denied")),
            Code::AlreadyExists | Code::Aborted => (StatusCode::CONFLICT, INVALID, None),
            Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, INVALID, None),
            // An upstream server's unusable answer is the gateway's 502, not our 500.
            Code::Internal if status.metadata().contains_key(UPSTREAM) => {
                (StatusCode::BAD_GATEWAY, SERVER, Some("upstream_error"))
            }
            Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => {
                (StatusCode::INTERNAL_SERVER_ERROR, SERVER, None)
            }
        };
        let trailer = |key: &str| {
            status
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let param = match status.code() {
            Code::NotFound => Some("model".to_string()),
            _ => trailer(ERROR_PARAM),
        };
        let retry_after = trailer(RETRY_AFTER).and_then(|s| s.parse().ok());
        let code = trailer(ERROR_CODE).as_deref().and_then(known_code).or(code);
        ApiError {
            status: http,
            message,
            kind,
            param,
            code,
            retry_after,
        }
    }
}

/// The workflow routes' reading of the codes whose meaning differs there: the missing thing is
/// a workflow (`id`), not a model, and a state or key conflict is a 409. Everything else as
/// for any route.
pub(crate) fn workflow_error(status: Status) -> ApiError {
    let conflict = |code| ApiError {
        code: Some(code),
        ..ApiError::new(StatusCode::CONFLICT, INVALID, status.message())
    };
    match status.code() {
        Code::NotFound => ApiError {
            param: Some("id".to_string()),
            code: Some("workflow_not_found"),
            ..ApiError::new(StatusCode::NOT_FOUND, INVALID, status.message())
        },
        Code::FailedPrecondition => conflict("workflow_state_conflict"),
        Code::AlreadyExists => ApiError {
            param: Some("idempotency_key".to_string()),
            ..conflict("idempotency_key_reused")
        },
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::InvalidArgument
        | Code::DeadlineExceeded
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss
        | Code::Unauthenticated => ApiError::from(status),
    }
}

/// Malformed JSON bodies get the same error shape as everything else.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if let Some(timeout) = timed_out(&rejection) {
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, INVALID, timeout.to_string())
                .with_code("request_timeout");
        }
        let status = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        let message = match status {
            StatusCode::PAYLOAD_TOO_LARGE => {
                "the request body is larger than this server accepts".to_string()
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                "send the body as JSON with `Content-Type: application/json`".to_string()
            }
            _ => format!(
                "could not parse the JSON body of your request: {}",
                rejection.body_text()
            ),
        };
        ApiError::new(status, INVALID, message)
    }
}

/// The body stopped arriving (the request-body layer's deadlines), somewhere in the
/// rejection's causes.
fn timed_out(rejection: &JsonRejection) -> Option<BodyTimeout> {
    let mut cause: Option<&dyn std::error::Error> = Some(rejection);
    while let Some(error) = cause {
        if let Some(timeout) = error.downcast_ref::<BodyTimeout>() {
            return Some(*timeout);
        }
        cause = error.source();
    }
    None
}

/// The vector routes' reading of the codes whose meaning differs there: the missing thing is
/// a collection (`name`) unless the mesh named the field, and a name in use is a 409.
pub(crate) fn vector_error(status: Status) -> ApiError {
    let param = status
        .metadata()
        .get(ERROR_PARAM)
        .and_then(|v| v.to_str().ok());
    match status.code() {
        Code::NotFound if param == Some("collection") => ApiError {
            param: Some("name".to_string()),
            code: Some("collection_not_found"),
            ..ApiError::new(StatusCode::NOT_FOUND, INVALID, status.message())
        },
        Code::AlreadyExists => ApiError {
            param: Some("name".to_string()),
            code: Some("collection_exists"),
            ..ApiError::new(StatusCode::CONFLICT, INVALID, status.message())
        },
        _ => ApiError::from(status),
    }
}
