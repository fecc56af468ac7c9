//! The `workflows` topic of one socket: its own snapshot, then the changes of the share it
//! joined (`share.rs`). The snapshot is read beside the socket and sent through its queue;
//! once in sync the session task reads the share's broadcast itself, so a change costs each
//! socket one wake-up and one write — not a task of its own and a hop through the queue. A
//! socket too slow
//! for the share is told how much it missed, then gets a fresh snapshot, so it never shows a
//! stale state for long.

use std::{collections::HashMap, time::Duration};

use axum::extract::ws::Utf8Bytes;
use citadel_proto::v1;
use serde_json::json;
use tokio::{
    sync::{broadcast, mpsc, watch},
    task::JoinHandle,
};

use super::{
    WsSettings, protocol,
    share::{ShareKey, Shared, frame},
};
use crate::{
    error::{ApiError, workflow_error},
    mesh_client::Mesh,
    workflows::WorkflowObject,
};

/// How long a socket waits for a new share's Watch to open.
const SHARE_OPEN: Duration = Duration::from_secs(10);

type Out = mpsc::Sender<Utf8Bytes>;

/// What the session writes next for the topic.
pub(super) enum Step {
    /// A change the socket has not shown yet.
    Frame(Utf8Bytes),
    /// The snapshot and `synced` are queued: write the queue before any change that follows.
    Synced,
    /// The socket fell behind the share (or the share behind the mesh); a fresh snapshot is
    /// on its way.
    Lagged(u64),
    /// The share failed (the frame: its error); the topic is over.
    Ended(Utf8Bytes),
    /// The topic is over: the snapshot failed (its error was queued) or the share closed.
    Gone,
}

impl Step {
    /// The topic has nothing more to send.
    pub(super) fn ends(&self) -> bool {
        matches!(self, Step::Ended(_) | Step::Gone)
    }
}

/// The snapshot task, stopped when the topic is dropped.
struct Syncing(JoinHandle<Option<Live>>);

impl Drop for Syncing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// In sync: the share's changes, and what the snapshot showed, to drop older repeats.
struct Live {
    changes: broadcast::Receiver<Shared>,
    shown: HashMap<String, u64>,
}

enum State {
    Syncing(Syncing),
    Live(Live),
    /// Nothing more comes (its task's handle must not be polled again).
    Done,
}

pub(super) struct WorkflowTopic {
    state: State,
    mesh: watch::Receiver<Mesh>,
    out: Out,
    share: ShareKey,
    settings: WsSettings,
}

impl WorkflowTopic {
    /// Starts the topic: its snapshot is read beside the socket, sent through `out`.
    pub(super) fn start(
        mesh: watch::Receiver<Mesh>,
        out: Out,
        settings: &WsSettings,
        principal: &str,
        ids: &[String],
        kinds: &[String],
    ) -> Self {
        let share = ShareKey {
            principal: principal.to_string(),
            kinds: sorted(kinds),
            ids: sorted(ids),
        };
        let state = State::Syncing(sync(&mesh, &out, &share, settings));
        WorkflowTopic {
            state,
            mesh,
            out,
            share,
            settings: settings.clone(),
        }
    }

    /// The next thing to write. Cancel-safe: nothing is taken off the share unless returned.
    pub(super) async fn next(&mut self) -> Step {
        loop {
            let received = match &mut self.state {
                State::Syncing(task) => {
                    let synced = (&mut task.0).await;
                    return match synced {
                        Ok(Some(live)) => {
                            self.state = State::Live(live);
                            Step::Synced
                        }
                        Ok(None) | Err(_) => {
                            self.state = State::Done;
                            Step::Gone
                        }
                    };
                }
                State::Live(live) => live.changes.recv().await,
                State::Done => return std::future::pending().await,
            };
            if let Some(step) = self.step(received) {
                return step;
            }
        }
    }

    /// The next change already waiting, if any, so one flush carries a burst.
    pub(super) fn try_next(&mut self) -> Option<Step> {
        use broadcast::error::{RecvError, TryRecvError};
        loop {
            let State::Live(live) = &mut self.state else {
                return None;
            };
            let received = match live.changes.try_recv() {
                Ok(shared) => Ok(shared),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Lagged(missed)) => Err(RecvError::Lagged(missed)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
            };
            if let Some(step) = self.step(received) {
                return Some(step);
            }
        }
    }

    /// What one message of the share means for this socket; `None`: a repeat of its snapshot.
    fn step(&mut self, received: Result<Shared, broadcast::error::RecvError>) -> Option<Step> {
        use broadcast::error::RecvError;
        let missed = match received {
            Ok(Shared::Change { id, version, frame }) => {
                let State::Live(live) = &mut self.state else {
                    return None;
                };
                // The share may still deliver several changes the snapshot already holds; the
                // first newer one supersedes the snapshot's, and the share keeps order after it.
                if let Some(&seen) = live.shown.get(&*id) {
                    if version <= seen {
                        return None;
                    }
                    live.shown.remove(&*id);
                }
                return Some(Step::Frame(frame));
            }
            Ok(Shared::Ended(frame)) => {
                self.state = State::Done;
                return Some(Step::Ended(frame));
            }
            Err(RecvError::Closed) => {
                self.state = State::Done;
                return Some(Step::Gone);
            }
            Ok(Shared::Lagged(missed)) | Err(RecvError::Lagged(missed)) => missed,
        };
        self.state = State::Syncing(sync(&self.mesh, &self.out, &self.share, &self.settings));
        Some(Step::Lagged(missed))
    }
}

/// `{"type": "lagged", "missed": n}`.
pub(super) fn lagged(missed: u64) -> Utf8Bytes {
    json!({"type": "lagged", "missed": missed})
        .to_string()
        .into()
}

/// The same filter however it was written.
fn sorted(values: &[String]) -> Vec<String> {
    let mut values = values.to_vec();
    values.sort_unstable();
    values.dedup();
    values
}

fn sync(mesh: &watch::Receiver<Mesh>, out: &Out, share: &ShareKey, s: &WsSettings) -> Syncing {
    let handle = mesh.borrow().clone();
    let task = synced(handle, out.clone(), share.clone(), s.feed_buffer);
    Syncing(tokio::spawn(task))
}

/// Joins the share, then sends the snapshot and `synced` through `out`. `None`: the socket
/// is gone, or the topic failed (its error was sent).
async fn synced(mesh: Mesh, out: Out, share: ShareKey, feed_buffer: usize) -> Option<Live> {
    let shares = mesh.realtime.shares.clone();
    let (changes, mut live) = shares.join(share.clone(), &mesh, feed_buffer);
    // The share's Watch must be open before the snapshot is read, or a change could fall
    // between the two.
    if tokio::time::timeout(SHARE_OPEN, live.wait_for(|open| *open))
        .await
        .is_err()
    {
        let e = ApiError::from(tonic::Status::unavailable("the workflow feed did not open"));
        let _ = out.send(protocol::error(None, &e).to_string().into()).await;
        return None;
    }
    match snapshot(&mesh, &share, &out).await {
        Ok(Some(shown)) => {
            // From here on the socket has the current state and every change after it.
            let synced = json!({"type": "synced", "topic": "workflows", "snapshot": shown.len()});
            out.send(synced.to_string().into()).await.ok()?;
            Some(Live { changes, shown })
        }
        Ok(None) => None,
        Err(e) => {
            let _ = out.send(protocol::error(None, &e).to_string().into()).await;
            None
        }
    }
}

/// The matching workflows now, sent marked `snapshot`; their versions, to drop the share's
/// older changes. `None`: the socket is gone.
async fn snapshot(
    mesh: &Mesh,
    share: &ShareKey,
    out: &Out,
) -> Result<Option<HashMap<String, u64>>, ApiError> {
    let request = v1::WatchWorkflowsRequest {
        ids: share.ids.clone(),
        kinds: share.kinds.clone(),
        snapshot: true,
        snapshot_only: true,
        records: true,
        ..Default::default()
    };
    let mut client = mesh.workflows.clone();
    let call = client.watch(mesh.stream_request(request));
    let mut stream = mesh
        .call_mapped(call, "workflow service", workflow_error)
        .await?;
    let mut shown = HashMap::new();
    while let Some(event) = stream.message().await.map_err(workflow_error)? {
        let Some(workflow) = event.workflow else {
            continue;
        };
        shown.insert(workflow.id.clone(), event.version);
        if out
            .send(frame(WorkflowObject::from(workflow), true))
            .await
            .is_err()
        {
            return Ok(None);
        }
    }
    Ok(Some(shown))
}
