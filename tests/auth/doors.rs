//! Every door closed without credentials, opened by role; workflows are their owner's.

use citadel_proto::v1::{
    GetWorkflowRequest, ListWorkflowsRequest, SubmitWorkflowRequest,
    workflow_service_client::WorkflowServiceClient,
};
use serde_json::{Value, json};
use tonic::{Code, Request, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{JwksStandIn, RsaKey, assert_refused, auth_config, bearer, claims, common};

/// Every route but the probes, with a body where it takes one.
fn routes() -> Vec<(&'static str, &'static str, Option<Value>)> {
    let embed = json!({"model": common::MODEL, "input": "x"});
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    vec![
        ("POST", "/v1/embeddings", Some(embed.clone())),
        ("POST", "/v1/chat/completions", Some(chat)),
        (
            "POST",
            "/v1/completions",
            Some(json!({"model": "m", "prompt": "hi"})),
        ),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/all-minilm", None),
        (
            "POST",
            "/api/embed",
            Some(json!({"model": common::MODEL, "input": "x"})),
        ),
        (
            "POST",
            "/api/embeddings",
            Some(json!({"model": common::MODEL, "prompt": "x"})),
        ),
        ("GET", "/api/tags", None),
        ("POST", "/api/v1/workflows", Some(json!({"kind": "noop"}))),
        ("GET", "/api/v1/workflows", None),
        (
            "GET",
            "/api/v1/workflows/00000000-0000-4000-8000-000000000000",
            None,
        ),
        (
            "POST",
            "/api/v1/workflows/00000000-0000-4000-8000-000000000000/cancel",
            None,
        ),
        (
            "POST",
            "/api/v1/workflows/00000000-0000-4000-8000-000000000000/retry",
            None,
        ),
        ("GET", "/health/detailed", None),
    ]
}

async fn call(
    server: &common::Server,
    method: &str,
    path: &str,
    body: Option<&Value>,
    auth: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let url = server.url(path);
    let mut request = match method {
        "POST" => common::http().post(url),
        _ => common::http().get(url),
    };
    if let Some(body) = body {
        request = request.json(body);
    }
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn channel(server: &common::Server) -> Channel {
    Channel::from_shared(server.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer(token).parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_credentials_and_roles_decide_the_rest() {
    let key = RsaKey::generate("kid-doors");
    let jwks = JwksStandIn::start(&[&key]).await;
    let server = common::Server::with_config(&auth_config(&jwks.url, ""));

    for (method, path, body) in routes() {
        let (status, headers, body) = call(&server, method, path, body.as_ref(), None).await;
        if path.starts_with("/api/embed") || path == "/api/tags" {
            // Ollama's surface answers in Ollama's error shape.
            assert_eq!(status, 401, "{path}: {body}");
            assert!(
                body["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("credentials")),
                "{body}"
            );
            assert!(headers.contains_key("www-authenticate"));
        } else {
            assert_refused(status, &headers, &body, 401);
        }
    }
    // Probes stay open.
    assert_eq!(call(&server, "GET", "/health/", None, None).await.0, 200);
    assert_eq!(call(&server, "GET", "/metrics", None, None).await.0, 200);
    let mut health = HealthClient::new(channel(&server).await);
    let check = HealthCheckRequest {
        service: String::new(),
    };
    health
        .check(Request::new(check))
        .await
        .expect("gRPC health stays open");

    // A viewer reads but does not work.
    let viewer = key.sign(&claims("user_viewer", Some("viewer")));
    let viewer_auth = bearer(&viewer);
    assert_eq!(
        call(&server, "GET", "/v1/models", None, Some(&viewer_auth))
            .await
            .0,
        200
    );
    assert_eq!(
        call(&server, "GET", "/health/detailed", None, Some(&viewer_auth))
            .await
            .0,
        200
    );
    assert_eq!(
        call(
            &server,
            "GET",
            "/api/v1/workflows",
            None,
            Some(&viewer_auth)
        )
        .await
        .0,
        200
    );
    for (method, path, body) in [routes()[0].clone(), routes()[8].clone()] {
        let (status, headers, body) =
            call(&server, method, path, body.as_ref(), Some(&viewer_auth)).await;
        let error = common::assert_openai_error(status, &body, 403);
        assert_eq!(error["code"], "permission_denied", "{path}: {body}");
        let _ = headers;
    }
    let mut workflows = WorkflowServiceClient::new(channel(&server).await);
    let submit = SubmitWorkflowRequest {
        kind: "noop".into(),
        ..Default::default()
    };
    let denied = workflows
        .submit(authed(submit.clone(), &viewer))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Members own what they submit.
    let alice = key.sign(&claims("user_alice", None));
    let bob = key.sign(&claims("user_bob", Some("member")));
    // Clerk's v1 claim, `org:` prefix and all.
    let mut admin_claims = claims("user_admin", None);
    admin_claims["org_role"] = json!("org:admin");
    let admin = key.sign(&admin_claims);

    let (status, _, created) = call(
        &server,
        "POST",
        "/api/v1/workflows",
        Some(&json!({"kind": "noop"})),
        Some(&bearer(&alice)),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/workflows/{id}");
    assert_eq!(
        call(&server, "GET", &path, None, Some(&bearer(&alice)))
            .await
            .0,
        200
    );
    let (status, _, body) = call(&server, "GET", &path, None, Some(&bearer(&bob))).await;
    let error = common::assert_openai_error(status, &body, 404);
    assert_eq!(error["code"], "workflow_not_found");
    let cancel = format!("{path}/cancel");
    assert_eq!(
        call(&server, "POST", &cancel, None, Some(&bearer(&bob)))
            .await
            .0,
        404
    );
    let (_, _, listed) = call(
        &server,
        "GET",
        "/api/v1/workflows",
        None,
        Some(&bearer(&bob)),
    )
    .await;
    assert!(
        !listed.to_string().contains(&id),
        "bob lists alice's workflow: {listed}"
    );
    let (_, _, listed) = call(
        &server,
        "GET",
        "/api/v1/workflows",
        None,
        Some(&bearer(&alice)),
    )
    .await;
    assert!(listed.to_string().contains(&id));
    // The same idempotency key from two principals names two workflows.
    let keyed = json!({"kind": "noop", "idempotency_key": "nightly"});
    let (_, _, a) = call(
        &server,
        "POST",
        "/api/v1/workflows",
        Some(&keyed),
        Some(&bearer(&alice)),
    )
    .await;
    let (_, _, b) = call(
        &server,
        "POST",
        "/api/v1/workflows",
        Some(&keyed),
        Some(&bearer(&bob)),
    )
    .await;
    assert_ne!(a["id"], b["id"]);
    assert_eq!(b["idempotency_key"], "nightly");

    // gRPC: the same rules.
    let get = GetWorkflowRequest { id: id.clone() };
    let hidden = workflows.get(authed(get.clone(), &bob)).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    workflows
        .get(authed(get.clone(), &alice))
        .await
        .expect("owner gets it");
    // The admin sees everyone's.
    workflows
        .get(authed(get, &admin))
        .await
        .expect("admin gets it");
    let all = workflows
        .list(authed(
            ListWorkflowsRequest {
                page_size: 100,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(all.workflows.iter().any(|w| w.id == id));
    assert!(
        all.workflows
            .iter()
            .any(|w| w.id == b["id"].as_str().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_needs_credentials() {
    use citadel_proto::v1::{
        self, completion_service_client::CompletionServiceClient,
        embedding_service_client::EmbeddingServiceClient,
    };
    let server = common::Server::with_config(crate::keys::KEYS_ONLY);
    let ch = channel(&server).await;
    let mut embeddings = EmbeddingServiceClient::new(ch.clone());
    let mut completions = CompletionServiceClient::new(ch.clone());
    let mut workflows = WorkflowServiceClient::new(ch.clone());
    let id = "00000000-0000-4000-8000-000000000000".to_string();
    let chat = v1::ChatRequest {
        model: "m".into(),
        ..Default::default()
    };
    let complete = v1::CompleteRequest {
        model: "m".into(),
        ..Default::default()
    };
    let codes = vec![
        (
            "Embed",
            embeddings.embed(v1::EmbedRequest::default()).await.err(),
        ),
        (
            "EmbedStream",
            embeddings
                .embed_stream(futures_util::stream::iter(vec![
                    v1::EmbedStreamRequest::default(),
                ]))
                .await
                .err(),
        ),
        (
            "ListModels",
            embeddings.list_models(v1::ListModelsRequest {}).await.err(),
        ),
        (
            "GetModel",
            embeddings
                .get_model(v1::GetModelRequest {
                    model: "all-minilm".into(),
                })
                .await
                .err(),
        ),
        (
            "GetCacheStatus",
            embeddings
                .get_cache_status(v1::GetCacheStatusRequest {})
                .await
                .err(),
        ),
        (
            "FlushCache",
            embeddings
                .flush_cache(v1::FlushCacheRequest {
                    model: "all-minilm".into(),
                })
                .await
                .err(),
        ),
        ("Chat", completions.chat(chat.clone()).await.err()),
        ("ChatStream", completions.chat_stream(chat).await.err()),
        (
            "Complete",
            completions.complete(complete.clone()).await.err(),
        ),
        (
            "CompleteStream",
            completions.complete_stream(complete).await.err(),
        ),
        (
            "Completion ListModels",
            completions
                .list_models(v1::ListLlmModelsRequest {})
                .await
                .err(),
        ),
        (
            "Submit",
            workflows
                .submit(SubmitWorkflowRequest {
                    kind: "noop".into(),
                    ..Default::default()
                })
                .await
                .err(),
        ),
        (
            "Get",
            workflows
                .get(GetWorkflowRequest { id: id.clone() })
                .await
                .err(),
        ),
        (
            "List",
            workflows.list(ListWorkflowsRequest::default()).await.err(),
        ),
        (
            "Cancel",
            workflows
                .cancel(v1::CancelWorkflowRequest { id: id.clone() })
                .await
                .err(),
        ),
        (
            "Retry",
            workflows.retry(v1::RetryWorkflowRequest { id }).await.err(),
        ),
        (
            "Watch",
            workflows
                .watch(v1::WatchWorkflowsRequest::default())
                .await
                .err(),
        ),
    ];
    for (rpc, status) in codes {
        let status = status.unwrap_or_else(|| panic!("{rpc} answered without credentials"));
        assert_eq!(status.code(), Code::Unauthenticated, "{rpc}: {status:?}");
    }
    // Reflection stays open by default.
    let mut health = HealthClient::new(ch);
    health
        .check(Request::new(HealthCheckRequest {
            service: String::new(),
        }))
        .await
        .expect("health is open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_cache_managers_flush_the_cache() {
    use citadel_proto::v1::{self, embedding_service_client::EmbeddingServiceClient};
    let database = common::sqlite_url();
    let member = crate::keys::create(&database, &["--name", "m", "--role", "member"]);
    let admin = crate::keys::create(&database, &["--name", "a", "--role", "admin"]);
    let server = common::Server::with_env(
        crate::keys::KEYS_ONLY,
        &[("CITADEL_DATABASE__URL", database.as_str())],
    );
    let mut embeddings = EmbeddingServiceClient::new(channel(&server).await);
    let flush = || v1::FlushCacheRequest {
        model: common::MODEL.into(),
    };
    let denied = embeddings
        .flush_cache(authed(flush(), &member))
        .await
        .expect_err("a member flushed the cache");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("cache:manage"), "{denied:?}");
    let mut stream = embeddings
        .flush_cache(authed(flush(), &admin))
        .await
        .expect("an admin flushes")
        .into_inner();
    let mut last = None;
    while let Some(progress) = stream.message().await.expect("progress") {
        last = Some(progress);
    }
    let last = last.expect("a last message");
    assert!(last.done && last.model == common::MODEL, "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_present_their_key_to_the_mesh() {
    let database = common::sqlite_url();
    let key = crate::keys::create(&database, &["--name", "workers", "--role", "member"]);
    let env = [
        ("CITADEL_DATABASE__URL", database.as_str()),
        ("CITADEL_WORKFLOWS__API_KEY", key.as_str()),
    ];
    let server = common::Server::with_env(crate::keys::KEYS_ONLY, &env);
    let auth = bearer(&key);
    let body =
        json!({"kind": "embed_batch", "params": {"model": common::MODEL, "texts": ["one", "two"]}});
    let (status, _, created) = call(
        &server,
        "POST",
        "/api/v1/workflows",
        Some(&body),
        Some(&auth),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/api/v1/workflows/{}", created["id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, _, w) = call(&server, "GET", &path, None, Some(&auth)).await;
        match w["state"].as_str().unwrap() {
            "SUCCESS" => break,
            "FAILURE" => panic!("the worker's calls were refused: {w}"),
            _ => {}
        }
        assert!(std::time::Instant::now() < deadline, "not done: {w}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
