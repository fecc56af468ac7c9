//! `citadel doctor` against loopback stand-ins that are up, down and wrong: one line each,
//! the fix for every failure, a bounded wait for a server that never answers.

use citadel_standin::llm::{LlmStandIn, LlmStandInConfig};

use super::{citadel, common, temp_config};
use common::upstream::{NO_LOCAL_MODELS, dead_url, model_section, standin};

/// A listener that accepts and never answers: what a black-holed address looks like.
fn silent_url() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    (listener, url)
}

fn line<'a>(stdout: &'a str, what: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no line for {what}:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_tells_up_down_and_wrong_apart_with_the_fix() {
    let ollama = standin().await;
    let llm = LlmStandIn::start(LlmStandInConfig::default())
        .await
        .unwrap();
    let (_silent, silent) = silent_url();
    let dead = dead_url();
    // Redis pointed at the Ollama stand-in: something answers, not Redis.
    let wrong_redis = ollama.url().replace("http://", "redis://");
    let mut toml = NO_LOCAL_MODELS.to_string();
    toml += &model_section("served", "ollama", &[(&ollama.url(), 1)], "");
    toml += &model_section(
        "unlisted",
        "ollama",
        &[(&ollama.url(), 1)],
        "upstream_model = \"not-pulled\"",
    );
    toml += &format!(
        "[cache]\nredis_url = \"{wrong_redis}\"\n\n[[llm.servers]]\nname = \"llm-up\"\nurl = \"{}\"\n\n\
         [[llm.servers]]\nname = \"llm-down\"\nurl = \"{dead}\"\n\n[[llm.servers]]\nname = \"llm-silent\"\nurl = \"{silent}\"\n\n\
         [telemetry]\notlp_endpoint = \"{dead}\"\n",
        llm.url()
    );
    let file = temp_config("doctor", &toml);
    let database = common::sqlite_url();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let env = [("CITADEL_DATABASE__URL", database.as_str())];
        citadel(&["doctor", "--config", &file, "--timeout-ms", "700"], &env)
    })
    .await
    .unwrap();
    assert!(!ok, "failures make doctor fail:\n{stdout}{stderr}");
    assert!(line(&stdout, "configuration").starts_with("ok"), "{stdout}");
    assert!(line(&stdout, "database").starts_with("ok"), "{stdout}");
    let served = line(&stdout, "model served @");
    assert!(
        served.starts_with("ok") && served.contains("serves all-minilm"),
        "{served}"
    );
    let unlisted = line(&stdout, "model unlisted @");
    assert!(
        unlisted.starts_with("FAIL") && unlisted.contains("ollama pull not-pulled"),
        "{unlisted}"
    );
    let redis = line(&stdout, "redis");
    assert!(
        redis.starts_with("FAIL") && redis.contains("not a Redis PONG") && redis.contains("fix:"),
        "{redis}"
    );
    let up = line(&stdout, "llm llm-up");
    assert!(up.starts_with("ok") && up.contains("standin-llm"), "{up}");
    let down = line(&stdout, "llm llm-down");
    assert!(
        down.starts_with("FAIL") && down.contains("start the server"),
        "{down}"
    );
    let silent = line(&stdout, "llm llm-silent");
    assert!(
        silent.starts_with("FAIL") && silent.contains("700 ms"),
        "a server that never answers costs the timeout: {silent}"
    );
    let otlp = line(&stdout, "otlp collector");
    assert!(
        otlp.starts_with("FAIL") && otlp.contains("telemetry.otlp_endpoint"),
        "{otlp}"
    );
    assert!(stderr.contains("5 of 8 dependencies failed"), "{stderr}");
}

#[test]
fn doctor_passes_against_real_redis_and_offline_connects_to_nothing() {
    let database = common::sqlite_url();
    let file = temp_config(
        "doctor-ok",
        "[cache]\nredis_url = \"redis://127.0.0.1:6379\"\n",
    );
    let env = [("CITADEL_DATABASE__URL", database.as_str())];
    let (ok, stdout, stderr) = citadel(&["doctor", "--config", &file], &env);
    assert!(ok, "{stdout}{stderr}");
    assert!(line(&stdout, "redis").contains("PONG"), "{stdout}");
    // The production file names the fleet's private addresses: offline checks the
    // configuration and touches none of them.
    let (ok, stdout, stderr) = citadel(&["doctor", "--offline"], &[("CITADEL_ENV", "production")]);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("ok") && stdout.contains("configuration"),
        "{stdout}"
    );
    let (ok, stdout, _) = citadel(
        &["doctor", "--offline"],
        &[("CITADEL_HTTP__ADRR", "127.0.0.1:1")],
    );
    assert!(
        !ok && stdout.starts_with("FAIL") && stdout.contains("adrr"),
        "{stdout}"
    );
}
