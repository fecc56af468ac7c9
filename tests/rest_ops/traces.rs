//! Traces over real sockets: a stand-in OTLP collector receives the spans of one embedding
//! request (in process, with Redis; and through an Ollama stand-in), one LLM request and one
//! workflow (its submit, then its run in the worker), each a single trace under the caller's
//! `traceparent`, every hop the child of the one before; the upstream servers (Ollama, vLLM,
//! Qdrant) receive the trace too, and the log lines name it.

use std::time::{Duration, Instant};

use citadel_proto::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use citadel_standin::{
    CollectedSpan, OtlpStandIn, QdrantStandIn,
    llm::{LlmStandIn, LlmStandInConfig},
};
use serde_json::{Value, json};

use super::common::{self, Server, upstream};

/// A W3C `traceparent` for a caller's span: (header, trace id, span id).
fn traceparent(n: u8) -> (String, String, String) {
    let trace = format!(
        "{:032x}",
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4700_u128 + u128::from(n)
    );
    let span = format!("{:016x}", 0x00f0_67aa_0ba9_0200_u64 + u64::from(n));
    (format!("00-{trace}-{span}-01"), trace, span)
}

async fn post(server: &Server, path: &str, body: Value, traceparent: &str) -> (u16, Value) {
    let response = common::http()
        .post(server.url(path))
        .header("traceparent", traceparent)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until the collector holds a span of every one of `names` in `trace`.
async fn spans_of(collector: &OtlpStandIn, trace: &str, names: &[&str]) -> Vec<CollectedSpan> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans: Vec<CollectedSpan> = collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace)
            .collect();
        if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace}: wanted {names:?}, got {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn span<'a>(spans: &'a [CollectedSpan], name: &str) -> &'a CollectedSpan {
    let found: Vec<&CollectedSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
    found[0]
}

/// `names[0]` is the child of `parent`, and each next one the child of the one before.
fn assert_chain(spans: &[CollectedSpan], parent: &str, names: &[&str]) {
    let mut parent = parent.to_string();
    for name in names {
        let s = span(spans, name);
        assert_eq!(s.parent_span_id, parent, "{name}'s parent: {spans:#?}");
        assert_eq!(s.service, "citadel-under-test");
        parent = s.span_id.clone();
    }
}

/// The span id in a `traceparent` header.
fn parent_id(header: &str) -> &str {
    header.split('-').nth(2).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_across_every_hop() {
    let collector = OtlpStandIn::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let ollama = upstream::standin().await;
    let llm = LlmStandIn::start(LlmStandInConfig::default())
        .await
        .unwrap();
    let prefix = format!("citadel-trace-test-{}", std::process::id());
    let mut toml = format!(
        "[telemetry]\notlp_endpoint = \"{}\"\nexport_delay_ms = 100\nservice_name = \"citadel-under-test\"\n\
         [cache]\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{prefix}\"\n\
         [[llm.servers]]\nname = \"llm\"\nurl = \"{}\"\n",
        collector.url(),
        llm.url()
    );
    toml += &upstream::model_section("remote", "ollama", &[(&ollama.url(), 1)], "");
    let server = Server::with_config(&toml);

    // In process, through the cache's Redis round trips.
    let (header, trace, caller) = traceparent(1);
    let text = format!("a sentence no cache holds {}", std::process::id());
    let body = json!({"model": "all-minilm", "input": [text]});
    let (status, answer) = post(&server, "/v1/embeddings", body, &header).await;
    assert_eq!(status, 200, "{answer}");
    let names = [
        "http",
        "grpc",
        "embed",
        "model.run",
        "cache.l2.mget",
        "cache.l2.set",
    ];
    let spans = spans_of(&collector, &trace, &names).await;
    assert_chain(&spans, &caller, &["http", "grpc", "embed", "model.run"]);
    let embed = span(&spans, "embed").span_id.clone();
    assert_eq!(span(&spans, "cache.l2.mget").parent_span_id, embed);
    assert_eq!(span(&spans, "cache.l2.set").parent_span_id, embed);
    assert!(
        server.logs().contains(&format!("\"trace_id\":\"{trace}\"")),
        "the log lines name the trace"
    );

    // Through an upstream embedding server, which gets the trace as well.
    let (header, trace, caller) = traceparent(2);
    let body = json!({"model": "remote", "input": ["to the stand-in"]});
    let (status, answer) = post(&server, "/v1/embeddings", body, &header).await;
    assert_eq!(status, 200, "{answer}");
    // The router's attempt is the remote model's run: no `model.run` span around it.
    let chain = ["http", "grpc", "embed", "upstream.attempt"];
    let spans = spans_of(&collector, &trace, &chain).await;
    assert_chain(&spans, &caller, &chain);
    let sent = ollama
        .stats()
        .last_traceparent
        .expect("a traceparent upstream");
    assert!(sent.contains(&trace), "{sent}");
    assert_eq!(parent_id(&sent), span(&spans, "upstream.attempt").span_id);

    // A chat completion to the vLLM stand-in.
    let (header, trace, caller) = traceparent(3);
    let body = json!({"model": "standin-llm", "max_tokens": 2,
        "messages": [{"role": "user", "content": "hello"}]});
    let (status, answer) = post(&server, "/v1/chat/completions", body, &header).await;
    assert_eq!(status, 200, "{answer}");
    let chain = ["http", "grpc", "llm", "upstream.attempt"];
    let spans = spans_of(&collector, &trace, &chain).await;
    assert_chain(&spans, &caller, &chain);
    let sent = llm.stats().last_traceparent.expect("a traceparent to vLLM");
    assert_eq!(parent_id(&sent), span(&spans, "upstream.attempt").span_id);

    // A workflow, down to its database write, then its run in the worker, down to the
    // embedding call the run makes.
    let (header, trace, caller) = traceparent(4);
    let texts = [format!("a workflow's sentence {}", std::process::id())];
    let (status, answer) = post(
        &server,
        "/api/v1/workflows",
        json!({"kind": "embed_batch", "params": {"model": "all-minilm", "texts": texts}}),
        &header,
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let submit = ["http", "grpc", "db.insert"];
    let run = ["workflow.run", "grpc", "embed", "model.run"];
    let spans = spans_of(&collector, &trace, &[&submit[..], &run[..]].concat()).await;
    let http = spans
        .iter()
        .find(|s| s.name == "http")
        .expect("the submit's http span");
    assert_eq!(http.parent_span_id, caller);
    let hop = spans
        .iter()
        .find(|s| s.name == "grpc" && s.parent_span_id == http.span_id)
        .expect("the submit's grpc hop");
    let insert = span(&spans, "db.insert");
    assert_eq!(insert.parent_span_id, hop.span_id);
    // The run is a child of the submit's hop; its own embedding call, of the run.
    let worker = span(&spans, "workflow.run");
    assert_eq!(worker.parent_span_id, hop.span_id, "{spans:#?}");
    let call = spans
        .iter()
        .find(|s| s.name == "grpc" && s.parent_span_id == worker.span_id)
        .expect("the run's Embed call, under the run");
    let embed = span(&spans, "embed");
    assert_eq!(embed.parent_span_id, call.span_id);
    assert_eq!(span(&spans, "model.run").parent_span_id, embed.span_id);

    // A gRPC caller's trace is taken too.
    let (header, trace, caller) = traceparent(5);
    let mut client = EmbeddingServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let mut request = tonic::Request::new(EmbedRequest {
        model: "all-minilm".into(),
        inputs: vec!["over gRPC".into()],
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("traceparent", header.parse().unwrap());
    client.embed(request).await.unwrap();
    let spans = spans_of(&collector, &trace, &["grpc", "embed"]).await;
    assert_chain(&spans, &caller, &["grpc", "embed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_collector_no_trace_is_made_and_logs_carry_none() {
    let server = Server::start();
    let (header, trace, _) = traceparent(9);
    let body = json!({"model": "all-minilm", "input": ["untraced"]});
    let (status, _) = post(&server, "/v1/embeddings", body, &header).await;
    assert_eq!(status, 200);
    let logs = server.logs();
    assert!(!logs.contains("trace_id"), "no trace ids with traces off");
    assert!(!logs.contains(&trace));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_calls_are_spans_and_carry_the_trace() {
    let collector = OtlpStandIn::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let qdrant = QdrantStandIn::start(common::scratch_dir("qdrant-traced"))
        .await
        .unwrap();
    let toml = format!(
        "[telemetry]\notlp_endpoint = \"{}\"\nexport_delay_ms = 100\nservice_name = \"citadel-under-test\"\n\
         [vectors]\nstore = \"qdrant\"\n[qdrant]\nurl = \"{}\"\n",
        collector.url(),
        qdrant.url()
    );
    let server = Server::with_config(&toml);
    let (header, trace, caller) = traceparent(9);
    let body = json!({"name": "traced", "model": "all-minilm"});
    let (status, created) = post(&server, "/api/v1/collections", body, &header).await;
    assert_eq!(status, 201, "{created}");
    // The stand-in got the trace, its parent one of this trace's qdrant spans.
    let sent = qdrant
        .control
        .last_traceparent()
        .expect("Qdrant got a traceparent");
    assert_eq!(sent.split('-').nth(1), Some(trace.as_str()), "{sent}");
    let spans = spans_of(&collector, &trace, &["http", "grpc", "qdrant"]).await;
    assert_chain(&spans, &caller, &["http", "grpc"]);
    let grpc = span(&spans, "grpc").span_id.clone();
    let calls: Vec<&CollectedSpan> = spans.iter().filter(|s| s.name == "qdrant").collect();
    assert!(calls.iter().all(|s| s.parent_span_id == grpc), "{spans:#?}");
    assert!(
        calls.iter().any(|s| s.span_id == parent_id(&sent)),
        "{sent} names no qdrant span: {spans:#?}"
    );
}
