//! Watches shared between sockets. Every socket of one principal with the same filter gets
//! the same changes, so they share one `WorkflowService.Watch` and each change is decoded and
//! written as JSON once, then handed to every socket as the same bytes. A thousand
//! dashboards of one team cost one stream, not a thousand. Only the principal's own sockets
//! share (its Watch was admitted for it, and shows what it may see); each socket still reads
//! its own snapshot through the mesh.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use axum::extract::ws::Utf8Bytes;
use citadel_proto::{metadata::MISSED, v1};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::{mesh_client::Mesh, workflows::WorkflowObject};

/// What a share hands its sockets.
#[derive(Clone, Debug)]
pub(crate) enum Shared {
    /// A change, as the frame every socket sends.
    Change {
        id: Arc<str>,
        version: u64,
        frame: Utf8Bytes,
    },
    /// The shared Watch fell behind the mesh and was opened again: changes were missed.
    Lagged(u64),
    /// The shared Watch failed (the frame: the error message); the share is gone.
    Ended(Utf8Bytes),
}

/// Whose changes, filtered how.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ShareKey {
    pub principal: String,
    pub kinds: Vec<String>,
    pub ids: Vec<String>,
}

struct Entry {
    changes: broadcast::Sender<Shared>,
    /// True once the shared Watch is open: a socket reads its snapshot only after that, so
    /// no change falls between the two.
    live: watch::Receiver<bool>,
}

/// The shares of this edge.
#[derive(Clone, Default)]
pub struct WatchShares(Arc<Mutex<HashMap<ShareKey, Entry>>>);

impl std::fmt::Debug for WatchShares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchShares")
    }
}

impl WatchShares {
    /// Joins the share of `key`, opening it (with `mesh`'s credential) when there is none.
    pub(crate) fn join(
        &self,
        key: ShareKey,
        mesh: &Mesh,
        capacity: usize,
    ) -> (broadcast::Receiver<Shared>, watch::Receiver<bool>) {
        let mut shares = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = shares.get(&key) {
            return (entry.changes.subscribe(), entry.live.clone());
        }
        let (changes, joined) = broadcast::channel(capacity);
        let (opened, live) = watch::channel(false);
        shares.insert(
            key.clone(),
            Entry {
                changes: changes.clone(),
                live: live.clone(),
            },
        );
        tokio::spawn(run(self.clone(), key, mesh.clone(), changes, opened));
        (joined, live)
    }

    /// Forgets `key`'s share if nobody listens to it any more, checked under the lock so a
    /// socket joining meanwhile is never left on a share that is ending.
    fn remove_unused(&self, key: &ShareKey, changes: &broadcast::Sender<Shared>) -> bool {
        let mut shares = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if changes.receiver_count() > 0 {
            return false;
        }
        if shares
            .get(key)
            .is_some_and(|e| e.changes.same_channel(changes))
        {
            shares.remove(key);
        }
        true
    }

    /// Forgets `key`'s share if it is still the one sending on `changes`.
    fn remove(&self, key: &ShareKey, changes: &broadcast::Sender<Shared>) {
        let mut shares = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if shares
            .get(key)
            .is_some_and(|e| e.changes.same_channel(changes))
        {
            shares.remove(key);
        }
    }
}

/// The shared Watch: opened again after a lag at the mesh, ended when its last socket left.
async fn run(
    shares: WatchShares,
    key: ShareKey,
    mesh: Mesh,
    changes: broadcast::Sender<Shared>,
    opened: watch::Sender<bool>,
) {
    let end = |frame: Utf8Bytes| {
        shares.remove(&key, &changes);
        let _ = changes.send(Shared::Ended(frame));
    };
    loop {
        let request = v1::WatchWorkflowsRequest {
            ids: key.ids.clone(),
            kinds: key.kinds.clone(),
            records: true,
            ..Default::default()
        };
        let mut client = mesh.workflows.clone();
        let mut stream = match client.watch(mesh.stream_request(request)).await {
            Ok(stream) => stream.into_inner(),
            Err(status) => return end(error_frame(status)),
        };
        opened.send_replace(true);
        loop {
            match stream.message().await {
                Ok(Some(event)) => {
                    if changes.receiver_count() == 0 && shares.remove_unused(&key, &changes) {
                        return; // nobody is listening any more
                    }
                    let Some(workflow) = event.workflow else {
                        continue;
                    };
                    let id: Arc<str> = workflow.id.as_str().into();
                    let frame = frame(WorkflowObject::from(workflow), false);
                    let _ = changes.send(Shared::Change {
                        id,
                        version: event.version,
                        frame,
                    });
                }
                Ok(None) => {
                    let ended = tonic::Status::unavailable("the workflow feed ended; watch again");
                    return end(error_frame(ended));
                }
                Err(status) if status.code() == tonic::Code::Aborted => {
                    let missed = status
                        .metadata()
                        .get(MISSED)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    // Not open until it is again: a socket joining meanwhile must not read its
                    // snapshot before the new Watch is there, or it could miss a change.
                    opened.send_replace(false);
                    let _ = changes.send(Shared::Lagged(missed));
                    break; // open it again
                }
                Err(status) => return end(error_frame(status)),
            }
        }
    }
}

/// `{"type": "workflow", "workflow": {...}}` (with `"snapshot": true` for a snapshot's).
pub(crate) fn frame(workflow: WorkflowObject, snapshot: bool) -> Utf8Bytes {
    let mut message = json!({"type": "workflow", "workflow": workflow});
    if snapshot {
        message["snapshot"] = Value::Bool(true);
    }
    message.to_string().into()
}

fn error_frame(status: tonic::Status) -> Utf8Bytes {
    let e = crate::error::workflow_error(status);
    super::protocol::error(None, &e).to_string().into()
}
