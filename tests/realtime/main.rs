//! The real-time edge (issue 12) over real sockets: `/ws/orchestration` with a WebSocket
//! client, the AG-UI agent with the official `@ag-ui/client` (1.0.0 and 0.0.59, the version
//! CopilotKit pins) through the stand-in vLLM, the Copilot actions over REST, and the
//! operator page in headless Chromium driven by Playwright, and WorkflowService.Watch's resume
//! point and snapshot over gRPC. The Node clients are installed
//! by `scripts/setup-js.sh` (scripts/test.sh runs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod agui;
mod page;
mod watch;
mod ws;

use std::{path::PathBuf, process::Command, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/ws/orchestration` with `headers` and `protocols`; the welcome is read and returned.
pub async fn connect(
    server: &common::Server,
    headers: &[(&str, &str)],
    protocols: &[&str],
) -> Result<(Socket, Value, Option<String>), tokio_tungstenite::tungstenite::Error> {
    let url = server.url("/ws/orchestration").replacen("http", "ws", 1);
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(value).unwrap());
    }
    if !protocols.is_empty() {
        let value = HeaderValue::from_str(&protocols.join(", ")).unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", value);
    }
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await?;
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    let welcome = next_json(&mut socket).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    Ok((socket, welcome, chosen))
}

/// The next JSON text frame (pings skipped), within 10 s.
pub async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket is open")
            .expect("a readable frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The next frame of `kind` (others skipped), within 10 s.
pub async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut skipped = Vec::new();
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} within 10 s; the last others: {:?}",
            &skipped[skipped.len().saturating_sub(3)..]
        );
        let message = next_json(socket).await;
        if message["type"] == kind {
            return message;
        }
        skipped.push(message["type"].to_string() + &message["error"].to_string());
    }
}

pub async fn send(socket: &mut Socket, message: &Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .expect("send a frame");
}

pub async fn subscribe(socket: &mut Socket, topics: &[&str]) -> Value {
    send(
        socket,
        &json!({"type": "subscribe", "id": "sub", "topics": topics}),
    )
    .await;
    let ack = next_json(socket).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["id"], "sub");
    ack
}

pub async fn submit(server: &common::Server, body: &Value, token: Option<&str>) -> Value {
    let mut request = common::http()
        .post(server.url("/api/v1/workflows"))
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// `node tests/js/SCRIPT ARGS`: passes when the script exits 0; its output on failure.
pub fn node(script: &str, args: &[&str]) {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/@ag-ui/client").is_dir()
            && js.join("node_modules/playwright-core").is_dir(),
        "the Node clients are missing: run scripts/setup-js.sh (scripts/test.sh does)"
    );
    let out = Command::new("node")
        .arg(js.join(script))
        .args(args)
        .output()
        .expect("run node (Node 20 must be installed)");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    assert!(
        out.status.success(),
        "node {script} {args:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}
