//! `citadel doctor`: checks the configuration, then every server it names (the workflow
//! database, Redis, each embedding endpoint, each LLM server, Qdrant, the OTLP collector,
//! Clerk's JWKS), each with
//! a one-line verdict and, for a failure, the fix. The checks run at once, each bounded by
//! `--timeout-ms`, so a black-holed address costs the timeout, not a hang. `--offline` stops
//! after the configuration. A check tells "down" (nothing answers) from "wrong" (something
//! answers, but not what the configuration expects: another protocol, or a server without
//! the model).

use std::{process::ExitCode, time::Duration};

use citadel_config::{BackendKind, Config, VectorStoreKind};
use futures_util::future::join_all;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::ConfigArgs;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Check the configuration only; connect to nothing.
    #[arg(long)]
    offline: bool,
    /// Longest wait for one dependency.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
}

/// One line of the report.
struct Verdict {
    ok: bool,
    what: String,
    detail: String,
    fix: Option<String>,
}

impl Verdict {
    fn ok(what: impl Into<String>, detail: impl Into<String>) -> Verdict {
        Verdict {
            ok: true,
            what: what.into(),
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(what: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Verdict {
        Verdict {
            ok: false,
            what: what.into(),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn print(&self) {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        match &self.fix {
            Some(fix) => println!("{mark} {:<28} {} (fix: {fix})", self.what, self.detail),
            None => println!("{mark} {:<28} {}", self.what, self.detail),
        }
    }
}

pub fn run(args: &DoctorArgs) -> ExitCode {
    let config = match args.config.load() {
        Ok(config) => config,
        Err(e) => {
            let verdict = Verdict::fail("configuration", e.to_string(), "correct the key named");
            verdict.print();
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = citadel_auth::Roles::from_config(&config.auth) {
        Verdict::fail("configuration", e.to_string(), "correct the [auth] roles").print();
        return ExitCode::FAILURE;
    }
    Verdict::ok("configuration", "valid").print();
    if args.offline {
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return crate::fail(&e),
    };
    let verdicts = runtime.block_on(check_all(&config, Duration::from_millis(args.timeout_ms)));
    for verdict in &verdicts {
        verdict.print();
    }
    let failed = verdicts.iter().filter(|v| !v.ok).count();
    if failed > 0 {
        eprintln!("{failed} of {} dependencies failed", verdicts.len());
        return ExitCode::FAILURE;
    }
    eprintln!("all {} dependencies answer", verdicts.len());
    ExitCode::SUCCESS
}

type Check = std::pin::Pin<Box<dyn Future<Output = Verdict>>>;

async fn check_all(config: &Config, timeout: Duration) -> Vec<Verdict> {
    // No timeout of the client's own: the one bound below covers every check alike.
    let http = match reqwest::Client::builder().build() {
        Ok(http) => http,
        Err(e) => return vec![Verdict::fail("http client", e.to_string(), "report this")],
    };
    let mut checks: Vec<(String, Check)> = Vec::new();
    let url = config.database.url.clone();
    checks.push(("database".into(), Box::pin(database(url))));
    if !config.cache.redis_url.is_empty() {
        checks.push((
            "redis".into(),
            Box::pin(redis(config.cache.redis_url.clone())),
        ));
    }
    for (name, model) in config.models.iter().filter(|(_, m)| m.enabled) {
        let upstream = model.upstream_model.clone().unwrap_or_else(|| name.clone());
        for endpoint in &model.endpoints {
            let what = format!("model {name} @ {}", endpoint.url);
            let check = embedding_endpoint(
                http.clone(),
                model.backend,
                endpoint.url.clone(),
                endpoint.api_key.clone(),
                upstream.clone(),
            );
            checks.push((what, Box::pin(check)));
        }
    }
    for server in &config.llm.servers {
        let label = server.name.clone().unwrap_or_else(|| server.url.clone());
        let check = llm_server(http.clone(), server.url.clone(), server.api_key.clone());
        checks.push((format!("llm {label}"), Box::pin(check)));
    }
    if let (VectorStoreKind::Qdrant, Some(q)) = (config.vectors.store, &config.qdrant) {
        checks.push(("qdrant".into(), Box::pin(qdrant(q.clone(), timeout))));
    }
    if !config.telemetry.otlp_endpoint.is_empty() {
        let check = otlp(config.telemetry.otlp_endpoint.clone());
        checks.push(("otlp collector".into(), Box::pin(check)));
    }
    if !config.auth.jwks_url.is_empty() {
        let check = jwks(http.clone(), config.auth.jwks_url.clone());
        checks.push(("auth jwks".into(), Box::pin(check)));
    }
    let bounded = checks.into_iter().map(|(what, check)| async move {
        match tokio::time::timeout(timeout, check).await {
            Ok(mut verdict) => {
                verdict.what = what;
                verdict
            }
            Err(_) => Verdict::fail(
                what,
                format!("no answer within {} ms", timeout.as_millis()),
                "is the address reachable from here (firewall, routing)? is the server up?",
            ),
        }
    });
    join_all(bounded).await
}

async fn database(url: String) -> Verdict {
    let backend = match citadel_workflows::backup::DatabaseLocation::of(&url) {
        Ok(location) => location.backend(),
        Err(e) => return Verdict::fail("", e.to_string(), "set database.url"),
    };
    match citadel_workflows::backup::workflow_count(&url).await {
        Ok(Some(n)) => Verdict::ok("", format!("{backend}: answers, {n} workflows")),
        Ok(None) => Verdict::ok(
            "",
            format!("{backend}: answers, no tables yet (created at start-up)"),
        ),
        Err(e) => Verdict::fail(
            "",
            e.to_string(),
            format!("start {backend} or correct database.url (host, port, user, database name)"),
        ),
    }
}

/// Redis by its own protocol: `PING` (after `AUTH` when the URL has a password).
async fn redis(url: String) -> Verdict {
    let Some(rest) = url.strip_prefix("redis://") else {
        return Verdict::fail(
            "",
            format!("{} is not a redis:// URL", mask(&url)),
            "use redis://[:PASSWORD@]HOST:PORT[/DB] (rediss:// is not checked)",
        );
    };
    let (auth, hostport) = match rest.rsplit_once('@') {
        Some((auth, hostport)) => (Some(auth), hostport),
        None => (None, rest),
    };
    let hostport = hostport.split('/').next().unwrap_or_default();
    let mut stream = match TcpStream::connect(hostport).await {
        Ok(stream) => stream,
        Err(e) => {
            return Verdict::fail(
                "",
                format!("{hostport}: {e}"),
                "start Redis there, or correct cache.redis_url (or empty it to run without L2)",
            );
        }
    };
    let mut request = String::new();
    if let Some(password) = auth.map(|a| a.rsplit(':').next().unwrap_or(a))
        && !password.is_empty()
    {
        request.push_str(&format!("AUTH {password}\r\n"));
    }
    request.push_str("PING\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return Verdict::fail("", format!("{hostport}: {e}"), "is it Redis on that port?");
    }
    let mut answer = vec![0u8; 256];
    let n = stream.read(&mut answer).await.unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]);
    if answer.contains("+PONG") {
        return Verdict::ok("", format!("{hostport}: PONG"));
    }
    if answer.contains("NOAUTH") || answer.contains("WRONGPASS") {
        return Verdict::fail(
            "",
            format!("{hostport}: Redis refused the credentials"),
            "put the password in cache.redis_url (CITADEL_CACHE__REDIS_URL)",
        );
    }
    Verdict::fail(
        "",
        format!(
            "{hostport} answered {:?}, not a Redis PONG",
            first_line(&answer)
        ),
        "cache.redis_url points at something that is not Redis",
    )
}

async fn embedding_endpoint(
    http: reqwest::Client,
    backend: BackendKind,
    base: String,
    key: Option<String>,
    model: String,
) -> Verdict {
    let base = base.trim_end_matches('/').to_string();
    let (url, listed) = match backend {
        BackendKind::Ollama => (format!("{base}/api/tags"), "models"),
        BackendKind::Openai if has_path(&base) => (format!("{base}/models"), "data"),
        BackendKind::Openai => (format!("{base}/v1/models"), "data"),
        BackendKind::Onnx => return Verdict::ok("", "in process"),
    };
    let body = match get_json(&http, &url, key.as_deref()).await {
        Ok(body) => body,
        Err(verdict) => return verdict,
    };
    let Some(models) = body[listed].as_array() else {
        return Verdict::fail(
            "",
            format!("GET {url} answered JSON without `{listed}`"),
            "the endpoint's backend (ollama/openai) does not match the server",
        );
    };
    let names: Vec<&str> = models
        .iter()
        .filter_map(|m| {
            m["name"]
                .as_str()
                .or(m["model"].as_str())
                .or(m["id"].as_str())
        })
        .collect();
    // Ollama lists `name:tag`; a bare name means `:latest`.
    let found = names.iter().any(|n| {
        *n == model
            || n.strip_suffix(":latest") == Some(&model)
            || model.strip_suffix(":latest") == Some(n)
    });
    match (found, backend) {
        (true, _) => Verdict::ok("", format!("serves {model}")),
        (false, BackendKind::Ollama) => Verdict::fail(
            "",
            format!("answers, but does not list {model}"),
            format!("`ollama pull {model}` on that server, or set upstream_model"),
        ),
        (false, _) => Verdict::fail(
            "",
            format!("answers, but does not list {model}"),
            "serve the model there, or set the model's upstream_model to a listed name",
        ),
    }
}

async fn llm_server(http: reqwest::Client, base: String, key: Option<String>) -> Verdict {
    let base = base.trim_end_matches('/');
    let url = match has_path(base) {
        true => format!("{base}/models"),
        false => format!("{base}/v1/models"),
    };
    match get_json(&http, &url, key.as_deref()).await {
        Ok(body) => match body["data"].as_array() {
            Some(models) => {
                let ids: Vec<&str> = models.iter().filter_map(|m| m["id"].as_str()).collect();
                Verdict::ok("", format!("serves {}", ids.join(", ")))
            }
            None => Verdict::fail(
                "",
                format!("GET {url} answered JSON without `data`"),
                "llm.servers takes OpenAI-compatible servers (vLLM)",
            ),
        },
        Err(verdict) => verdict,
    }
}

async fn qdrant(q: citadel_config::QdrantConfig, timeout: Duration) -> Verdict {
    let store = match citadel_vectors::QdrantStore::new(&q.url, q.api_key.as_deref(), timeout) {
        Ok(store) => store,
        Err(e) => return Verdict::fail("", e.to_string(), "correct qdrant.url"),
    };
    let health = citadel_vectors::VectorStore::health(&store).await;
    match health.ok {
        true => Verdict::ok("", health.detail),
        false => Verdict::fail(
            "",
            health.detail,
            "start Qdrant, or point qdrant.url at its gRPC port (6334, not the REST 6333)",
        ),
    }
}

/// The collector's gRPC port accepts connections (an export would add a span to it).
async fn otlp(url: String) -> Verdict {
    let hostport = url
        .split_once("://")
        .map_or(url.as_str(), |(_, rest)| rest)
        .trim_end_matches('/');
    match TcpStream::connect(hostport).await {
        Ok(_) => Verdict::ok("", format!("{hostport}: accepts connections")),
        Err(e) => Verdict::fail(
            "",
            format!("{hostport}: {e}"),
            "start the collector, or correct telemetry.otlp_endpoint (OTLP/gRPC, port 4317)",
        ),
    }
}

async fn jwks(http: reqwest::Client, url: String) -> Verdict {
    match get_json(&http, &url, None).await {
        Ok(body) => match body["keys"].as_array() {
            Some(keys) if !keys.is_empty() => Verdict::ok("", format!("{} keys", keys.len())),
            _ => Verdict::fail(
                "",
                "answered JSON without keys",
                "auth.jwks_url is Clerk's <frontend-api>/.well-known/jwks.json",
            ),
        },
        Err(verdict) => verdict,
    }
}

/// GET `url` and parse JSON; a failure is the verdict, with its fix.
async fn get_json(http: &reqwest::Client, url: &str, key: Option<&str>) -> Result<Value, Verdict> {
    let mut request = http.get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|e| {
        let fix = match e.is_connect() {
            true => "start the server, or correct the URL (host and port)",
            false => "check the URL and that the server answers HTTP there",
        };
        Verdict::fail("", format!("GET {url}: {}", root_cause(&e)), fix)
    })?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(Verdict::fail(
            "",
            format!("GET {url}: {status}"),
            "set the endpoint's api_key",
        ));
    }
    if !status.is_success() {
        return Err(Verdict::fail(
            "",
            format!("GET {url}: {status}"),
            "the URL does not point at the server the configuration expects",
        ));
    }
    response.json::<Value>().await.map_err(|_| {
        Verdict::fail(
            "",
            format!("GET {url}: the answer is not JSON"),
            "the URL does not point at the server the configuration expects",
        )
    })
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn has_path(base: &str) -> bool {
    base.split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/').contains('/'))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn mask(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => url.to_string(),
    }
}
