//! One WebSocket connection: reads client frames, runs the subscriptions it asks for, writes
//! what they produce. The socket is owned by this one task. The polled topics and control
//! calls run beside it and hand their messages over a bounded queue; the `workflows` topic,
//! once in sync, is read by this task straight off its share (`workflow_topic.rs`). A slow
//! client slows only itself (its workflow feed is then told `lagged`), never the hub.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use citadel_auth::{Caller, Permission};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::{
    sync::{Semaphore, mpsc, watch},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};

use super::{
    WsSettings, control,
    protocol::{self, ClientMessage, TOPICS},
    topics,
    workflow_topic::{self, Step, WorkflowTopic},
};
use crate::{error::ApiError, mesh_client::Mesh};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Close codes: going away (shutdown), message too big, token expired (4401, as HTTP 401).
const GOING_AWAY: u16 = 1001;
const TOO_BIG: u16 = 1009;
const EXPIRED: u16 = 4401;
/// Frames written with one flush at most.
const WRITE_BATCH: usize = 64;
/// Control calls one socket may have in flight.
const CONTROL_IN_FLIGHT: usize = 16;

/// A subscription's task, stopped when replaced, unsubscribed or the socket closes.
struct Subscription(JoinHandle<()>);

impl Drop for Subscription {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) async fn run(mut socket: WebSocket, mesh: Mesh, caller: Caller, settings: WsSettings) {
    // Both made once: a future per loop turn would register with the shutdown token (shared
    // by every socket, behind one lock) and the timer wheel at every frame written.
    let stopping = mesh.realtime.streams.stopping.clone().cancelled_owned();
    tokio::pin!(stopping);
    let (out, mut queued) = mpsc::channel::<Utf8Bytes>(settings.send_queue);
    // The socket's current credential; its subscriptions read it for every call.
    let (credential, _) = watch::channel(mesh);
    let control = Arc::new(Semaphore::new(CONTROL_IN_FLIGHT));
    let mut subscriptions: HashMap<&'static str, Subscription> = HashMap::new();
    let mut workflows: Option<WorkflowTopic> = None;
    let mut expires = deadline(caller.principal.expires_at);
    let welcome = json!({
        "type": "welcome",
        "version": VERSION,
        "connection_id": uuid::Uuid::new_v4().to_string(),
        "topics": TOPICS,
        "max_message_bytes": settings.max_message_bytes,
        "metrics_interval_ms": settings.metrics_interval.as_millis() as u64,
        "principal": {"id": caller.principal.id, "role": caller.principal.role.name},
    });
    if send(&mut socket, &welcome).await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval_at(
        Instant::now() + settings.ping_interval,
        settings.ping_interval,
    );
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    let expired = tokio::time::sleep_until(expires.unwrap_or_else(far_future));
    tokio::pin!(expired);
    loop {
        tokio::select! {
            biased;
            () = &mut stopping => {
                close(&mut socket, GOING_AWAY, "the server is shutting down").await;
                return;
            }
            () = &mut expired, if expires.is_some() => {
                close(&mut socket, EXPIRED, "the token expired; send {\"type\":\"auth\"} first")
                    .await;
                return;
            }
            frame = socket.recv() => {
                heard = Instant::now();
                let text = match frame {
                    None | Some(Ok(Message::Close(_))) => return,
                    // Past the hard limit, or a broken stream: nothing more can be read.
                    Some(Err(_)) => {
                        close(&mut socket, TOO_BIG, "message too big or malformed").await;
                        return;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(b))) if b.len() <= settings.max_message_bytes => {
                        let e = ApiError::invalid("message", "send JSON text frames, not binary")
                            .with_code("invalid_message");
                        if send(&mut socket, &protocol::error(None, &e)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        close(&mut socket, TOO_BIG, "message too big").await;
                        return;
                    }
                    Some(Ok(Message::Text(text))) => text,
                };
                if text.len() > settings.max_message_bytes {
                    let m = format!("messages are at most {} bytes", settings.max_message_bytes);
                    close(&mut socket, TOO_BIG, &m).await;
                    return;
                }
                let message = match protocol::parse(&text) {
                    Ok(message) => message,
                    Err(reply) => {
                        if send(&mut socket, &reply).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let before = expires;
                let context = Context { socket: &mut socket, out: &out,
                    credential: &credential, subscriptions: &mut subscriptions,
                    workflows: &mut workflows, settings: &settings, expires: &mut expires,
                    control: &control, principal: &caller.principal.id };
                if context.handle(message).await.is_err() {
                    return;
                }
                if expires != before {
                    expired.as_mut().reset(expires.unwrap_or_else(far_future));
                }
            }
            // Ready once an interval: ahead of the writes, so a busy feed cannot starve it.
            _ = ping.tick() => {
                // Silent for three pings (no frame, no pong): gone without a close.
                if heard.elapsed() > settings.ping_interval * 3 {
                    return;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            Some(text) = queued.recv() => {
                if write_queued(&mut socket, text, &mut queued).await.is_err() {
                    return;
                }
            }
            step = next_change(&mut workflows) => {
                if write_changes(&mut socket, step, &mut workflows, &mut queued).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// What handling one client message may touch.
struct Context<'a> {
    socket: &'a mut WebSocket,
    out: &'a mpsc::Sender<Utf8Bytes>,
    credential: &'a watch::Sender<Mesh>,
    subscriptions: &'a mut HashMap<&'static str, Subscription>,
    workflows: &'a mut Option<WorkflowTopic>,
    settings: &'a WsSettings,
    expires: &'a mut Option<Instant>,
    control: &'a Arc<Semaphore>,
    /// Who the socket was opened for: it keeps that principal (a refresh must be its own).
    principal: &'a str,
}

impl Context<'_> {
    /// Err: the socket is gone.
    async fn handle(self, message: ClientMessage) -> Result<(), axum::Error> {
        let mesh = self.credential.borrow().clone();
        match message {
            ClientMessage::Subscribe {
                id,
                topics,
                workflow_ids,
                kinds,
            } => {
                let topics = match checked(&mesh, &topics).await {
                    Ok(topics) => topics,
                    Err(e) => return send(self.socket, &protocol::error(id.as_ref(), &e)).await,
                };
                let mut ack = protocol::reply("ack", id.as_ref());
                ack["topics"] = json!(topics);
                // The ack goes before anything a subscription sends.
                send(self.socket, &ack).await?;
                for topic in topics {
                    let mesh = self.credential.subscribe();
                    let out = self.out.clone();
                    if topic == "workflows" {
                        let (ids, kinds) = (&workflow_ids, &kinds);
                        let started = WorkflowTopic::start(
                            mesh,
                            out,
                            self.settings,
                            self.principal,
                            ids,
                            kinds,
                        );
                        *self.workflows = Some(started);
                        continue;
                    }
                    let task = topics::start(topic, mesh, out, self.settings);
                    self.subscriptions.insert(topic, Subscription(task));
                }
                Ok(())
            }
            ClientMessage::Unsubscribe { id, topics } => {
                self.subscriptions
                    .retain(|topic, _| !topics.iter().any(|t| t == topic));
                if topics.iter().any(|t| t == "workflows") {
                    *self.workflows = None;
                }
                let mut left: Vec<&str> = self.subscriptions.keys().copied().collect();
                left.extend(self.workflows.as_ref().map(|_| "workflows"));
                let mut ack = protocol::reply("ack", id.as_ref());
                ack["topics"] = json!(left);
                send(self.socket, &ack).await
            }
            ClientMessage::Auth { id, token } => {
                let reply = match refreshed(&mesh, &token, self.principal).await {
                    Ok((fresh, expires_at)) => {
                        *self.expires = deadline(expires_at);
                        self.credential.send_replace(fresh);
                        protocol::result(id.as_ref(), json!({"expires_at": expires_at}))
                    }
                    Err(e) => protocol::error(id.as_ref(), &e),
                };
                send(self.socket, &reply).await
            }
            ClientMessage::Ping { id } => {
                send(self.socket, &protocol::reply("pong", id.as_ref())).await
            }
            control_message => {
                // Control calls run beside the socket, so a slow one holds up nothing else.
                // Past CONTROL_IN_FLIGHT the call is refused, not waited for: the calls in
                // flight may themselves be waiting for this task to drain the socket's queue.
                let Ok(permit) = self.control.clone().try_acquire_owned() else {
                    let m = format!(
                        "at most {CONTROL_IN_FLIGHT} control calls may be in flight on one \
                         socket; wait for an answer before sending more"
                    );
                    let e = ApiError::new(axum::http::StatusCode::TOO_MANY_REQUESTS, "requests", m)
                        .with_code("too_many_in_flight");
                    return send(self.socket, &protocol::error(control_message.id(), &e)).await;
                };
                let out = self.out.clone();
                tokio::spawn(async move {
                    control::run(mesh, control_message, out).await;
                    drop(permit);
                });
                Ok(())
            }
        }
    }
}

/// The topics asked for, each known and allowed to this caller.
async fn checked(mesh: &Mesh, asked: &[String]) -> Result<Vec<&'static str>, ApiError> {
    if asked.is_empty() {
        return Err(ApiError::invalid("topics", "name at least one topic"));
    }
    let mut topics = Vec::new();
    for name in asked {
        let Some(topic) = TOPICS.into_iter().find(|t| t == name) else {
            let shown: String = name.chars().take(64).collect();
            let m = format!("unknown topic {shown:?}; topics: {}", TOPICS.join(", "));
            return Err(ApiError::invalid("topics", m).with_code("unknown_topic"));
        };
        let permission = match topic {
            "health" => Permission::HealthRead,
            "models" => Permission::ModelsRead,
            "metrics" => Permission::MetricsRead,
            _ => Permission::WorkflowsWatch,
        };
        mesh.admit(permission, "/ws/orchestration").await?;
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    Ok(topics)
}

/// The socket's handle with a fresh credential, once the policy admits it.
async fn refreshed(
    mesh: &Mesh,
    token: &str,
    principal: &str,
) -> Result<(Mesh, Option<u64>), ApiError> {
    let fresh = mesh
        .with_token(token)
        .ok_or_else(|| ApiError::invalid("token", "not a usable token"))?;
    let caller = fresh
        .admit_caller(Permission::WorkflowsWatch, "/ws/orchestration")
        .await?;
    if caller.principal.id != principal {
        let m = "the token is another principal's: a socket keeps the principal it opened with";
        return Err(
            ApiError::new(axum::http::StatusCode::FORBIDDEN, crate::error::INVALID, m)
                .with_code("permission_denied"),
        );
    }
    Ok((fresh, caller.principal.expires_at))
}

/// A deadline that never comes (a year away), for a credential that does not expire.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// When a credential that expires at `unix_secs` stops being valid, on the runtime's clock.
fn deadline(unix_secs: Option<u64>) -> Option<Instant> {
    let unix_secs = unix_secs?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Instant::now() + Duration::from_secs(unix_secs.saturating_sub(now)))
}

/// `first` and whatever else is queued already (up to a batch), flushed once: under load one
/// write carries many frames instead of a system call each.
async fn write_queued(
    socket: &mut WebSocket,
    first: Utf8Bytes,
    queued: &mut mpsc::Receiver<Utf8Bytes>,
) -> Result<(), axum::Error> {
    socket.feed(Message::Text(first)).await?;
    for _ in 1..WRITE_BATCH {
        match queued.try_recv() {
            Ok(text) => socket.feed(Message::Text(text)).await?,
            Err(_) => break,
        }
    }
    socket.flush().await
}

/// The `workflows` topic's next step; never, while the socket has none.
async fn next_change(workflows: &mut Option<WorkflowTopic>) -> Step {
    match workflows {
        Some(topic) => topic.next().await,
        None => std::future::pending().await,
    }
}

/// `first` and the changes already waiting behind it (up to a batch), flushed once: a
/// workflow's burst of changes (a noop's three) costs one write.
async fn write_changes(
    socket: &mut WebSocket,
    first: Step,
    workflows: &mut Option<WorkflowTopic>,
    queued: &mut mpsc::Receiver<Utf8Bytes>,
) -> Result<(), axum::Error> {
    let mut next = Some(first);
    let mut written = 0;
    while let Some(step) = next.take() {
        if step.ends() {
            *workflows = None;
        }
        match step {
            Step::Frame(frame) | Step::Ended(frame) => socket.feed(Message::Text(frame)).await?,
            Step::Lagged(missed) => {
                let lagged = workflow_topic::lagged(missed);
                socket.feed(Message::Text(lagged)).await?;
            }
            // The snapshot and `synced` are in the queue: they go before any change.
            Step::Synced => {
                while let Ok(text) = queued.try_recv() {
                    socket.feed(Message::Text(text)).await?;
                }
            }
            Step::Gone => {}
        }
        written += 1;
        if written < WRITE_BATCH {
            next = workflows.as_mut().and_then(WorkflowTopic::try_next);
        }
    }
    socket.flush().await
}

async fn send(socket: &mut WebSocket, message: &Value) -> Result<(), axum::Error> {
    socket.send(Message::Text(message.to_string().into())).await
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    // A close reason is at most 123 bytes.
    let reason: String = reason.chars().take(120).collect();
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}
