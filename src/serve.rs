//! `citadel serve`: builds the models, opens the workflow store, starts the gRPC mesh, the REST
//! edge on top of it and (unless disabled) a workflow worker, and shuts them down in order on
//! SIGTERM/SIGINT.

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use citadel_config::{Config, ConnectionsConfig};
use citadel_embeddings::EmbeddingCore;
use citadel_gateway::{AppState, GatewaySettings};
use citadel_grpc::{Cores, GrpcSettings, HealthControl, WorkflowApi};
use citadel_llm::LlmCore;
use citadel_telemetry::MetricsHandle;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::workflows::Workflows;

pub fn run(config: Config, load: crate::reload::Loader) -> ExitCode {
    let settings = config.clone();
    let live = Arc::new(crate::reload::Live::default());
    crate::process::run_logged(
        &settings,
        "citadel",
        load,
        live.clone(),
        serve(config, live),
    )
}

async fn serve(config: Config, live: Arc<crate::reload::Live>) -> anyhow::Result<()> {
    // Installed before anything listens, so an early SIGTERM drains instead of killing.
    let shutdown = shutdown_signal()?;
    let metrics = MetricsHandle::install()?;
    let (core, remote_models) = crate::models::build_core(&config)?;
    let core = Arc::new(core);
    live.set_remote_models(remote_models);

    // Both listeners first, so port 0 works and a taken port fails before anything runs.
    let grpc_listener = bind("grpc.addr", config.grpc.addr).await?;
    let http_listener = bind("http.addr", config.http.addr).await?;
    let (grpc_addr, http_addr) = (grpc_listener.local_addr()?, http_listener.local_addr()?);
    // The LLM servers' model lists are read once before serving (each call at most 5 s).
    let llm = crate::llm::start(&config).await?;
    let policy = crate::auth::policy(&config).await?;
    live.set_policy(policy.clone());

    // Workflows: the store (migrated), its events, and the kinds, whose embedding calls go to
    // this process's own gRPC server unless configured elsewhere.
    let embeddings_url = match config.workflows.embeddings_url.as_str() {
        "" => loopback_url(grpc_addr),
        url => url.to_string(),
    };
    let workflows = Workflows::open(&config, &embeddings_url, config.workflows.concurrency).await?;
    let monitor_every = Duration::from_millis(config.workflows.monitor_interval_ms);
    let (database, monitor) = workflows.store.monitor(monitor_every);
    let stopping = CancellationToken::new();
    let workflow_api = WorkflowApi::new(workflows.core(&config), stopping.clone());
    let vectors = crate::vectors::build(&config, core.clone())?;
    let cores = Cores {
        embeddings: core.clone(),
        workflows: workflow_api,
        llm: llm.clone(),
        vectors: vectors.clone(),
    };

    // The mesh: health says NOT_SERVING until every model has loaded.
    let (health, health_service) = HealthControl::new(&core).await;
    tokio::spawn(health.clone().follow_workflows(database));
    let grpc_settings = grpc_settings(&config);
    // The REST edge calls the mesh in memory, through the same service stack the gRPC
    // listener serves, unless `grpc.upstream` names a remote mesh.
    let (channel, upstream) = match config.grpc.upstream.as_str() {
        "" => {
            let mesh = citadel_grpc::service(
                cores.clone(),
                health_service.clone(),
                policy.clone(),
                grpc_settings,
            )?;
            (
                citadel_gateway::in_process_channel(mesh),
                "in-process".to_string(),
            )
        }
        url => {
            let channel = citadel_gateway::remote_channel(url).context("grpc.upstream")?;
            (channel, url.to_string())
        }
    };
    let mut grpc = start_grpc(
        &config,
        cores,
        health_service,
        policy.clone(),
        grpc_listener,
    )?;
    // The edge's long-lived streams (WebSockets, agent runs) stop first at shutdown.
    let streams = citadel_gateway::LongStreams::default();
    let mut http = start_http(
        &config,
        channel,
        &upstream,
        metrics,
        policy,
        http_listener,
        streams.clone(),
    )?;
    tracing::info!(http_addr = %http_addr, grpc_addr = %grpc_addr, %upstream, "citadel listening");
    let readiness = tokio::spawn(announce_ready(
        health.clone(),
        core.clone(),
        llm.clone(),
        vectors,
        http_addr,
        grpc_addr,
    ));

    let worker = config
        .workflows
        .worker_enabled
        .then(|| workflows.spawn_worker(&config, config.workflows.concurrency));

    tokio::select! {
        () = shutdown => tracing::info!("shutdown requested: draining in-flight requests"),
        result = &mut http.task => bail!("the REST edge stopped: {result:?}"),
        result = &mut grpc.task => bail!("the gRPC server stopped: {result:?}"),
    }

    // Sockets and agent runs close at once (1001, RUN_ERROR), before the drain closes their
    // connections: they would hold it open, and should say goodbye.
    streams.close(STREAMS_GRACE).await;
    // Drain: refuse new work first, let the REST edge finish (it needs the mesh), then the mesh.
    let deadline = Instant::now() + Duration::from_millis(config.shutdown.drain_timeout_ms);
    // A model still loading must not turn health back to SERVING once draining has begun.
    readiness.abort();
    health.shutting_down().await;
    // The worker's running tasks may call this process's EmbeddingService: the mesh stays up
    // until they have finished or been given back.
    let worker_drained = async {
        if let Some((task, stop)) = worker {
            let _ = stop.send(());
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "the workflow worker failed while draining");
            }
        }
    };
    tokio::join!(http.drain(deadline), worker_drained);
    health.close().await;
    // Watch streams would hold the mesh's drain open until its deadline.
    stopping.cancel();
    // The worker may have used the whole drain budget: in-flight calls still get a moment.
    grpc.drain(deadline.max(Instant::now() + GRPC_DRAIN_FLOOR))
        .await;
    monitor.abort();
    core.close();
    llm.close();
    tracing::info!("citadel stopped");
    Ok(())
}

/// How long open WebSockets and agent runs get to say goodbye at shutdown.
const STREAMS_GRACE: Duration = Duration::from_secs(2);

/// The mesh's drain after the edge and the worker have finished: never less than this.
const GRPC_DRAIN_FLOOR: Duration = Duration::from_secs(2);

/// A server task and the switch that starts its graceful shutdown.
pub(crate) struct Running {
    name: &'static str,
    task: JoinHandle<anyhow::Result<()>>,
    stop: oneshot::Sender<()>,
}

impl Running {
    pub(crate) fn spawn<F>(
        name: &'static str,
        serve: impl FnOnce(oneshot::Receiver<()>) -> F,
    ) -> Running
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        Running {
            name,
            task: tokio::spawn(serve(stopped)),
            stop,
        }
    }

    /// Stops accepting, waits for in-flight requests until `deadline`, then gives up on them.
    pub(crate) async fn drain(mut self, deadline: Instant) {
        let _ = self.stop.send(());
        if tokio::time::timeout_at(deadline, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!(
                server = self.name,
                "requests still running after the drain timeout"
            );
            self.task.abort();
        }
    }
}

fn grpc_settings(config: &Config) -> GrpcSettings {
    GrpcSettings {
        max_message_bytes: config.grpc.max_message_bytes,
        request_body_timeout: Duration::from_millis(config.grpc.request_body_timeout_ms),
    }
}

fn start_grpc(
    config: &Config,
    cores: Cores,
    health: HealthServer<impl Health>,
    policy: Arc<citadel_auth::Policy>,
    listener: TcpListener,
) -> anyhow::Result<Running> {
    let settings = grpc_settings(config);
    let service = citadel_grpc::service::<hyper::body::Incoming>(cores, health, policy, settings)?;
    let tls = (&config.grpc.tls_cert, &config.grpc.tls_key);
    let limits = connection_limits("grpc", &config.grpc.connections, config, true, tls)?;
    Ok(Running::spawn("grpc", |stopped| async move {
        let stopped = async { stopped.await.unwrap_or_default() };
        Ok(citadel_conn::serve(listener, service, limits, stopped).await?)
    }))
}

/// `[ws]` and `[agui]` for the edge.
fn realtime(config: &Config, streams: citadel_gateway::LongStreams) -> citadel_gateway::Realtime {
    let ms = Duration::from_millis;
    citadel_gateway::Realtime {
        ws: citadel_gateway::WsSettings {
            max_message_bytes: config.ws.max_message_bytes,
            metrics_interval: ms(config.ws.metrics_interval_ms),
            ping_interval: ms(config.ws.ping_interval_ms),
            send_queue: config.ws.send_queue,
            feed_buffer: config.ws.feed_buffer,
        },
        agui: citadel_gateway::AguiSettings {
            default_model: config.agui.default_model.clone(),
            embedding_model: config.agui.embedding_model.clone(),
            max_iterations: config.agui.max_iterations,
            workflow_wait: ms(config.agui.workflow_wait_ms),
        },
        streams,
        shares: citadel_gateway::WatchShares::default(),
    }
}

fn start_http(
    config: &Config,
    channel: citadel_gateway::MeshChannel,
    upstream: &str,
    metrics: MetricsHandle,
    policy: Arc<citadel_auth::Policy>,
    listener: TcpListener,
    streams: citadel_gateway::LongStreams,
) -> anyhow::Result<Running> {
    let timeout = Duration::from_millis(config.http.request_timeout_ms);
    let completion_timeout = Duration::from_millis(config.llm.request_timeout_ms);
    let render = Arc::new(move || metrics.render());
    let state = AppState::new(
        channel,
        upstream,
        config.grpc.max_message_bytes,
        citadel_gateway::Deadlines {
            request: timeout,
            completion: completion_timeout,
        },
        render,
        policy,
        realtime(config, streams),
    );
    let settings = GatewaySettings {
        body_limit_bytes: config.http.body_limit_bytes,
        body_read_timeout: Duration::from_millis(config.http.body_read_timeout_ms),
        body_idle_timeout: Duration::from_millis(config.http.body_idle_timeout_ms),
        cors_allowed_origins: config.http.cors_allowed_origins.clone(),
    };
    let app = citadel_gateway::router(state, &settings);
    let tls = (&config.http.tls_cert, &config.http.tls_key);
    let limits = connection_limits("http", &config.http.connections, config, false, tls)?;
    Ok(Running::spawn("http", |stopped| async move {
        let stopped = async { stopped.await.unwrap_or_default() };
        Ok(citadel_conn::serve(listener, app, limits, stopped).await?)
    }))
}

pub(crate) fn connection_limits(
    name: &'static str,
    c: &ConnectionsConfig,
    config: &Config,
    http2_only: bool,
    tls: (&Option<std::path::PathBuf>, &Option<std::path::PathBuf>),
) -> anyhow::Result<citadel_conn::Limits> {
    let ms = Duration::from_millis;
    let tls = match tls {
        (Some(cert), Some(key)) => Some(
            citadel_conn::Tls::from_pem_files(cert, key, http2_only)
                .map_err(|e| anyhow::anyhow!("{name}.tls_cert / {name}.tls_key: {e}"))?,
        ),
        _ => None,
    };
    Ok(citadel_conn::Limits {
        name,
        max_connections: c.max_connections,
        header_read_timeout: ms(c.header_read_timeout_ms),
        idle_timeout: ms(c.idle_timeout_ms),
        write_timeout: ms(c.write_timeout_ms),
        keepalive_interval: ms(c.keepalive_interval_ms),
        keepalive_timeout: ms(c.keepalive_timeout_ms),
        max_concurrent_streams: c.max_concurrent_streams,
        drain_grace: ms(config.shutdown.drain_grace_ms),
        http2_only,
        // gRPC clients read statuses, not bodies; HTTP/1 clients get OpenAI's error shape.
        refusal_body: (!http2_only).then_some(citadel_gateway::refusal_body as _),
        tls,
    })
}

/// Turns health SERVING once every model has loaded, then logs "citadel ready" (tests and the
/// benchmark wait for that line, so it must not come before health says SERVING).
async fn announce_ready(
    health: HealthControl,
    core: Arc<EmbeddingCore>,
    llm: Arc<LlmCore>,
    vectors: Arc<citadel_vectors::Vectors>,
    http: SocketAddr,
    grpc: SocketAddr,
) {
    if health.clone().follow_readiness(core).await {
        tokio::spawn(health.clone().follow_llm(llm));
        tokio::spawn(health.follow_vectors(vectors));
        tracing::info!(http_addr = %http, grpc_addr = %grpc, "citadel ready");
    }
}

pub(crate) async fn bind(key: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {key} = {addr}: is another process using it?"))
}

/// This process's own gRPC server, reached over loopback even when bound to all interfaces.
pub(crate) fn loopback_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// SIGTERM or SIGINT. The handlers are registered now, not when the future is first polled.
pub(crate) fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
