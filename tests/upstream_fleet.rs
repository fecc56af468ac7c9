//! The production profile against stand-ins: every fleet model answers through the OpenAI
//! edge, the Ollama edge and gRPC; prompts, fallbacks and gRPC status codes of remote models.
//! No address of the real fleet (192.168.10.x) is ever connected to: every one is overridden
//! to loopback, and the merged configuration is checked for leftovers before serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashMap, process::Command, time::Duration};

use citadel_proto::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use citadel_standin::{
    Behaviour, StandIn, StandInConfig,
    llm::{LlmBehaviour, LlmStandIn, LlmStandInConfig},
};
use common::{upstream::*, *};
use serde_json::{Value, json};
use tonic::{Code, transport::Channel};

const FLEET: [(&str, usize); 4] = [
    ("nomic-embed-text", 768),
    ("mxbai-embed-large", 1024),
    ("bge-m3", 1024),
    ("all-minilm", 384),
];

/// Every address in config/production.toml, moved to loopback (the LLM servers to `llm`);
/// cache keys under `namespace`.
fn production_overrides(ollama: &str, llm: [&str; 2], namespace: &str) -> String {
    let mut toml = String::new();
    for (model, _) in FLEET {
        toml += &format!("[models.{model}]\nendpoints = [{{ url = \"{ollama}\" }}]\n");
    }
    toml += r#"
[[llm.servers]]
name = "llm-01"
url = "LLM_01"
[[llm.servers]]
name = "llm-02"
url = "LLM_02"
[qdrant]
url = "http://127.0.0.1:9"
[database]
url = "sqlite::memory:"
[upstream]
probe_interval_ms = 0
# This test is about routing to the fleet; the production profile's auth is tested in
# tests/auth (every door, keys, tokens, limits).
[auth]
mode = "off"
"#;
    let toml = toml.replace("LLM_01", llm[0]).replace("LLM_02", llm[1]);
    toml + &format!(
        "[cache]\nredis_url = \"redis://127.0.0.1:6379\"\nttl_secs = 60\nkey_prefix = \"{namespace}\"\n"
    )
}

/// `citadel config check` of the merged production configuration: no fleet address left.
fn assert_no_fleet_address(config: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_citadel"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["config", "check", "--config", config])
        .env("CITADEL_ENV", "production")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !stdout.contains("192.168."),
        "a fleet address survived the overrides:\n{stdout}"
    );
}

async fn grpc(server: &Server) -> EmbeddingServiceClient<Channel> {
    EmbeddingServiceClient::connect(server.grpc.clone())
        .await
        .unwrap()
}

fn grpc_request(model: &str, inputs: &[String]) -> EmbedRequest {
    EmbedRequest {
        model: model.to_string(),
        inputs: inputs.to_vec(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fleet_model_answers_on_every_edge_with_production_config() {
    let models: HashMap<String, usize> = FLEET.iter().map(|(m, d)| (m.to_string(), *d)).collect();
    let ollama = StandIn::start(StandInConfig { models }).await.unwrap();
    let path = std::env::temp_dir().join(format!("citadel-fleet-{}.toml", std::process::id()));
    // Its own Redis namespace: vectors an earlier run left must not answer for the upstream.
    let namespace = format!("citadel-fleet-test-{}", std::process::id());
    let llm = [
        LlmStandIn::start(LlmStandInConfig::default())
            .await
            .unwrap(),
        LlmStandIn::start(LlmStandInConfig::default())
            .await
            .unwrap(),
    ];
    let (llm_01, llm_02) = (llm[0].url(), llm[1].url());
    let overrides = production_overrides(&ollama.url(), [&llm_01, &llm_02], &namespace);
    std::fs::write(&path, overrides).unwrap();
    let path = path.to_str().unwrap();
    assert_no_fleet_address(path);
    let server = Server::with_env(
        &std::fs::read_to_string(path).unwrap(),
        &[("CITADEL_ENV", "production")],
    );

    let (_, listed) = get_json(&server, "/v1/models").await;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] != "llm")
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        4,
        "only the fleet's models, no in-process ones: {ids:?}"
    );
    let mut client = grpc(&server).await;
    // Different texts on each edge: each call reaches the stand-in, not the cache.
    let all = texts(9);
    let (rest, ollama_edge, grpc_edge) = (&all[..3], &all[3..6], &all[6..]);
    for (model, dims) in FLEET {
        let want = |text: &String| citadel_standin::vector(text, dims);
        let (status, body) = embed(&server, model, rest).await;
        assert_eq!(status, 200, "{model}: {body}");
        for (v, text) in float_vectors(&body).iter().zip(rest) {
            assert_close(v, &want(text));
        }

        let answer = http()
            .post(server.url("/api/embed"))
            .json(&json!({"model": model, "input": ollama_edge}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{model} on /api/embed");
        let body: Value = answer.json().await.unwrap();
        let vectors = body["embeddings"].as_array().unwrap();
        for (v, text) in vectors.iter().zip(ollama_edge) {
            let v: Vec<f32> = serde_json::from_value(v.clone()).unwrap();
            assert_close(&v, &want(text));
        }

        let answer = client.embed(grpc_request(model, grpc_edge)).await.unwrap();
        let answer = answer.into_inner();
        assert_eq!(answer.model, model);
        for (v, text) in answer.embeddings.iter().zip(grpc_edge) {
            assert_close(&v.values, &want(text));
        }
    }
    assert_eq!(
        ollama.stats().inputs,
        4 * 9,
        "every edge reached the upstream"
    );

    // Both LLM servers of the profile serve, balanced by load.
    for s in &llm {
        s.set_behaviour(LlmBehaviour {
            ttft_ms: 100,
            ..LlmBehaviour::default()
        });
    }
    let chats = (0..16).map(|_| {
        let body = json!({"model": "standin-llm", "max_tokens": 2,
                          "messages": [{"role": "user", "content": "hi"}]});
        http()
            .post(server.url("/v1/chat/completions"))
            .json(&body)
            .send()
    });
    for answer in futures_util::future::join_all(chats).await {
        assert_eq!(answer.unwrap().status(), 200);
    }
    let served = [llm[0].stats().completed, llm[1].stats().completed];
    assert!(
        served[0] > 0 && served[1] > 0,
        "both servers serve: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_names_prefix_the_text_sent_upstream() {
    let a = standin().await;
    let extra = r#"prompts = { query = "search_query: ", document = "search_document: " }"#;
    let model = model_section("nomic", "ollama", &[(&a.url(), 1)], extra);
    let server = serve(&model, 0, 3);
    let text = "what is a circuit breaker?";

    let ask = |prompt: Value| {
        let server = &server;
        async move {
            let body = json!({"model": "nomic", "input": text, "prompt_name": prompt});
            embed_raw(server, &body).await
        }
    };
    let (_, _, plain) = ask(Value::Null).await;
    assert_close(&float_vectors(&plain)[0], &expected(text));
    let (_, _, query) = ask(json!("query")).await;
    assert_close(
        &float_vectors(&query)[0],
        &expected(&format!("search_query: {text}")),
    );
    let (status, _, body) = ask(json!("passage")).await;
    let error = assert_openai_error(status, &body, 400);
    assert_eq!(error["param"], "prompt_name");

    let (_, listed) = get_json(&server, "/v1/models/nomic").await;
    assert_eq!(listed["prompts"], json!(["document", "query"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_with_no_live_endpoint_is_served_by_its_fallback() {
    let spare = standin().await;
    let dead = dead_url();
    let models = format!(
        "{}{}",
        model_section("primary", "ollama", &[(&dead, 1)], "fallback = \"spare\""),
        model_section("spare", "openai", &[(&spare.url(), 1)], ""),
    );
    let server = serve(&models, 0, 2);

    let inputs = texts(2);
    let (status, body) = embed(&server, "primary", &inputs).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["model"], "spare",
        "the answer names the model that served it"
    );
    assert_close(&float_vectors(&body)[1], &expected(&inputs[1]));
    let health = model_health(&server, "primary").await;
    assert_eq!(health["fallback"], "spare");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_failures_keep_their_grpc_status_codes() {
    let a = standin().await;
    let extra = "max_queued_inputs = 2";
    let model = model_section("solo", "openai", &[(&a.url(), 1)], extra);
    let server = serve(&model, 0, 3);
    let mut client = grpc(&server).await;

    a.set_behaviour(Behaviour {
        latency_ms: 2000,
        ..Behaviour::default()
    });
    let mut deadline = tonic::Request::new(grpc_request("solo", &texts(1)));
    deadline.set_timeout(Duration::from_millis(300));
    let status = client.embed(deadline).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    let mut busy_client = client.clone();
    let busy =
        tokio::spawn(async move { busy_client.embed(grpc_request("solo", &texts(2))).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = client
        .embed(grpc_request("solo", &texts(1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.metadata().contains_key("retry-after"));
    assert!(busy.await.unwrap().is_ok());

    a.set_behaviour(Behaviour {
        wrong_dimensions: true,
        ..Behaviour::default()
    });
    let status = client
        .embed(grpc_request("solo", &texts(1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(
        status.metadata().get("x-citadel-upstream").unwrap(),
        a.url().as_str()
    );

    a.set_behaviour(Behaviour {
        fail_always: Some(503),
        ..Behaviour::default()
    });
    let status = client
        .embed(grpc_request("solo", &texts(1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}
