//! Clerk session tokens: the classic JWT attacks fail, on REST and on gRPC, with one generic
//! answer; the JWKS is fetched sparingly, rotation works, an outage keeps cached keys.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use citadel_proto::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tonic::{Code, Request, transport::Channel};

use crate::{
    ISSUER, JwksStandIn, ORIGIN, RsaKey, assert_refused, auth_config, bearer, claims, common,
    embed, now,
};

fn b64(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Tokens that must all be refused, by name.
fn forged(key: &RsaKey) -> Vec<(&'static str, String)> {
    let good = claims("user_good", None);
    let with = |patch: serde_json::Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        key.sign(&c)
    };
    let valid = key.sign(&good);
    let (head, rest) = valid.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    // A flipped bit in the signature.
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    sig[10] ^= 0x01;
    let bad_signature = format!("{head}.{payload}.{}", URL_SAFE_NO_PAD.encode(&sig));
    // The payload changed under a valid signature (admin for a member).
    let mut tampered = good.clone();
    tampered["sub"] = json!("user_admin");
    let tampered = format!("{head}.{}.{signature}", b64(&tampered));
    let none = format!(
        "{}.{payload}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": key.kid}))
    );
    // RS256 -> HS256 confusion: HMAC keyed with the public key's PEM.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(key.kid.clone());
    let hs256 = jsonwebtoken::encode(
        &hs,
        &good,
        &EncodingKey::from_secret(key.public_pem.as_bytes()),
    )
    .unwrap();
    let mut unknown = Header::new(Algorithm::RS256);
    unknown.kid = Some("kid-that-does-not-exist".into());
    let unknown_kid = jsonwebtoken::encode(
        &unknown,
        &good,
        &EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let huge = with(json!({"pad": "x".repeat(20_000)}));
    vec![
        (
            "expired",
            with(json!({"exp": now() - 30, "iat": now() - 90, "nbf": now() - 90})),
        ),
        ("nbf in the future", with(json!({"nbf": now() + 60}))),
        ("iat in the future", with(json!({"iat": now() + 60}))),
        ("no exp", with(json!({"exp": null}))),
        (
            "exp as a string",
            with(json!({"exp": (now() + 60).to_string()})),
        ),
        ("no sub", with(json!({"sub": null}))),
        (
            "wrong iss",
            with(json!({"iss": "https://clerk.other.test"})),
        ),
        (
            "iss with a trailing slash",
            with(json!({"iss": format!("{ISSUER}/")})),
        ),
        ("wrong azp", with(json!({"azp": "https://evil.example"}))),
        ("missing azp", with(json!({"azp": null}))),
        ("alg none", none),
        ("HS256 keyed with the public key", hs256),
        ("bad signature", bad_signature),
        ("tampered payload", tampered),
        ("unknown kid", unknown_kid),
        ("20 KB token", huge),
        ("two parts", format!("{head}.{payload}")),
        ("garbage", "not-a-token".to_string()),
    ]
}

async fn grpc_embed(server: &common::Server, token: Option<&str>) -> Result<(), tonic::Status> {
    let channel = Channel::from_shared(server.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = EmbeddingServiceClient::new(channel);
    let mut request = Request::new(EmbedRequest {
        model: common::MODEL.into(),
        inputs: vec!["hello".into()],
        ..Default::default()
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", bearer(token).parse().unwrap());
    }
    client.embed(request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_pass_and_every_classic_attack_fails_on_both_doors() {
    let key = RsaKey::generate("kid-main");
    let jwks = JwksStandIn::start(&[&key]).await;
    let server = common::Server::with_config(&auth_config(&jwks.url, ""));

    let valid = key.sign(&claims("user_good", None));
    let (status, _, body) = embed(&server, Some(&bearer(&valid)), common::MODEL).await;
    assert_eq!(status, 200, "{body}");
    // Clerk's SDKs also accept a bare token.
    let (status, _, _) = embed(&server, Some(&valid), common::MODEL).await;
    assert_eq!(status, 200);
    grpc_embed(&server, Some(&valid))
        .await
        .expect("gRPC with a valid token");

    let (status, headers, body) = embed(&server, None, common::MODEL).await;
    assert_refused(status, &headers, &body, 401);
    let missing = grpc_embed(&server, None).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);

    let mut bodies = std::collections::HashSet::new();
    for (name, token) in forged(&key) {
        let (status, headers, body) = embed(&server, Some(&bearer(&token)), common::MODEL).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_refused(status, &headers, &body, 401);
        bodies.insert(body.to_string());
        let grpc = grpc_embed(&server, Some(&token)).await.unwrap_err();
        if name == "20 KB token" {
            // Past HTTP/2's header-list limit the transport refuses it (431) before any call.
            assert!(grpc.message().contains("431"), "{grpc:?}");
            continue;
        }
        assert_eq!(
            grpc.code(),
            Code::Unauthenticated,
            "{name} over gRPC: {grpc:?}"
        );
    }
    // No oracle: a bad signature and a bad claim read the same.
    assert_eq!(bodies.len(), 1, "refusals differ: {bodies:?}");
    // One audit line per refusal, naming the reason, never the token.
    let logs = server.logs();
    assert!(logs.contains("\"reason\":\"bad_signature\""), "{logs}");
    assert!(logs.contains("\"reason\":\"expired\""));
    assert!(logs.contains("\"reason\":\"authorized_party\""));
    assert!(!logs.contains(&valid[..40]), "a token reached the logs");
    let metrics = common::http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("citadel_auth_failures_total{reason=\"bad_signature\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_counts_only_from_an_allowed_origin() {
    let key = RsaKey::generate("kid-cookie");
    let jwks = JwksStandIn::start(&[&key]).await;
    let server = common::Server::with_config(&auth_config(&jwks.url, ""));
    let token = key.sign(&claims("user_cookie", None));
    let send = |origin: &'static str| {
        common::http()
            .post(server.url("/v1/embeddings"))
            .header("cookie", format!("theme=dark; __session={token}"))
            .header("origin", origin)
            .json(&json!({"model": common::MODEL, "input": "from the browser"}))
            .send()
    };
    assert_eq!(send(ORIGIN).await.unwrap().status(), 200);
    let refused = send("https://evil.example").await.unwrap();
    let status = refused.status().as_u16();
    let headers = refused.headers().clone();
    let body = refused.json().await.unwrap();
    assert_refused(status, &headers, &body, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_kids_cost_one_fetch_rotation_is_picked_up_and_an_outage_keeps_keys() {
    let old = RsaKey::generate("kid-old");
    let jwks = JwksStandIn::start(&[&old]).await;
    let server = common::Server::with_config(&auth_config(&jwks.url, ""));
    let token = old.sign(&claims("user_rot", None));
    assert_eq!(
        embed(&server, Some(&bearer(&token)), common::MODEL).await.0,
        200
    );

    // A flood of tokens naming random kids: at most one refetch within the interval.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = jwks.fetches();
    let mut flood = Vec::new();
    for i in 0..30 {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(format!("forged-{i}"));
        let forged = jsonwebtoken::encode(
            &header,
            &claims("user_rot", None),
            &EncodingKey::from_rsa_pem(old.private_pem.as_bytes()).unwrap(),
        )
        .unwrap();
        let server = &server;
        flood.push(async move { embed(server, Some(&bearer(&forged)), common::MODEL).await.0 });
    }
    let statuses = futures_util::future::join_all(flood).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let fetched = jwks.fetches() - before;
    assert!(fetched <= 1, "{fetched} JWKS fetches for 30 forged kids");

    // Rotation: a new key is published; its first token triggers a refetch and passes.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new = RsaKey::generate("kid-new");
    jwks.publish(&new);
    let rotated = new.sign(&claims("user_rot2", None));
    let (status, _, body) = embed(&server, Some(&bearer(&rotated)), common::MODEL).await;
    assert_eq!(status, 200, "a rotated key is accepted: {body}");

    // The JWKS fails: keys fetched before keep working.
    jwks.fail(true);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = old.sign(&claims("user_outage", None));
    assert_eq!(
        embed(&server, Some(&bearer(&fresh)), common::MODEL).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_cannot_be_checked_are_503_not_401() {
    let key = RsaKey::generate("kid-never");
    let jwks = JwksStandIn::start(&[&key]).await;
    jwks.fail(true);
    let server = common::Server::with_config(&auth_config(&jwks.url, ""));
    let token = key.sign(&claims("user_wait", None));
    let (status, headers, body) = embed(&server, Some(&bearer(&token)), common::MODEL).await;
    common::assert_openai_error(status, &body, 503);
    assert!(headers.contains_key("retry-after"));
    // Once the JWKS answers, the same token passes (after the minimum refetch interval).
    jwks.fail(false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        embed(&server, Some(&bearer(&token)), common::MODEL).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pem_key_verifies_without_any_network() {
    let key = RsaKey::generate("kid-pem");
    let pem = key.public_pem.replace('\n', "\\n");
    let config = format!(
        "[auth]\nmode = \"required\"\npublic_key_pem = \"{pem}\"\nissuer = \"{ISSUER}\"\n\
         default_role = \"member\"\n"
    );
    let server = common::Server::with_config(&config);
    let token = key.sign(&claims("user_pem", None));
    assert_eq!(
        embed(&server, Some(&bearer(&token)), common::MODEL).await.0,
        200
    );
    let other = RsaKey::generate("kid-pem-other");
    let forged = other.sign(&claims("user_pem", None));
    assert_eq!(
        embed(&server, Some(&bearer(&forged)), common::MODEL)
            .await
            .0,
        401
    );
}
