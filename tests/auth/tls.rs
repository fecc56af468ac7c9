//! TLS to PostgreSQL: the fleet's database with `sslmode=require` works, on a server that
//! refuses plain connections.

use serde_json::json;

use crate::common::{self, pg::PrivateCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflow_store_speaks_tls_to_postgresql() {
    let cluster = match PrivateCluster::start_tls_only() {
        Ok(cluster) => cluster,
        Err(e) => panic!("a private PostgreSQL with TLS could not start: {e}"),
    };
    let database = cluster.database();
    // Plain TCP is refused by this server: only TLS can get in.
    let tls_url = format!("{}?sslmode=require", database.url);
    let server = common::Server::with_env("", &[("CITADEL_DATABASE__URL", tls_url.as_str())]);
    let created = common::http()
        .post(server.url("/api/v1/workflows"))
        .json(&json!({"kind": "noop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, w) = common::get_json(&server, &format!("/api/v1/workflows/{id}")).await;
        if w["state"] == "SUCCESS" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{w}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The same server without TLS: refused, so the connection above was TLS.
    let plain = format!("{}?sslmode=disable", database.url);
    let (ok, _, stderr) = crate::keys::keys(&plain, &["list"]);
    assert!(!ok, "a plain connection was accepted");
    assert!(stderr.contains("database"), "{stderr}");
}

/// A self-signed certificate for 127.0.0.1: (cert path, key path, cert PEM).
fn certificate() -> (String, String, String) {
    let dir = std::env::temp_dir().join(format!("citadel-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = common::self_signed_certificate(&dir);
    let pem = std::fs::read_to_string(&cert).unwrap();
    (cert.display().to_string(), key.display().to_string(), pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_listeners_serve_tls() {
    let (cert, key, pem) = certificate();
    let config = format!(
        "[http]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n[grpc]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n"
    );
    let server = common::Server::with_config(&config);
    let https = server.http.replace("http://", "https://");
    let grpcs = server.grpc.replace("http://", "https://");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let answer = client
        .post(format!("{https}/v1/embeddings"))
        .json(&json!({"model": common::MODEL, "input": "over TLS"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.version(), reqwest::Version::HTTP_2, "ALPN offers h2");
    // Plain HTTP on the TLS port gets nowhere.
    assert!(
        common::http()
            .get(server.url("/health/"))
            .send()
            .await
            .is_err()
    );

    // gRPC over TLS: grpc.health.v1.Health/Check with an empty request, framed by hand.
    let grpc = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let answer = grpc
        .post(format!("{grpcs}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/grpc");
    // One message: status = SERVING (field 1, varint 1).
    assert_eq!(
        answer.bytes().await.unwrap().as_ref(),
        &[0u8, 0, 0, 0, 2, 8, 1]
    );
}
