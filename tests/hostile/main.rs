//! Hostile clients (issue 15): one caller must never hurt another. Each test is one finding of
//! an outside probe, reproduced over real sockets against the real binary: the attack beside a
//! normal client, and what must hold instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod connections;
mod grpc_wire;
mod requests;

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// `host:port` of a server URL.
fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// A TCP connection whose receive buffer is tiny, so a client that stops reading is felt by
/// the server at once instead of after the kernel has buffered megabytes.
async fn small_window_connection(url: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr(url).parse().unwrap()).await.unwrap()
}

/// Whether the server has closed `stream`: EOF or a reset within `wait`. Reads (and drops)
/// whatever the server sent before closing.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends `request` raw and reads the answer until the server closes or `wait` passes.
async fn raw_exchange(url: &str, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr(url)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON body of a raw HTTP/1.1 answer.
fn body_json(answer: &str) -> serde_json::Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}
