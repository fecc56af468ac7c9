//! Finding 7: the gRPC port's codes for malformed calls, and its stream cap.

use bytes::Bytes;
use citadel_proto::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use prost::Message;
use tonic::Code;

use crate::{addr, common::*};

/// The outcome of one raw gRPC call: HTTP status, then `grpc-status` and `grpc-message` from
/// the headers (trailers-only answers) or the trailers.
struct Outcome {
    http: u16,
    code: Option<i32>,
    message: String,
}

/// One length-prefixed gRPC message.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn embed_message() -> Vec<u8> {
    EmbedRequest {
        model: MODEL.into(),
        inputs: vec!["hello".into()],
        ..Default::default()
    }
    .encode_to_vec()
}

async fn call(server: &Server, headers: &[(&str, &str)], body: Vec<u8>) -> Outcome {
    let tcp = tokio::net::TcpStream::connect(addr(&server.grpc))
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut request =
        http::Request::post(format!("{}/citadel.v1.EmbeddingService/Embed", server.grpc))
            .header("te", "trailers");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut client = client.ready().await.unwrap();
    let (response, mut send) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    send.send_data(Bytes::from(body), true).unwrap();
    let response = response.await.unwrap();
    let http = response.status().as_u16();
    let read = |map: &http::HeaderMap| {
        let code = map
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let message = map
            .get("grpc-message")
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        (code, message)
    };
    let (mut code, mut message) = read(response.headers());
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if code.is_none()
        && let Ok(Some(trailers)) = body.trailers().await
    {
        (code, message) = read(&trailers);
    }
    Outcome {
        http,
        code,
        message,
    }
}

const GRPC: (&str, &str) = ("content-type", "application/grpc");

#[tokio::test]
async fn malformed_calls_get_the_codes_the_spec_names() {
    let server = Server::start();

    let ok = call(&server, &[GRPC], frame(&embed_message())).await;
    assert_eq!(ok.code, Some(Code::Ok as i32), "{}", ok.message);

    let garbage = call(&server, &[GRPC], frame(&[0xff; 16])).await;
    assert_eq!(
        garbage.code,
        Some(Code::InvalidArgument as i32),
        "{}",
        garbage.message
    );

    let twice = [frame(&embed_message()), frame(&embed_message())].concat();
    let two = call(&server, &[GRPC], twice).await;
    assert_eq!(
        two.code,
        Some(Code::InvalidArgument as i32),
        "{}",
        two.message
    );

    let none = call(&server, &[GRPC], Vec::new()).await;
    assert_eq!(
        none.code,
        Some(Code::InvalidArgument as i32),
        "{}",
        none.message
    );

    let mut cut = frame(&embed_message());
    cut.truncate(cut.len() - 3);
    let short = call(&server, &[GRPC], cut).await;
    assert_eq!(
        short.code,
        Some(Code::InvalidArgument as i32),
        "{}",
        short.message
    );

    let json = call(
        &server,
        &[("content-type", "application/json")],
        frame(&embed_message()),
    )
    .await;
    assert_eq!(json.http, 415);

    let expired = call(
        &server,
        &[GRPC, ("grpc-timeout", "1n")],
        frame(&embed_message()),
    )
    .await;
    assert_eq!(
        expired.code,
        Some(Code::DeadlineExceeded as i32),
        "{}",
        expired.message
    );
}

#[tokio::test]
async fn long_values_keep_their_code_and_the_stream_cap_is_set() {
    let server = Server::with_config(
        "[grpc]\nrequest_body_timeout_ms = 500\n[grpc.connections]\nmax_concurrent_streams = 77\n",
    );
    let channel = tonic::transport::Endpoint::from_shared(server.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = EmbeddingServiceClient::new(channel);
    let long = EmbedRequest {
        model: "m".repeat(20_000),
        inputs: vec!["x".into()],
        ..Default::default()
    };
    let status = client.embed(long).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().len() < 1100, "{}", status.message().len());
    // The client still works afterwards: the connection survived.
    let fine = EmbedRequest {
        model: MODEL.into(),
        inputs: vec!["x".into()],
        ..Default::default()
    };
    client.embed(fine).await.unwrap();

    let tcp = tokio::net::TcpStream::connect(addr(&server.grpc))
        .await
        .unwrap();
    let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let health = http::Request::post(format!("{}/grpc.health.v1.Health/Check", server.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut client = client.ready().await.unwrap();
    let (response, mut send) = client.send_request(health, false).unwrap();
    send.send_data(Bytes::from(frame(&[])), true).unwrap();
    // Driving the connection until the answer has come applies the server's SETTINGS.
    let answered = async {
        let response = response.await.unwrap();
        let mut body = response.into_body();
        while body.data().await.is_some() {}
    };
    tokio::select! {
        () = answered => {}
        _ = &mut connection => panic!("connection ended"),
    }
    assert_eq!(connection.max_concurrent_send_streams(), 77);
    tokio::spawn(connection);

    // A unary call whose body never ends does not hold its stream (or connection) forever.
    let unfinished =
        http::Request::post(format!("{}/citadel.v1.EmbeddingService/Embed", server.grpc))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
    let mut client = client.ready().await.unwrap();
    let (response, mut send) = client.send_request(unfinished, false).unwrap();
    let mut partial = frame(&embed_message());
    partial.truncate(4);
    send.send_data(Bytes::from(partial), false).unwrap();
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(std::time::Duration::from_secs(5), response)
        .await
        .expect("an answer before the client sends the rest")
        .unwrap();
    let code = match response.headers().get("grpc-status") {
        Some(code) => code.to_str().unwrap().to_string(),
        None => {
            let mut body = response.into_body();
            while body.data().await.is_some() {}
            let trailers = body.trailers().await.unwrap().unwrap();
            trailers["grpc-status"].to_str().unwrap().to_string()
        }
    };
    assert_eq!(code, (Code::DeadlineExceeded as i32).to_string());
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
    drop(send);
}
