//! `citadel serve`: builds the models, starts the gRPC mesh and the REST edge on top of it, and
//! shuts both down in order on SIGTERM/SIGINT.

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use citadel_config::{BackendKind, Config, ModelConfig};
use citadel_embeddings::{EmbeddingCore, Limits, ModelInfo};
use citadel_gateway::{AppState, GatewaySettings};
use citadel_grpc::{GrpcSettings, HealthControl};
use citadel_onnx::{OnnxModel, OnnxModelSettings};
use citadel_telemetry::MetricsHandle;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::server::TcpIncoming;

pub fn run(config: Config) -> ExitCode {
    let json = config.log.format == citadel_config::LogFormat::Json;
    if let Err(e) = citadel_telemetry::init_logging(json, &config.log.level) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "citadel failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let metrics = MetricsHandle::install()?;
    let core = Arc::new(build_core(&config)?);

    // Both listeners first, so port 0 works and a taken port fails before anything runs.
    let grpc_listener = bind("grpc.addr", config.grpc.addr).await?;
    let http_listener = bind("http.addr", config.http.addr).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    // The mesh: health says NOT_SERVING until every model has loaded.
    let (health, health_service) = HealthControl::new().await;
    let readiness = tokio::spawn(health.clone().follow_readiness(core.clone()));
    let grpc_settings = GrpcSettings {
        max_message_bytes: config.grpc.max_message_bytes,
    };
    let grpc_router = citadel_grpc::router(core.clone(), health_service, grpc_settings)?;
    let (stop_grpc, grpc_stopped) = oneshot::channel::<()>();
    // Small request/response exchanges: without TCP_NODELAY, Nagle's algorithm meets delayed
    // ACKs and adds ~40 ms to a single-input request.
    let incoming = TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let mut grpc_task =
        tokio::spawn(grpc_router.serve_with_incoming_shutdown(incoming, async {
            grpc_stopped.await.unwrap_or_default()
        }));

    // The REST edge, calling the mesh over a real gRPC channel.
    let upstream = match config.grpc.upstream.as_str() {
        "" => loopback_url(grpc_addr),
        url => url.to_string(),
    };
    let channel = citadel_gateway::upstream_channel(&upstream).context("grpc.upstream")?;
    let render = Arc::new(move || metrics.render());
    let timeout = Duration::from_millis(config.http.request_timeout_ms);
    let state = AppState::new(
        channel,
        &upstream,
        config.grpc.max_message_bytes,
        timeout,
        render,
    );
    let settings = GatewaySettings {
        body_limit_bytes: config.http.body_limit_bytes,
        body_read_timeout: Duration::from_millis(config.http.body_read_timeout_ms),
        cors_allowed_origins: config.http.cors_allowed_origins.clone(),
    };
    let app = citadel_gateway::router(state, &settings);
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let mut http_task: JoinHandle<std::io::Result<()>> = tokio::spawn(
        axum::serve(http_listener.tap_io(|tcp| drop(tcp.set_nodelay(true))), app)
            .with_graceful_shutdown(async { http_stopped.await.unwrap_or_default() })
            .into_future(),
    );

    let (http, grpc) = (http_addr.to_string(), grpc_addr.to_string());
    tracing::info!(http_addr = %http, grpc_addr = %grpc, upstream = %upstream, "citadel listening");
    let ready_core = core.clone();
    tokio::spawn(async move {
        if ready_core.wait_ready().await.is_ok() {
            tracing::info!(http_addr = %http, grpc_addr = %grpc, "citadel ready");
        }
    });

    tokio::select! {
        () = shutdown_signal() => tracing::info!("shutdown requested: draining in-flight requests"),
        result = &mut http_task => bail!("the REST edge stopped: {result:?}"),
        result = &mut grpc_task => bail!("the gRPC server stopped: {result:?}"),
    }

    // Drain: refuse new work first, let the REST edge finish (it needs the mesh), then the mesh.
    let drain = Duration::from_millis(config.shutdown.drain_timeout_ms);
    let deadline = tokio::time::Instant::now() + drain;
    // A model still loading must not turn health back to SERVING once draining has begun.
    readiness.abort();
    health.shutting_down().await;
    let _ = stop_http.send(());
    if tokio::time::timeout_at(deadline, &mut http_task)
        .await
        .is_err()
    {
        tracing::warn!(
            ms = drain.as_millis() as u64,
            "REST requests still running after the drain timeout"
        );
        http_task.abort();
    }
    health.close().await;
    let _ = stop_grpc.send(());
    if tokio::time::timeout_at(deadline, &mut grpc_task)
        .await
        .is_err()
    {
        tracing::warn!("gRPC calls still running after the drain timeout");
        grpc_task.abort();
    }
    core.close();
    tracing::info!("citadel stopped");
    Ok(())
}

fn build_core(config: &Config) -> anyhow::Result<EmbeddingCore> {
    let mut core = EmbeddingCore::new(Limits {
        max_inputs_per_request: config.embeddings.max_inputs_per_request,
    });
    for (name, model) in &config.models {
        match model.backend {
            BackendKind::Onnx => {
                let backend =
                    OnnxModel::start(onnx_settings(name, model), &config.onnx.library_path)?;
                core.register(backend, model.max_queued_inputs);
            }
            BackendKind::Ollama | BackendKind::Openai => bail!(
                "model `{name}` uses backend \"{}\", which this build cannot serve yet \
                 (models.{name}.backend): use backend = \"onnx\" or remove the model",
                model.backend.as_str()
            ),
        }
    }
    Ok(core)
}

fn onnx_settings(name: &str, model: &ModelConfig) -> OnnxModelSettings {
    OnnxModelSettings {
        info: ModelInfo {
            name: name.to_string(),
            aliases: model.aliases.clone(),
            dimensions: model.dimensions,
            max_input_tokens: model.max_input_tokens,
            backend: BackendKind::Onnx.as_str(),
            owned_by: "citadel".to_string(),
        },
        dir: model.dir.clone().unwrap_or_default(),
        sessions: model.sessions,
        intra_threads: model.intra_threads,
        max_batch_tokens: model.max_batch_tokens,
    }
}

async fn bind(key: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {key} = {addr}: is another process using it?"))
}

/// This process's own gRPC server, reached over loopback even when bound to all interfaces.
fn loopback_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
