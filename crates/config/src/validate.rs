//! Checks serde cannot express. Each failure names the key, so an operator can fix the file
//! without reading code.

use crate::{BackendKind, Config, ConfigError, ConnectionsConfig, EndpointConfig, ModelConfig};

pub(crate) fn validate(cfg: &Config) -> Result<(), ConfigError> {
    positive("http.body_limit_bytes", cfg.http.body_limit_bytes as u64)?;
    positive("http.request_timeout_ms", cfg.http.request_timeout_ms)?;
    positive("http.body_read_timeout_ms", cfg.http.body_read_timeout_ms)?;
    positive("http.body_idle_timeout_ms", cfg.http.body_idle_timeout_ms)?;
    connections_ok("http.connections", &cfg.http.connections)?;
    connections_ok("grpc.connections", &cfg.grpc.connections)?;
    positive("shutdown.drain_grace_ms", cfg.shutdown.drain_grace_ms)?;
    positive("grpc.max_message_bytes", cfg.grpc.max_message_bytes as u64)?;
    positive(
        "grpc.request_body_timeout_ms",
        cfg.grpc.request_body_timeout_ms,
    )?;
    positive(
        "embeddings.max_inputs_per_request",
        cfg.embeddings.max_inputs_per_request as u64,
    )?;
    if !cfg.grpc.upstream.is_empty() {
        http_url("grpc.upstream", &cfg.grpc.upstream)?;
    }
    telemetry_ok(&cfg.telemetry)?;
    for origin in &cfg.http.cors_allowed_origins {
        if origin != "*" {
            http_url("http.cors_allowed_origins", origin)?;
        }
    }
    upstream_ok(cfg)?;
    for (key, cert, tls_key) in [
        ("http", &cfg.http.tls_cert, &cfg.http.tls_key),
        ("grpc", &cfg.grpc.tls_cert, &cfg.grpc.tls_key),
    ] {
        if cert.is_some() != tls_key.is_some() {
            let missing = if cert.is_some() {
                "tls_key"
            } else {
                "tls_cert"
            };
            return invalid(
                &format!("{key}.{missing}"),
                "TLS needs both tls_cert and tls_key (PEM files)",
            );
        }
    }
    // An LLM-only gateway needs no embedding model (and not their memory).
    if !cfg.models.values().any(|m| m.enabled) && cfg.llm.servers.is_empty() {
        return invalid(
            "models",
            "at least one model must be configured and enabled (or an [[llm.servers]] entry)",
        );
    }
    let mut names = std::collections::HashMap::new();
    for (name, model) in cfg.models.iter().filter(|(_, m)| m.enabled) {
        model_ok(name, model)?;
        routing_ok(cfg, name, model)?;
        for n in std::iter::once(name).chain(&model.aliases) {
            if let Some(other) = names.insert(n.as_str(), name.as_str()) {
                let key = format!("models.{name}.aliases");
                return invalid(&key, &format!("`{n}` already names model `{other}`"));
            }
        }
    }
    llm_ok(cfg)?;
    auth_ok(&cfg.auth)?;
    realtime_ok(cfg)?;
    if let Some(q) = &cfg.qdrant {
        http_url("qdrant.url", &q.url)?;
        positive("qdrant.timeout_ms", q.timeout_ms)?;
    }
    vectors_ok(cfg)?;
    let db = &cfg.database.url;
    if !(db.starts_with("sqlite:")
        || db.starts_with("postgres://")
        || db.starts_with("postgresql://"))
    {
        return invalid("database.url", "must start with sqlite: or postgres://");
    }
    workflows_ok(&cfg.workflows)?;
    positive("cache.ttl_secs", cfg.cache.ttl_secs)?;
    positive("cache.redis_timeout_ms", cfg.cache.redis_timeout_ms)?;
    if cfg.cache.key_prefix.is_empty() || cfg.cache.key_prefix.contains(char::is_whitespace) {
        return invalid("cache.key_prefix", "must be non-empty without spaces");
    }
    let redis = &cfg.cache.redis_url;
    if !(redis.is_empty() || redis.starts_with("redis://") || redis.starts_with("rediss://")) {
        return invalid(
            "cache.redis_url",
            "must be empty or start with redis:// or rediss://",
        );
    }
    Ok(())
}

fn connections_ok(section: &str, c: &ConnectionsConfig) -> Result<(), ConfigError> {
    let key = |field: &str| format!("{section}.{field}");
    positive(&key("max_connections"), c.max_connections as u64)?;
    positive(&key("header_read_timeout_ms"), c.header_read_timeout_ms)?;
    positive(&key("idle_timeout_ms"), c.idle_timeout_ms)?;
    positive(&key("write_timeout_ms"), c.write_timeout_ms)?;
    positive(&key("keepalive_interval_ms"), c.keepalive_interval_ms)?;
    positive(&key("keepalive_timeout_ms"), c.keepalive_timeout_ms)?;
    positive(
        &key("max_concurrent_streams"),
        u64::from(c.max_concurrent_streams),
    )
}

fn model_ok(name: &str, m: &ModelConfig) -> Result<(), ConfigError> {
    let key = |field: &str| format!("models.{name}.{field}");
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return invalid(
            "models",
            &format!("model name `{name}` must be non-empty without spaces"),
        );
    }
    positive(&key("dimensions"), u64::from(m.dimensions))?;
    positive(&key("max_input_tokens"), u64::from(m.max_input_tokens))?;
    positive(&key("max_queued_inputs"), m.max_queued_inputs as u64)?;
    match m.backend {
        BackendKind::Onnx => {
            if m.dir.is_none() {
                return invalid(&key("dir"), "required for backend \"onnx\"");
            }
            if m.graph.is_empty() {
                return invalid(&key("graph"), "must name the graph file inside dir");
            }
            positive(&key("sessions"), m.sessions as u64)?;
            positive(&key("intra_threads"), m.intra_threads as u64)?;
            let longest = u64::from(m.max_input_tokens);
            if (m.max_batch_tokens as u64) < longest {
                let msg =
                    format!("must be at least max_input_tokens ({longest}) so any input fits");
                return invalid(&key("max_batch_tokens"), &msg);
            }
            if m.max_window_tokens != 0 && m.max_window_tokens < m.max_batch_tokens {
                let msg = "must be 0 (automatic) or at least max_batch_tokens";
                return invalid(&key("max_window_tokens"), msg);
            }
        }
        BackendKind::Ollama | BackendKind::Openai => {
            if m.endpoints.is_empty() {
                let msg = format!(
                    "backend \"{}\" needs at least one endpoint",
                    m.backend.as_str()
                );
                return invalid(&key("endpoints"), &msg);
            }
            for (i, e) in m.endpoints.iter().enumerate() {
                endpoint_ok(&format!("models.{name}.endpoints[{i}]"), e)?;
            }
        }
    }
    Ok(())
}

/// One upstream server, wherever it is listed.
fn endpoint_ok(key: &str, e: &EndpointConfig) -> Result<(), ConfigError> {
    http_url(&format!("{key}.url"), &e.url)?;
    positive(&format!("{key}.weight"), u64::from(e.weight))?;
    let timeouts = [
        ("connect_timeout_ms", e.connect_timeout_ms),
        ("first_byte_timeout_ms", e.first_byte_timeout_ms),
        ("idle_timeout_ms", e.idle_timeout_ms),
    ];
    for (field, value) in timeouts {
        if let Some(ms) = value {
            positive(&format!("{key}.{field}"), ms)?;
        }
    }
    Ok(())
}

/// LLM servers need names (unique), and aliases and fallbacks must not loop.
fn llm_ok(cfg: &Config) -> Result<(), ConfigError> {
    let llm = &cfg.llm;
    let mut names = std::collections::HashSet::new();
    for (i, server) in llm.servers.iter().enumerate() {
        let key = format!("llm.servers[{i}]");
        endpoint_ok(&key, server)?;
        match server.name.as_deref() {
            None | Some("") => {
                return invalid(&format!("{key}.name"), "every LLM server needs a name");
            }
            Some(name) if !names.insert(name) => {
                let msg = format!("`{name}` names two servers");
                return invalid(&format!("{key}.name"), &msg);
            }
            Some(_) => {}
        }
    }
    positive("llm.discovery_interval_ms", llm.discovery_interval_ms)?;
    positive("llm.ttft_timeout_ms", llm.ttft_timeout_ms)?;
    positive("llm.stream_idle_timeout_ms", llm.stream_idle_timeout_ms)?;
    positive("llm.request_timeout_ms", llm.request_timeout_ms)?;
    if llm.ttft_timeout_ms > llm.request_timeout_ms {
        return invalid(
            "llm.ttft_timeout_ms",
            "must not exceed llm.request_timeout_ms",
        );
    }
    for (alias, target) in &llm.aliases {
        if llm.aliases.contains_key(target) {
            let msg = format!("`{target}` is itself an alias: point `{alias}` at a served model");
            return invalid(&format!("llm.aliases.{alias}"), &msg);
        }
    }
    for (model, chain) in &llm.fallbacks {
        if chain.iter().any(|m| m == model) {
            let msg = "a model cannot be its own fallback";
            return invalid(&format!("llm.fallbacks.{model}"), msg);
        }
    }
    Ok(())
}

fn auth_ok(a: &crate::AuthConfig) -> Result<(), ConfigError> {
    if a.mode == crate::AuthMode::Required {
        match (a.jwks_url.is_empty(), a.public_key_pem.trim().is_empty()) {
            (true, true) if a.issuer.is_empty() => {} // API keys only
            (true, true) => {
                return invalid(
                    "auth.jwks_url",
                    "auth.issuer is set, so set auth.jwks_url (Clerk's \
                     <frontend-api>/.well-known/jwks.json) or auth.public_key_pem",
                );
            }
            (false, false) => {
                return invalid(
                    "auth.public_key_pem",
                    "set auth.jwks_url or auth.public_key_pem, not both",
                );
            }
            _ if a.issuer.is_empty() => {
                return invalid(
                    "auth.issuer",
                    "must be the exact `iss` of your Clerk tokens (the Frontend API URL)",
                );
            }
            _ => {}
        }
    }
    if !a.jwks_url.is_empty() {
        http_url("auth.jwks_url", &a.jwks_url)?;
    }
    let pem = a.public_key_pem.trim();
    if !pem.is_empty() && !pem.starts_with("-----BEGIN PUBLIC KEY-----") {
        return invalid(
            "auth.public_key_pem",
            "must be a PEM public key (-----BEGIN PUBLIC KEY-----), as Clerk's dashboard shows it",
        );
    }
    for party in &a.authorized_parties {
        http_url("auth.authorized_parties", party)?;
    }
    if a.algorithms.is_empty() {
        return invalid(
            "auth.algorithms",
            "name at least one algorithm, e.g. [\"RS256\"]",
        );
    }
    for alg in &a.algorithms {
        if ![
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
        ]
        .contains(&alg.as_str())
        {
            let msg =
                format!("`{alg}` is not an asymmetric JWT algorithm (RS256, ES256, EdDSA, ...)");
            return invalid("auth.algorithms", &msg);
        }
    }
    if a.leeway_secs > 60 {
        return invalid("auth.leeway_secs", "at most 60 (Clerk's tokens live 60 s)");
    }
    positive("auth.jwks_refresh_secs", a.jwks_refresh_secs)?;
    positive("auth.jwks_min_refetch_secs", a.jwks_min_refetch_secs)?;
    positive("auth.max_token_bytes", a.max_token_bytes as u64)?;
    if a.key_cache_ms > 5000 {
        return invalid(
            "auth.key_cache_ms",
            "at most 5000, so a revoke reaches every process within 5 s",
        );
    }
    Ok(())
}

fn upstream_ok(cfg: &Config) -> Result<(), ConfigError> {
    let u = &cfg.upstream;
    positive("upstream.connect_timeout_ms", u.connect_timeout_ms)?;
    positive("upstream.attempt_timeout_ms", u.attempt_timeout_ms)?;
    positive("upstream.first_byte_timeout_ms", u.first_byte_timeout_ms)?;
    positive("upstream.idle_timeout_ms", u.idle_timeout_ms)?;
    positive(
        "upstream.retry.max_attempts",
        u64::from(u.retry.max_attempts),
    )?;
    positive(
        "upstream.retry.initial_backoff_ms",
        u.retry.initial_backoff_ms,
    )?;
    if u.retry.max_backoff_ms < u.retry.initial_backoff_ms {
        return invalid(
            "upstream.retry.max_backoff_ms",
            "must be at least upstream.retry.initial_backoff_ms",
        );
    }
    positive(
        "upstream.breaker.failure_threshold",
        u64::from(u.breaker.failure_threshold),
    )?;
    positive("upstream.breaker.open_ms", u.breaker.open_ms)
}

/// Prompts, fallback and chunking: the parts of a model that refer to other keys.
fn routing_ok(cfg: &Config, name: &str, m: &ModelConfig) -> Result<(), ConfigError> {
    let key = |field: &str| format!("models.{name}.{field}");
    if let Some(default) = m
        .default_prompt
        .as_ref()
        .filter(|d| !m.prompts.contains_key(*d))
    {
        let msg = format!("`{default}` is not one of models.{name}.prompts");
        return invalid(&key("default_prompt"), &msg);
    }
    if let Some(fallback) = &m.fallback {
        let Some(other) = cfg.models.get(fallback).filter(|o| o.enabled) else {
            let msg = format!("`{fallback}` is not an enabled model");
            return invalid(&key("fallback"), &msg);
        };
        if fallback == name {
            return invalid(&key("fallback"), "a model cannot be its own fallback");
        }
        if other.dimensions != m.dimensions {
            let msg = format!(
                "`{fallback}` has {} dimensions, this model {}: a fallback must match",
                other.dimensions, m.dimensions
            );
            return invalid(&key("fallback"), &msg);
        }
    }
    if m.backend != BackendKind::Onnx {
        positive(&key("batch_size"), m.batch_size as u64)?;
        positive(&key("chunk_concurrency"), m.chunk_concurrency as u64)?;
    }
    Ok(())
}

fn workflows_ok(w: &crate::WorkflowsConfig) -> Result<(), ConfigError> {
    positive("workflows.concurrency", w.concurrency as u64)?;
    positive("workflows.lease_ms", w.lease_ms)?;
    positive("workflows.heartbeat_ms", w.heartbeat_ms)?;
    if w.heartbeat_ms >= w.lease_ms {
        return invalid(
            "workflows.heartbeat_ms",
            "must be shorter than workflows.lease_ms, or leases expire between heartbeats",
        );
    }
    positive("workflows.poll_interval_ms", w.poll_interval_ms)?;
    positive("workflows.monitor_interval_ms", w.monitor_interval_ms)?;
    positive("workflows.max_params_bytes", w.max_params_bytes as u64)?;
    positive(
        "workflows.list_page_max_bytes",
        w.list_page_max_bytes as u64,
    )?;
    if !(16..=1_048_576).contains(&w.watch_buffer) {
        return invalid(
            "workflows.watch_buffer",
            "must be from 16 to 1048576 changes",
        );
    }
    positive("workflows.default_time_limit_ms", w.default_time_limit_ms)?;
    positive(
        "workflows.default_max_attempts",
        u64::from(w.default_max_attempts),
    )?;
    positive(
        "workflows.default_initial_backoff_ms",
        w.default_initial_backoff_ms,
    )?;
    if w.default_max_backoff_ms < w.default_initial_backoff_ms {
        return invalid(
            "workflows.default_max_backoff_ms",
            "must be at least workflows.default_initial_backoff_ms",
        );
    }
    positive("workflows.result_ttl_secs", w.result_ttl_secs)?;
    positive("workflows.embed_chunk_size", w.embed_chunk_size as u64)?;
    if !w.embeddings_url.is_empty() {
        http_url("workflows.embeddings_url", &w.embeddings_url)?;
    }
    Ok(())
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return invalid(key, "must be greater than 0");
    }
    Ok(())
}

/// A URL with an http(s) scheme and a host; checked by shape only, never resolved.
fn http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace) => {
            Ok(())
        }
        _ => invalid(
            key,
            &format!("`{url}` is not an http:// or https:// URL with a host"),
        ),
    }
}

fn invalid<T>(key: &str, message: &str) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key: key.to_string(),
        message: message.to_string(),
    })
}

fn realtime_ok(cfg: &Config) -> Result<(), ConfigError> {
    let ws = &cfg.ws;
    if !(256..=16 * 1024 * 1024).contains(&ws.max_message_bytes) {
        return invalid("ws.max_message_bytes", "must be from 256 bytes to 16 MiB");
    }
    if !(50..=60_000).contains(&ws.metrics_interval_ms) {
        return invalid("ws.metrics_interval_ms", "must be from 50 to 60000");
    }
    if !(1_000..=300_000).contains(&ws.ping_interval_ms) {
        return invalid("ws.ping_interval_ms", "must be from 1000 to 300000");
    }
    if !(16..=65_536).contains(&ws.send_queue) {
        return invalid("ws.send_queue", "must be from 16 to 65536");
    }
    if !(16..=1_048_576).contains(&ws.feed_buffer) {
        return invalid("ws.feed_buffer", "must be from 16 to 1048576 changes");
    }
    if !(1..=32).contains(&cfg.agui.max_iterations) {
        return invalid("agui.max_iterations", "must be from 1 to 32");
    }
    if cfg.agui.workflow_wait_ms > 3_600_000 {
        return invalid("agui.workflow_wait_ms", "must be at most 3600000 (an hour)");
    }
    Ok(())
}

fn vectors_ok(cfg: &Config) -> Result<(), ConfigError> {
    let v = &cfg.vectors;
    if v.store == crate::VectorStoreKind::Qdrant && cfg.qdrant.is_none() {
        return invalid(
            "vectors.store",
            "is \"qdrant\" but there is no [qdrant] section: set qdrant.url (its gRPC port, 6334)",
        );
    }
    if v.store == crate::VectorStoreKind::Embedded && v.path.trim().is_empty() {
        return invalid(
            "vectors.path",
            "must name a directory for the embedded store",
        );
    }
    positive(
        "vectors.max_points_per_upsert",
        v.max_points_per_upsert as u64,
    )?;
    positive("vectors.max_payload_bytes", v.max_payload_bytes as u64)?;
    positive("vectors.chunk_words", v.chunk_words as u64)?;
    if v.chunk_overlap_words >= v.chunk_words {
        return invalid(
            "vectors.chunk_overlap_words",
            "must be smaller than vectors.chunk_words",
        );
    }
    if v.ingest_batch == 0 || v.ingest_batch > v.max_points_per_upsert {
        return invalid(
            "vectors.ingest_batch",
            "must be 1 to vectors.max_points_per_upsert",
        );
    }
    Ok(())
}

fn telemetry_ok(t: &crate::TelemetryConfig) -> Result<(), ConfigError> {
    if !t.otlp_endpoint.is_empty() {
        http_url("telemetry.otlp_endpoint", &t.otlp_endpoint)?;
    }
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        return invalid(
            "telemetry.sample_ratio",
            "must be between 0.0 (keep no new trace) and 1.0 (keep every one)",
        );
    }
    if t.service_name.trim().is_empty() {
        return invalid("telemetry.service_name", "must not be empty");
    }
    positive("telemetry.export_delay_ms", t.export_delay_ms)
}
