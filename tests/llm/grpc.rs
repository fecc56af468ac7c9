//! `citadel.v1.CompletionService` on the gRPC port: the same answers and codes as REST, and a
//! cancelled stream cancels the upstream request.

use std::time::Duration;

use citadel_proto::v1::{
    ChatMessage, ChatRequest, CompleteRequest, ListLlmModelsRequest, Sampling,
    completion_service_client::CompletionServiceClient,
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::*;

fn request(model: &str, text: &str, tokens: u32) -> ChatRequest {
    ChatRequest {
        model: model.to_string(),
        messages: vec![ChatMessage {
            role: "user".into(),
            content: Some(text.into()),
            ..ChatMessage::default()
        }],
        sampling: Some(Sampling {
            max_tokens: Some(tokens),
            ..Sampling::default()
        }),
        ..ChatRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_service_answers_streams_and_maps_errors() {
    let vllm = standin(&[(MODEL, 64)]).await;
    let server = serve(&[&vllm], "");
    let mut client = CompletionServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();

    let answer = client
        .chat(request(MODEL, "hi", 2))
        .await
        .unwrap()
        .into_inner();
    let message = answer.choices[0].message.clone().unwrap();
    assert_eq!(message.content.as_deref(), Some("tok0 tok1 "));
    assert_eq!(answer.server, "llm-0");
    assert_eq!(answer.usage.unwrap().completion_tokens, 2);

    let mut stream = client
        .chat_stream(request(MODEL, "hi", 3))
        .await
        .unwrap()
        .into_inner();
    let mut text = String::new();
    let mut usage = None;
    while let Some(chunk) = stream.message().await.unwrap() {
        for choice in &chunk.choices {
            text.push_str(
                choice
                    .delta
                    .as_ref()
                    .and_then(|d| d.content.as_deref())
                    .unwrap_or(""),
            );
        }
        usage = chunk.usage.or(usage);
    }
    assert_eq!(text, "tok0 tok1 tok2 ");
    assert_eq!(
        usage.unwrap().completion_tokens,
        3,
        "the last chunk carries the usage"
    );

    let text = CompleteRequest {
        model: MODEL.into(),
        prompt: vec!["a".into(), "b".into()],
        ..CompleteRequest::default()
    };
    let answer = client.complete(text).await.unwrap().into_inner();
    assert_eq!(answer.choices.len(), 2);

    let channel = tonic::transport::Channel::from_shared(server.grpc.clone()).unwrap();
    let mut health = HealthClient::new(channel.connect().await.unwrap());
    for service in [
        "citadel.v1.CompletionService",
        "citadel.v1.CompletionService/standin-llm",
    ] {
        let check = HealthCheckRequest {
            service: service.into(),
        };
        let status = health.check(check).await.unwrap().into_inner().status();
        assert_eq!(status, ServingStatus::Serving, "{service}");
    }

    let status = client.chat(request("missing", "hi", 1)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = client
        .chat(request(MODEL, &"w ".repeat(100), 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.metadata().get("x-citadel-error-code").unwrap(),
        "context_length_exceeded"
    );
    assert_eq!(
        status.metadata().get("x-citadel-error-param").unwrap(),
        "messages"
    );
    let empty = ChatRequest {
        model: MODEL.into(),
        ..ChatRequest::default()
    };
    assert_eq!(
        client.chat(empty).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    vllm.set_behaviour(behaviour(|b| b.fail_always = Some(503)));
    let status = client.chat(request(MODEL, "hi", 1)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    vllm.set_behaviour(LlmBehaviour::default());
    // The 503s opened the server's breaker: let its open period pass.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let models = client
        .list_models(ListLlmModelsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(models.models[0].id, MODEL);
    assert_eq!(models.models[0].max_model_len, 64);

    // A caller that cancels its stream cancels the upstream request.
    vllm.set_behaviour(behaviour(|b| b.itl_ms = 20));
    let mut stream = client
        .chat_stream(request(MODEL, "hi", 50))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap();
    drop(stream);
    let seen = eventually(Duration::from_secs(2), || vllm.stats().aborted == 1).await;
    assert!(
        seen.is_some_and(|t| t < Duration::from_millis(100)),
        "{seen:?} {:?}",
        vllm.stats()
    );
}
