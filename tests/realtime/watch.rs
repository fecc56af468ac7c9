//! `WorkflowService.Watch` over a real gRPC socket: the whole record on every event (the
//! final one with the result), a resume point that skips what a watcher has seen, and the
//! snapshot a watch of many opens with.

use std::time::Duration;

use citadel_proto::v1::{
    SubmitWorkflowRequest, WatchWorkflowsRequest, WorkflowState,
    workflow_service_client::WorkflowServiceClient,
};
use tokio_stream::StreamExt;

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_a_version_and_opens_with_a_snapshot() {
    let server = common::Server::start();
    let mut client = WorkflowServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let submit = SubmitWorkflowRequest {
        kind: "sleep".into(),
        params_json: r#"{"ms": 100, "steps": 2, "big": 9007199254740993}"#.into(),
        ..Default::default()
    };
    let workflow = client
        .submit(submit)
        .await
        .unwrap()
        .into_inner()
        .workflow
        .unwrap();
    let watch = |since_version| WatchWorkflowsRequest {
        id: workflow.id.clone(),
        since_version,
        records: true,
        ..Default::default()
    };
    let events: Vec<_> = client
        .watch(watch(0))
        .await
        .unwrap()
        .into_inner()
        .timeout(Duration::from_secs(10))
        .map(|e| e.expect("an event within 10 s").unwrap())
        .collect()
        .await;
    let last = events.last().unwrap();
    assert_eq!(last.state(), WorkflowState::Success);
    let record = last.workflow.as_ref().unwrap();
    assert_eq!(record.version, last.version);
    assert!(
        !record.result_json.is_empty(),
        "the final event carries the result"
    );
    assert!(
        record.params_json.contains("9007199254740993"),
        "{}",
        record.params_json
    );
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");

    // Resuming from the second event: nothing it has seen; the current state (not a replay of
    // each change in between), and the stream ends with the workflow.
    let resumed: Vec<u64> = client
        .watch(watch(versions[1]))
        .await
        .unwrap()
        .into_inner()
        .map(|e| e.unwrap().version)
        .collect()
        .await;
    assert!(
        resumed.iter().all(|v| *v > versions[1]),
        "{resumed:?} after {versions:?}"
    );
    assert_eq!(resumed.last(), Some(&last.version));
    // Resuming from the end: nothing, and the stream ends at once.
    let none: Vec<_> = client
        .watch(watch(last.version))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert!(none.is_empty());

    // A watch of many, with a snapshot: the finished workflow first, marked as such.
    let many = WatchWorkflowsRequest {
        kinds: vec!["sleep".into()],
        snapshot: true,
        ..Default::default()
    };
    let mut stream = client.watch(many).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.snapshot);
    assert_eq!(first.workflow_id, workflow.id);
    assert_eq!(first.state(), WorkflowState::Success);
}
