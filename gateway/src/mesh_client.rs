//! `Mesh`: one caller's handle on the mesh. Every gRPC call a route makes goes through it, so
//! each carries the request id, the caller's credential (checked by the mesh's own door) and
//! the route's deadline, and the caller's rate-limit state comes back onto the HTTP answer.

use std::{
    convert::Infallible,
    ops::Deref,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, request::Parts},
};
use citadel_auth::{Permission, Refusal};
use citadel_proto::metadata::{AUTHORIZATION, RATE_LIMIT, REQUEST_ID};
use tonic::{
    Status,
    metadata::{AsciiMetadataValue, MetadataMap},
};

use crate::{
    error::{ApiError, INVALID},
    state::AppState,
};

/// Extra time the edge waits past the gRPC deadline for the mesh's own DEADLINE_EXCEEDED.
const DEADLINE_GRACE: Duration = Duration::from_millis(250);

/// The credential a request presents, as the edge's auth layer found it.
#[derive(Clone, Default)]
pub(crate) struct Credential(pub(crate) Option<HeaderValue>);

/// The `x-ratelimit-*` values the mesh answered with, for the HTTP response.
#[derive(Clone, Default)]
pub(crate) struct RateSlot(Arc<Mutex<HeaderMap>>);

impl RateSlot {
    fn keep(&self, metadata: &MetadataMap) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for name in RATE_LIMIT {
            if let Some(value) = metadata.get(name)
                && let Ok(value) = HeaderValue::from_bytes(value.as_encoded_bytes())
            {
                slot.insert(name, value);
            }
        }
    }

    pub(crate) fn take(&self) -> HeaderMap {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[derive(Clone)]
pub(crate) struct Mesh {
    state: AppState,
    request_id: Option<AsciiMetadataValue>,
    credential: Option<AsciiMetadataValue>,
    rate: RateSlot,
}

impl Deref for Mesh {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.state
    }
}

impl FromRequestParts<AppState> for Mesh {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        let metadata = |v: &HeaderValue| AsciiMetadataValue::try_from(v.as_bytes()).ok();
        let credential = parts
            .extensions
            .get::<Credential>()
            .and_then(|c| c.0.as_ref());
        Ok(Mesh {
            state: state.clone(),
            request_id: parts.headers.get(REQUEST_ID).and_then(metadata),
            credential: credential.and_then(metadata),
            rate: parts
                .extensions
                .get::<RateSlot>()
                .cloned()
                .unwrap_or_default(),
        })
    }
}

impl Mesh {
    /// `message` for the mesh, with the request id, the credential and the edge's deadline.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = self.stream_request(message);
        request.set_timeout(self.state.request_timeout);
        request
    }

    /// `request` for a stream that lives as long as its caller wants (a Watch): no deadline.
    pub(crate) fn stream_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        if let Some(id) = &self.request_id {
            metadata.insert(REQUEST_ID, id.clone());
        }
        if let Some(credential) = &self.credential {
            metadata.insert(AUTHORIZATION, credential.clone());
        }
        // The REST request's trace continues in the mesh (a no-op with tracing off).
        citadel_telemetry::trace::inject(|key, value| {
            if let (Ok(key), Ok(value)) = (
                tonic::metadata::AsciiMetadataKey::from_bytes(key.as_bytes()),
                AsciiMetadataValue::try_from(value),
            ) {
                metadata.insert(key, value);
            }
        });
        request
    }

    /// This handle with another credential (a WebSocket's subprotocol or refreshed token):
    /// `Bearer <token>`.
    pub(crate) fn with_token(&self, token: &str) -> Option<Mesh> {
        let value = AsciiMetadataValue::try_from(format!("Bearer {token}")).ok()?;
        Some(Mesh {
            credential: Some(value),
            ..self.clone()
        })
    }

    pub(crate) fn has_credential(&self) -> bool {
        self.credential.is_some()
    }

    /// `request` for a completion: its own, longer deadline.
    pub(crate) fn llm_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = self.request(message);
        request.set_timeout(self.state.completion_timeout);
        request
    }

    /// For routes no single RPC serves (`/health/detailed`, a protected `/metrics`): the same
    /// policy the mesh applies, asked directly.
    pub(crate) async fn admit(&self, permission: Permission, route: &str) -> Result<(), ApiError> {
        self.admit_caller(permission, route).await.map(drop)
    }

    /// `admit`, keeping who was admitted (a long-lived connection needs its expiry).
    pub(crate) async fn admit_caller(
        &self,
        permission: Permission,
        route: &str,
    ) -> Result<citadel_auth::Caller, ApiError> {
        let credential = self.credential.as_ref().and_then(|c| c.to_str().ok());
        let credential = credential.and_then(citadel_auth::bearer);
        self.state
            .policy
            .admit(credential, Some(permission), route)
            .await
            .map(|admission| admission.caller)
            .map_err(|refusal| refused(&refusal))
    }

    /// Awaits a completion call (for a stream: until its first chunk), bounded by the
    /// completion deadline even if the mesh never answers.
    pub(crate) async fn call_llm<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, ApiError> {
        let limit = self.state.completion_timeout;
        self.bounded(call, limit, "completion service", ApiError::from)
            .await
    }

    /// Awaits a gRPC call, bounded by the edge's deadline even if the mesh never answers.
    pub(crate) async fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, ApiError> {
        self.call_mapped(call, "embedding service", ApiError::from)
            .await
    }

    /// Like `call`, for `service`, whose routes read some statuses their own way (`map`).
    pub(crate) async fn call_mapped<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
        service: &str,
        map: fn(Status) -> ApiError,
    ) -> Result<T, ApiError> {
        let limit = self.state.request_timeout;
        self.bounded(call, limit, service, map).await
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
        limit: Duration,
        service: &str,
        map: fn(Status) -> ApiError,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(limit + DEADLINE_GRACE, call).await {
            Ok(Ok(response)) => {
                self.rate.keep(response.metadata());
                Ok(response.into_inner())
            }
            Ok(Err(status)) => {
                self.rate.keep(status.metadata());
                Err(map(self.state.explain(status, service)))
            }
            Err(_) => Err(map(Status::deadline_exceeded(format!(
                "no answer from the {service} within {}ms",
                limit.as_millis()
            )))),
        }
    }
}

/// A refusal the edge decided itself, in the shape the mesh's statuses map to.
fn refused(refusal: &Refusal) -> ApiError {
    use axum::http::StatusCode;
    let message = refusal.message();
    match refusal {
        Refusal::Unauthenticated => {
            ApiError::new(StatusCode::UNAUTHORIZED, INVALID, message).with_code("invalid_api_key")
        }
        Refusal::Unavailable => ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
                .with_code("service_unavailable")
        },
        Refusal::Forbidden(_) => {
            ApiError::new(StatusCode::FORBIDDEN, INVALID, message).with_code("permission_denied")
        }
        Refusal::RateLimited { retry_after, .. } => ApiError {
            retry_after: Some(u32::try_from(retry_after.as_secs() + 1).unwrap_or(u32::MAX)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "requests", message)
                .with_code("rate_limit_exceeded")
        },
    }
}
