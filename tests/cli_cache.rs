//! `citadel cache warm`: the real binary against a real server over gRPC, and its errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

use common::*;

/// Runs `citadel` with `args` and `stdin`; returns (success, stdout, stderr).
fn citadel(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_citadel"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Only the test's own settings: no CITADEL_SERVER from the surrounding shell.
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("CITADEL_")) {
        command.env_remove(key);
    }
    let mut child = command.spawn().expect("run citadel");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (
        output.status.success(),
        text(output.stdout),
        text(output.stderr),
    )
}

fn temp_file(name: &str, content: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("citadel-warm-{}-{name}", std::process::id()));
    std::fs::write(&path, content).expect("write");
    path
}

fn warm(file: &str, server: &str, extra: &[&str], stdin: &str) -> (bool, String, String) {
    let mut args = vec!["cache", "warm", file, "--server", server];
    args.extend_from_slice(extra);
    citadel(&args, stdin)
}

#[test]
fn warms_every_line_of_a_text_file() {
    let server = Server::start();
    // Blank lines in between are skipped, not sent (the server refuses empty inputs).
    let lines: Vec<String> = (0..200).map(|i| sentence(i, 8)).collect();
    let file = temp_file("plain.txt", &format!("{}\n\n", lines.join("\n\n")));
    let file = file.to_str().unwrap();

    let (ok, stdout, stderr) = warm(file, &server.grpc, &["--batch-size", "32"], "");
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("warmed 200 texts ("), "{stdout}");
    assert!(stdout.contains("texts/s"), "{stdout}");
    // stderr is a pipe here, as in CI: plain lines at most, never a redrawn bar.
    assert!(
        !stderr.contains('\u{1b}'),
        "terminal codes on a pipe: {stderr:?}"
    );
    assert!(stdout.contains("(0 already cached)"), "{stdout}");
    // The server kept them: a second run computes nothing.
    let (ok, stdout, stderr) = warm(file, &server.grpc, &[], "");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("(200 already cached)"), "{stdout}");

    // `cache stats` reads the same counters: 200 misses, then 200 hits, 200 entries.
    let (ok, stdout, stderr) = citadel(&["cache", "stats", "--server", &server.grpc, "--json"], "");
    assert!(ok, "{stderr}");
    let stats: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(stats["l1"]["entries"], 200, "{stats}");
    assert_eq!(stats["l1"]["hits"], 200, "{stats}");
    assert_eq!(stats["hit_rate"], 0.5, "{stats}");
    let (ok, stdout, stderr) = citadel(&["cache", "stats", "--server", &server.grpc], "");
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("hit rate 50.0 %") && stdout.contains("entries 200"),
        "{stdout}"
    );
}

#[test]
fn reads_jsonl_with_text_or_input_and_plain_lines_from_stdin() {
    let server = Server::start();
    let jsonl: String = (0..50)
        .map(|i| {
            let key = if i % 2 == 0 { "text" } else { "input" };
            format!(
                "{}\n",
                serde_json::json!({ key: sentence(1000 + i, 8), "id": i })
            )
        })
        .collect();
    let file = temp_file("corpus.jsonl", &format!("{jsonl}\n"));
    let (ok, stdout, stderr) = warm(file.to_str().unwrap(), &server.grpc, &[], "");
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("warmed 50 texts ("), "{stdout}");

    let stdin: String = (0..30)
        .map(|i| format!("{}\n", sentence(2000 + i, 8)))
        .collect();
    let (ok, stdout, stderr) = warm("-", &server.grpc, &["--concurrency", "1"], &stdin);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("warmed 30 texts ("), "{stdout}");
}

#[test]
fn server_errors_print_the_status_message() {
    let server = Server::start();
    let file = temp_file("model.txt", "one text\n");
    let (ok, stdout, stderr) = warm(
        file.to_str().unwrap(),
        &server.grpc,
        &["--model", "no-such-model"],
        "",
    );
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("no-such-model") && stderr.contains("--model"),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_names_the_path() {
    let path = "/nonexistent/citadel-warm-texts.txt";
    let (ok, _, stderr) = warm(path, "http://127.0.0.1:9", &[], "");
    assert!(!ok);
    assert!(
        stderr.contains(path) && stderr.contains("not found"),
        "{stderr}"
    );
}

#[test]
fn a_bad_jsonl_line_names_the_file_and_line() {
    // Checked before connecting: no server needed, and nothing is sent.
    let good = "{\"text\": \"fine\"}\n";
    let cases = [
        (
            "notjson.jsonl",
            format!("{good}\n{good}{{\"text\": oops}}\n"),
            4,
            "not valid JSON",
        ),
        (
            "notext.jsonl",
            format!("{good}{{\"title\": \"x\"}}\n"),
            2,
            "`text`",
        ),
        (
            "emptytext.jsonl",
            format!("{{\"text\": \"\"}}\n{good}"),
            1,
            "`text`",
        ),
    ];
    for (name, content, line, what) in cases {
        let file = temp_file(name, &content);
        let file = file.to_str().unwrap();
        let (ok, _, stderr) = warm(file, "http://127.0.0.1:9", &[], "");
        assert!(!ok, "{name} accepted");
        assert!(
            stderr.contains(&format!("{file}:{line}:")) && stderr.contains(what),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("cannot reach"), "{name}: {stderr}");
    }
}

#[test]
fn an_unreachable_server_says_how_to_fix_it() {
    let file = temp_file("unreachable.txt", "one text\n");
    let (ok, _, stderr) = warm(file.to_str().unwrap(), "http://127.0.0.1:9", &[], "");
    assert!(!ok);
    assert!(
        stderr.contains("cannot reach citadel at http://127.0.0.1:9")
            && stderr.contains("citadel serve")
            && stderr.contains("--server"),
        "{stderr}"
    );
}
