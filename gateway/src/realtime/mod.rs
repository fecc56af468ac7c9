//! The real-time edge's WebSocket, `/ws/orchestration`: workflow events, health, models and
//! metrics pushed to subscribers, and workflow control, over JSON text frames
//! (`protocol.rs`). Like every route it reaches the mesh only through gRPC: a subscription to
//! `workflows` is one `WorkflowService.Watch` (with a snapshot), control messages are the
//! same RPCs the REST routes call.
//!
//! The socket is admitted before the upgrade (`workflows:watch`), with the credential of the
//! `Authorization` header, Clerk's `__session` cookie (Origin checked by the auth layer) or,
//! for browsers, which cannot set headers on a WebSocket, a `bearer.<token>` subprotocol.

mod control;
mod protocol;
mod session;
mod share;
mod topics;
mod workflow_topic;

pub use share::WatchShares;

use std::time::Duration;

use axum::{
    extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use citadel_auth::Permission;

use crate::{
    error::{ApiError, INVALID},
    mesh_client::Mesh,
};

/// What the WebSocket needs from the configuration (`[ws]`).
#[derive(Debug, Clone)]
pub struct WsSettings {
    pub max_message_bytes: usize,
    pub metrics_interval: Duration,
    pub ping_interval: Duration,
    pub send_queue: usize,
    /// Changes a socket may fall behind its share before it is told `lagged`.
    pub feed_buffer: usize,
}

/// The subprotocol a client may ask for besides its credential.
const PROTOCOL: &str = "citadel.v1";
const BEARER_PREFIX: &str = "bearer.";
/// Bytes one read of a socket takes at most.
const READ_BUFFER: usize = 8 * 1024;

/// `GET /ws/orchestration`.
pub async fn orchestration(
    mesh: Mesh,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    let bearer = offered.iter().find(|p| p.starts_with(BEARER_PREFIX));
    let mesh = match bearer {
        Some(p) if !mesh.has_credential() => {
            let token = &p[BEARER_PREFIX.len()..];
            mesh.with_token(token).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    INVALID,
                    "the bearer.<token> subprotocol holds no usable token",
                )
                .with_code("invalid_api_key")
            })?
        }
        _ => mesh,
    };
    // Refused before the upgrade, so a browser can tell "needs a token" (401) from "down".
    let caller = mesh
        .admit_caller(Permission::WorkflowsWatch, "/ws/orchestration")
        .await?;
    let upgrade = upgrade.map_err(|e| {
        let m = format!(
            "/ws/orchestration takes a WebSocket upgrade: {}",
            e.body_text()
        );
        ApiError::new(StatusCode::UPGRADE_REQUIRED, INVALID, m).with_code("upgrade_required")
    })?;
    // A browser fails the handshake unless one offered protocol is chosen.
    let chosen = match offered.iter().find(|p| p.as_str() == PROTOCOL) {
        Some(p) => Some(p.clone()),
        None => bearer.cloned(),
    };
    let upgrade = match chosen {
        Some(p) => upgrade.protocols([p]),
        None => upgrade,
    };
    let settings = mesh.realtime.ws.clone();
    let open = mesh.realtime.streams.open.clone();
    // Frames past the limit are refused by the session with 1009; twice the limit is the
    // hard stop that never buffers more.
    let hard = settings.max_message_bytes.saturating_mul(2);
    Ok(upgrade
        // tungstenite zero-fills this much of its read buffer on every read attempt, and the
        // session polls a read each time it wakes to write: at the default 128 KiB a fan-out
        // to a thousand sockets spent a quarter of the edge's CPU in memset. Client messages
        // are small; a larger one is still read whole, in more reads.
        .read_buffer_size(READ_BUFFER)
        .max_message_size(hard)
        .max_frame_size(hard)
        .on_upgrade(move |socket| open.track_future(session::run(socket, mesh, caller, settings)))
        .into_response())
}
