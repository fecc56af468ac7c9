//! `citadel.v1.EmbeddingService`, `grpc.health.v1.Health` and reflection, called directly the
//! way internal services and operators' probes do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use citadel_proto::v1::{
    EmbedRequest, EmbedStreamRequest, GetModelRequest, ListModelsRequest, ModelState,
    embed_stream_response, embedding_service_client::EmbeddingServiceClient,
};
use common::*;
use futures_util::StreamExt;
use tonic::{Code, Request, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn channel(server: &Server) -> Channel {
    Channel::from_shared(server.grpc.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

fn request(inputs: Vec<String>) -> EmbedRequest {
    EmbedRequest {
        model: MODEL.into(),
        inputs,
        ..Default::default()
    }
}

#[tokio::test]
async fn embed_matches_the_reference_with_usage_and_timing() {
    let server = Server::start();
    let mut client = EmbeddingServiceClient::new(channel(&server).await);
    let (texts, reference) = reference();
    let response = client
        .embed(request(texts.clone()))
        .await
        .expect("embed")
        .into_inner();
    assert_eq!(response.model, MODEL);
    assert_eq!(response.embeddings.len(), texts.len());
    for (i, (got, want)) in response.embeddings.iter().zip(&reference).enumerate() {
        assert!(cosine(&got.values, want) >= 0.999, "text {i}");
    }
    let usage = response.usage.expect("usage");
    assert!(usage.prompt_tokens > 0 && usage.prompt_tokens == usage.total_tokens);
    let timing = response.timing.expect("timing");
    assert!(timing.inference_us > 0 && timing.total_us >= timing.inference_us);
}

#[tokio::test]
async fn errors_map_to_grpc_status_codes() {
    let server = Server::with_config("[models.all-minilm]\nmax_queued_inputs = 64\n");
    let mut client = EmbeddingServiceClient::new(channel(&server).await);

    let status = client.embed(request(vec![])).await.expect_err("empty");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status
            .metadata()
            .get("x-citadel-error-param")
            .map(|v| v.to_str().ok()),
        Some(Some("input"))
    );
    let status = client
        .embed(request(vec!["ok".into(), String::new()]))
        .await
        .expect_err("empty string");
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut dims = request(vec!["x".into()]);
    dims.dimensions = Some(1000);
    assert_eq!(
        client.embed(dims).await.expect_err("dims").code(),
        Code::InvalidArgument
    );
    let mut long = request(vec!["word ".repeat(300)]);
    long.truncate = Some(false);
    assert_eq!(
        client.embed(long).await.expect_err("too long").code(),
        Code::InvalidArgument
    );

    let mut unknown = request(vec!["x".into()]);
    unknown.model = "nope".into();
    assert_eq!(
        client.embed(unknown).await.expect_err("unknown").code(),
        Code::NotFound
    );
    let missing = client
        .get_model(GetModelRequest {
            model: "nope".into(),
        })
        .await
        .expect_err("get");
    assert_eq!(missing.code(), Code::NotFound);

    // grpc-timeout is honoured: 300 ms cannot embed 64 long inputs (over a second of work),
    // and the answer is DEADLINE_EXCEEDED even for a client enforcing the deadline itself.
    let mut slow = Request::new(request((0..64).map(|i| sentence(i, 150)).collect()));
    slow.set_timeout(Duration::from_millis(300));
    let status = client.embed(slow).await.expect_err("deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    // A full queue: RESOURCE_EXHAUSTED with retry-after, never another failure. The cache is
    // bypassed, or the identical requests would be computed once (single flight).
    let mut big = request((0..64).map(|i| sentence(i, 120)).collect());
    big.set_cache_policy(citadel_proto::v1::CachePolicy::NoStore);
    let calls = (0..8).map(|_| {
        let mut client = client.clone();
        let big = big.clone();
        async move { client.embed(big).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let exhausted: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(!exhausted.is_empty() && exhausted.len() < 8);
    for status in exhausted {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.metadata().get("retry-after").is_some());
    }
}

#[tokio::test]
async fn health_serves_overall_and_per_service() {
    let server = Server::start();
    let mut health = HealthClient::new(channel(&server).await);
    for service in ["", "citadel.v1.EmbeddingService"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check");
        assert_eq!(
            answer.into_inner().status(),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "citadel.v1.Nope".into(),
        })
        .await;
    assert_eq!(unknown.expect_err("unknown service").code(), Code::NotFound);

    let mut watch = health
        .watch(HealthCheckRequest {
            service: "citadel.v1.EmbeddingService".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("an update").expect("ok");
    assert_eq!(first.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn health_goes_not_serving_on_shutdown() {
    let mut server = Server::start();
    let mut health = HealthClient::new(channel(&server).await);
    let mut watch = health
        .watch(HealthCheckRequest { service: "".into() })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(
        watch.next().await.expect("update").expect("ok").status(),
        ServingStatus::Serving
    );
    server.sigterm();
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("in time");
    if let Some(Ok(update)) = next {
        assert_eq!(update.status(), ServingStatus::NotServing);
    }
    let exit = server.wait_exit(Duration::from_secs(20)).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "{exit:?}\n{}",
        server.logs()
    );
}

#[tokio::test]
async fn reflection_lists_the_public_services() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = Server::start();
    let mut client = ServerReflectionClient::new(channel(&server).await);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .expect("reflection")
        .into_inner();
    let Some(Ok(answer)) = answers.next().await else {
        panic!("no reflection answer")
    };
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("wrong answer")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"citadel.v1.EmbeddingService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
}

#[tokio::test]
async fn models_are_listed_with_their_state() {
    let server = Server::start();
    let mut client = EmbeddingServiceClient::new(channel(&server).await);
    let models = client
        .list_models(ListModelsRequest {})
        .await
        .expect("list")
        .into_inner()
        .models;
    let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [MODEL, "all-minilm:int8"]);
    for model in &models {
        assert_eq!(model.state(), ModelState::Ready);
        assert_eq!(model.backend, "onnx");
        assert_eq!(model.dimensions, 384);
    }
    let by_alias = client
        .get_model(GetModelRequest {
            model: "all-MiniLM-L6-v2".into(),
        })
        .await
        .expect("get");
    assert_eq!(by_alias.into_inner().id, MODEL);
}

#[tokio::test]
async fn embed_stream_answers_every_request_by_id() {
    let server = Server::start();
    let mut client = EmbeddingServiceClient::new(channel(&server).await);
    let mut requests: Vec<EmbedStreamRequest> = (0..20u64)
        .map(|id| EmbedStreamRequest {
            id,
            request: Some(request(vec![
                sentence(id as usize, 10),
                sentence(id as usize + 100, 5),
            ])),
        })
        .collect();
    // One bad request in the middle must not end the stream.
    requests[7].request = Some(request(vec![]));
    let mut answers = client
        .embed_stream(tokio_stream::iter(requests))
        .await
        .expect("stream")
        .into_inner();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(answer) = answers.next().await {
        let answer = answer.expect("stream item");
        match answer.result.expect("result") {
            embed_stream_response::Result::Response(r) => assert_eq!(r.embeddings.len(), 2),
            embed_stream_response::Result::Error(e) => {
                assert_eq!(answer.id, 7);
                assert_eq!(e.code, Code::InvalidArgument as i32);
                assert_eq!(e.param, "input");
            }
        }
        assert!(seen.insert(answer.id), "each id answered once");
    }
    assert_eq!(seen.len(), 20);
}
