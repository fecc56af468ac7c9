//! The REST edge: OpenAI-style JSON in, gRPC calls to the mesh out.
//!
//! This crate owns the HTTP surface (`/v1/embeddings`, `/v1/models`, `/health/`,
//! `/health/detailed`, `/metrics`), the OpenAI error shape, request ids, CORS, body limits and
//! HTTP metrics. Beside it sits an Ollama-compatible surface (`/api/embed`, `/api/embeddings`,
//! `/api/tags`, `/api/version`, errors as Ollama's `{"error": "..."}`) so tools built for Ollama
//! can point at Citadel unchanged. Durable workflows are submitted, listed, fetched, cancelled
//! and retried at `/api/v1/workflows` (`citadel.v1.WorkflowService`). The real-time edge adds
//! `/ws/orchestration` (live workflow events, health, models and metrics; workflow control),
//! the AG-UI agent at `/api/v1/agui` for CopilotKit front ends, the Copilot actions at
//! `/api/v1/copilot/actions`, and the operator page at `/`. Vector collections are created,
//! filled and searched at `/api/v1/collections` (`citadel.v1.VectorService`). It holds no business
//! logic and never reaches past the gRPC contract: every call goes through a tonic client to
//! `citadel.v1.*` (in memory when the mesh shares the process, `mesh.rs`), so anything REST can
//! do, gRPC can too.

#![forbid(unsafe_code)]

mod agui;
mod cache_headers;
mod completions;
mod error;
mod extract;
mod layers;
mod mesh;
mod mesh_client;
mod ollama;
mod openai;
mod realtime;
mod routes;
mod state;
mod vectors;
mod workflows;

use std::time::Duration;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    routing::{get, post},
};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub use agui::AguiSettings;
pub use error::{ApiError, refusal_body};
pub use mesh::{MeshChannel, in_process as in_process_channel, remote as remote_channel};
pub use realtime::{WatchShares, WsSettings};
pub use state::{AppState, Deadlines, LongStreams, MetricsRender, Realtime};

/// What the edge needs from the configuration.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub body_limit_bytes: usize,
    /// The whole body, however it trickles in.
    pub body_read_timeout: Duration,
    /// Each pause between two pieces of a body.
    pub body_idle_timeout: Duration,
    pub cors_allowed_origins: Vec<String>,
}

/// The edge's router with its middleware pipeline.
pub fn router(state: AppState, settings: &GatewaySettings) -> Router {
    let routes = Router::new()
        .route("/v1/embeddings", post(routes::embeddings::create))
        .route("/v1/chat/completions", post(routes::completions::chat))
        .route("/v1/completions", post(routes::completions::complete))
        .route("/v1/models", get(routes::models::list))
        .route("/v1/models/{*id}", get(routes::models::get))
        // Ollama's API, for tools built for it.
        .route("/api/embed", post(routes::ollama::embed))
        .route("/api/embeddings", post(routes::ollama::embeddings))
        .route("/api/tags", get(routes::ollama::tags))
        .route("/api/version", get(routes::ollama::version))
        // Durable workflows.
        .route(
            "/api/v1/workflows",
            post(routes::workflows::submit).get(routes::workflows::list),
        )
        .route("/api/v1/workflows/queue", get(routes::workflows::queue))
        .route("/api/v1/workflows/{id}", get(routes::workflows::get))
        .route(
            "/api/v1/workflows/{id}/cancel",
            post(routes::workflows::cancel),
        )
        .route(
            "/api/v1/workflows/{id}/retry",
            post(routes::workflows::retry),
        )
        // Vector collections.
        .route(
            "/api/v1/collections",
            post(routes::vectors::create).get(routes::vectors::list),
        )
        .route(
            "/api/v1/collections/{name}",
            get(routes::vectors::get).delete(routes::vectors::delete),
        )
        .route(
            "/api/v1/collections/{name}/points",
            post(routes::vectors::upsert),
        )
        .route(
            "/api/v1/collections/{name}/points/delete",
            post(routes::vectors::delete_points),
        )
        .route(
            "/api/v1/collections/{name}/search",
            post(routes::vectors::search),
        )
        .route(
            "/api/v1/collections/{name}/count",
            post(routes::vectors::count),
        )
        // The real-time edge: the live socket, the AG-UI agent, the Copilot actions and the
        // operator page.
        .route("/ws/orchestration", get(realtime::orchestration))
        .route("/api/v1/agui", post(agui::run))
        .route(
            "/api/v1/copilot/actions",
            get(agui::actions::list).post(agui::actions::invoke),
        )
        .route("/", get(routes::operator::page))
        .route("/health", get(routes::health::live))
        .route("/health/", get(routes::health::live))
        .route("/health/detailed", get(routes::health::detailed))
        .route("/metrics", get(routes::health::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        // Inside routing, so the metrics see the matched route pattern.
        .layer(middleware::from_fn(layers::http_metrics::record))
        // The caller's credential, forwarded on every gRPC call; rate headers and the 401
        // challenge on the way out.
        .layer(middleware::from_fn_with_state(
            layers::auth::CookieOrigins::new(&settings.cors_allowed_origins),
            layers::auth::credentials,
        ))
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
        .with_state(state);

    // The pipeline, outermost first.
    routes.layer(
        ServiceBuilder::new()
            // A caller's request id only when short and printable; bounded URIs.
            .layer(middleware::from_fn(layers::sanitize::sanitize))
            // Accept the caller's x-request-id or make one...
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            // ...and return it on the response.
            .layer(PropagateRequestIdLayer::x_request_id())
            // A span per request, carrying the id; one INFO line per response.
            .layer(layers::trace::layer())
            // Browsers: only the configured origins.
            .layer(layers::cors::layer(&settings.cors_allowed_origins))
            // A declared oversize body is refused before any of it is read; a body must
            // arrive within a total deadline, without long pauses.
            .layer(layers::request_body::RequestBody::layer(
                settings.body_limit_bytes,
                settings.body_read_timeout,
                settings.body_idle_timeout,
            )),
    )
}
