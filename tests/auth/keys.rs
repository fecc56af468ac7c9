//! API keys made with `citadel keys`: used on both doors, limited to models, listed without
//! their secret, revoked on every process within 5 s, and expiring.

use std::time::{Duration, Instant};

use citadel_proto::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use tonic::{Code, Request, transport::Channel};

use crate::{assert_refused, bearer, common, embed};

/// Auth required, API keys only (no Clerk instance configured).
pub const KEYS_ONLY: &str = "[auth]\nmode = \"required\"\n";

pub use crate::common::{create_key as create, keys};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_work_on_both_doors_within_their_models_and_revoke_everywhere() {
    let database = common::sqlite_url();
    let env = [("CITADEL_DATABASE__URL", database.as_str())];
    let one = common::Server::with_env(KEYS_ONLY, &env);
    let two = common::Server::with_env(KEYS_ONLY, &env);
    let key = create(
        &database,
        &[
            "--name",
            "search-svc",
            "--role",
            "member",
            "--models",
            "all-minilm",
        ],
    );

    for server in [&one, &two] {
        let (status, _, body) = embed(server, Some(&bearer(&key)), common::MODEL).await;
        assert_eq!(status, 200, "{body}");
    }
    // Outside its models: 403, on REST and gRPC.
    let (status, _, body) = embed(&one, Some(&bearer(&key)), "all-minilm:int8").await;
    let error = common::assert_openai_error(status, &body, 403);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("all-minilm:int8"),
        "{body}"
    );
    let channel = Channel::from_shared(one.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = EmbeddingServiceClient::new(channel);
    let mut request = Request::new(EmbedRequest {
        model: "all-minilm:int8".into(),
        inputs: vec!["x".into()],
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", bearer(&key).parse().unwrap());
    assert_eq!(
        client.embed(request).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // A near miss of the key (right id, wrong secret) is no key.
    let mut wrong = key.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let (status, headers, body) = embed(&one, Some(&bearer(&wrong)), common::MODEL).await;
    assert_refused(status, &headers, &body, 401);

    // Listed, never with the secret; a second key of the same name is refused.
    let (ok, listed, _) = keys(&database, &["list"]);
    assert!(
        ok && listed.contains("search-svc") && listed.contains("active"),
        "{listed}"
    );
    assert!(!listed.contains(&key[16..]), "the list shows the secret");
    let (ok, _, stderr) = keys(
        &database,
        &["create", "--name", "search-svc", "--role", "member"],
    );
    assert!(!ok && stderr.contains("search-svc"), "{stderr}");
    let (ok, _, stderr) = keys(&database, &["create", "--name", "x", "--role", "superuser"]);
    assert!(!ok && stderr.contains("--role superuser"), "{stderr}");

    // Revoked: every process refuses it within 5 s.
    let (ok, out, stderr) = keys(&database, &["revoke", "search-svc"]);
    assert!(ok, "{stderr}");
    assert!(out.contains("revoked"));
    let revoked = Instant::now();
    for server in [&one, &two] {
        loop {
            let (status, _, _) = embed(server, Some(&bearer(&key)), common::MODEL).await;
            if status == 401 {
                break;
            }
            assert_eq!(status, 200);
            assert!(
                revoked.elapsed() < Duration::from_secs(5),
                "still accepted after 5 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(one.logs().contains("\"reason\":\"revoked_key\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_and_roles_bind_them() {
    let database = common::sqlite_url();
    let server =
        common::Server::with_env(KEYS_ONLY, &[("CITADEL_DATABASE__URL", database.as_str())]);
    let short = create(
        &database,
        &["--name", "short", "--role", "member", "--expires-in", "2s"],
    );
    assert_eq!(
        embed(&server, Some(&bearer(&short)), common::MODEL).await.0,
        200
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, headers, body) = embed(&server, Some(&bearer(&short)), common::MODEL).await;
    assert_refused(status, &headers, &body, 401);

    let viewer = create(&database, &["--name", "dash", "--role", "viewer"]);
    let (status, _, body) = embed(&server, Some(&bearer(&viewer)), common::MODEL).await;
    common::assert_openai_error(status, &body, 403);
    let models = common::http()
        .get(server.url("/v1/models"))
        .header("authorization", bearer(&viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
}
