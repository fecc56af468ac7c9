//! What the long-running commands (`serve`, `worker`) share: logging (and traces) as
//! configured, a multi-threaded runtime, configuration reload on SIGHUP, and one way to report
//! a fatal error (log line and stderr).

use std::{process::ExitCode, time::Duration};

use citadel_config::Config;
use citadel_telemetry::TraceSettings;

/// Runs `main` to completion on a fresh runtime; `name` says who failed.
pub fn run_logged(
    config: &Config,
    name: &str,
    load: crate::reload::Loader,
    live: std::sync::Arc<crate::reload::Live>,
    main: impl Future<Output = anyhow::Result<()>>,
) -> ExitCode {
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
    let log = &config.log;
    let json = log.format == citadel_config::LogFormat::Json;
    let t = &config.telemetry;
    let traces = (!t.otlp_endpoint.is_empty()).then(|| TraceSettings {
        endpoint: t.otlp_endpoint.clone(),
        sample_ratio: t.sample_ratio,
        service_name: t.service_name.clone(),
        export_delay: Duration::from_millis(t.export_delay_ms),
    });
    // The exporter's gRPC channel belongs to this runtime.
    let entered = runtime.enter();
    let mut traces = match citadel_telemetry::init_logging(json, &log.level, traces.as_ref()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SIGHUP reloads what can change in a running process (`reload.rs`); registered before
    // anything runs, since SIGHUP's default action ends the process.
    let reload = crate::reload::on_hangup(config.clone(), load, live);
    drop(entered);
    if citadel_telemetry::trace::enabled() {
        // Upstream servers (Ollama, vLLM) get the trace too.
        citadel_routing::set_header_injector(citadel_telemetry::trace::inject_headers);
    }
    runtime.spawn(reload);
    let result = runtime.block_on(main);
    // While the runtime still runs: the last spans go out through its channel.
    traces.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{name} failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
