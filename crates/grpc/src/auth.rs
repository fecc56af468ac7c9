//! The mesh's door. Its port serves internal services directly, so it checks every call
//! itself: the `authorization` metadata goes to `Policy::admit` with the permission the method
//! needs, and the admitted `Caller` rides in the request's extensions to the handlers
//! (ownership, model allow-lists, token usage). The REST edge forwards its callers'
//! credentials here and so gets the same decision. Health is always open; reflection unless
//! `auth.protect_reflection`. An unknown method still needs a valid caller (deny by default).

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use citadel_auth::{Permission, Policy, RateState, Refusal};
use citadel_proto::metadata::{AUTHORIZATION, RATE_LIMIT, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Request, Response};
use tonic::{Status, body::Body};
use tower::{Layer, Service};

#[derive(Clone)]
pub struct AuthorizeLayer {
    policy: Arc<Policy>,
}

impl AuthorizeLayer {
    pub fn new(policy: Arc<Policy>) -> Self {
        AuthorizeLayer { policy }
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            policy: Arc::clone(&self.policy),
        }
    }
}

#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    policy: Arc<Policy>,
}

enum Access {
    Open,
    Needs(Option<Permission>),
}

/// What each method needs.
fn access(path: &str, policy: &Policy) -> Access {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    let needs = |p| Access::Needs(Some(p));
    match (service, method) {
        ("grpc.health.v1.Health", _) => Access::Open,
        ("grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection", _) => {
            match policy.protects_reflection() {
                true => needs(Permission::Reflection),
                false => Access::Open,
            }
        }
        ("citadel.v1.EmbeddingService", "Embed" | "EmbedStream") => needs(Permission::Embeddings),
        ("citadel.v1.EmbeddingService", "ListModels" | "GetModel") => needs(Permission::ModelsRead),
        ("citadel.v1.EmbeddingService", "GetCacheStatus") => needs(Permission::HealthRead),
        ("citadel.v1.EmbeddingService", "FlushCache") => needs(Permission::CacheManage),
        ("citadel.v1.CompletionService", "ListModels") => needs(Permission::ModelsRead),
        ("citadel.v1.CompletionService", _) => needs(Permission::Completions),
        ("citadel.v1.WorkflowService", "Submit" | "Cancel" | "Retry") => {
            needs(Permission::WorkflowsWrite)
        }
        ("citadel.v1.WorkflowService", "Watch") => needs(Permission::WorkflowsWatch),
        ("citadel.v1.WorkflowService", _) => needs(Permission::WorkflowsRead),
        (
            "citadel.v1.VectorService",
            "CreateCollection" | "DeleteCollection" | "UpsertPoints" | "DeletePoints",
        ) => needs(Permission::VectorsWrite),
        ("citadel.v1.VectorService", _) => needs(Permission::VectorsRead),
        _ => Access::Needs(None),
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<B>> for Authorize<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let permission = match access(request.uri().path(), &self.policy) {
            Access::Open => {
                let call = self.inner.call(request);
                return Box::pin(call);
            }
            Access::Needs(p) => p,
        };
        // The service that was made ready answers this call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let credential = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(citadel_auth::bearer)
                .map(str::to_string);
            let route = request.uri().path().to_string();
            let admission = policy
                .admit(credential.as_deref(), permission, &route)
                .await;
            match admission {
                Ok(admission) => {
                    request.extensions_mut().insert(admission.caller);
                    let mut response = inner.call(request).await?;
                    if let Some(rate) = admission.rate {
                        rate_headers(response.headers_mut(), &rate);
                    }
                    Ok(response)
                }
                Err(refusal) => Ok(refusal_status(&refusal).into_http()),
            }
        })
    }
}

/// A refusal as the gRPC status the contract names for it.
pub(crate) fn refusal_status(refusal: &Refusal) -> Status {
    let message = refusal.message();
    match refusal {
        Refusal::Unauthenticated => Status::unauthenticated(message),
        Refusal::Unavailable => {
            let mut status = Status::unavailable(message);
            status.metadata_mut().insert(RETRY_AFTER, 1.into());
            status
        }
        Refusal::Forbidden(_) => Status::permission_denied(message),
        Refusal::RateLimited { state, retry_after } => {
            let mut status = Status::resource_exhausted(message);
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let metadata = status.metadata_mut();
            metadata.insert(RETRY_AFTER, seconds.max(1).into());
            for (name, value) in rate_values(state) {
                if let Ok(value) = value.parse() {
                    metadata.insert(name, value);
                }
            }
            status
        }
    }
}

/// OpenAI's `x-ratelimit-*` for the limits the caller has (requests, tokens or both).
pub fn rate_values(state: &RateState) -> Vec<(&'static str, String)> {
    let [limit_r, remaining_r, reset_r, limit_t, remaining_t, reset_t] = RATE_LIMIT;
    let mut values = Vec::with_capacity(6);
    if state.limits.rpm > 0 {
        values.push((limit_r, state.limits.rpm.to_string()));
        values.push((remaining_r, state.remaining_requests.to_string()));
        values.push((reset_r, go_duration(state.reset_requests)));
    }
    if state.limits.tpm > 0 {
        values.push((limit_t, state.limits.tpm.to_string()));
        values.push((remaining_t, state.remaining_tokens.to_string()));
        values.push((reset_t, go_duration(state.reset_tokens)));
    }
    values
}

fn rate_headers(headers: &mut HeaderMap, state: &RateState) {
    for (name, value) in rate_values(state) {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
}

/// A duration as OpenAI writes reset times (Go's format): `20ms`, `1.5s`, `6m0s`.
fn go_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => {
            let s = format!("{:.3}", d.as_secs_f64());
            format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
        }
        _ => format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// The admitted caller of a call; the authorize layer always puts one there, so a missing one
/// means the call did not pass the door (refused, never served anonymously).
pub(crate) fn caller<T>(request: &tonic::Request<T>) -> Result<citadel_auth::Caller, Status> {
    request
        .extensions()
        .get::<citadel_auth::Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the call did not pass the authorization layer"))
}

/// PERMISSION_DENIED unless the caller may use `model` (an API key's allow-list).
pub(crate) fn check_model(caller: &citadel_auth::Caller, model: &str) -> Result<(), Status> {
    match caller.principal.may_use_model(model) {
        true => Ok(()),
        false => Err(Status::permission_denied(format!(
            "this API key may not use model `{model}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(super::go_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(super::go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(super::go_duration(Duration::from_secs(6)), "6s");
        assert_eq!(super::go_duration(Duration::from_secs(360)), "6m0s");
    }
}
