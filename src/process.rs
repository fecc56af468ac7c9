//! What the long-running commands (`serve`, `worker`) share: logging as configured, a
//! multi-threaded runtime, and one way to report a fatal error (log line and stderr).

use std::process::ExitCode;

use citadel_config::LogConfig;

/// Runs `main` to completion on a fresh runtime; `name` says who failed.
pub fn run_logged(
    log: &LogConfig,
    name: &str,
    main: impl Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let json = log.format == citadel_config::LogFormat::Json;
    if let Err(e) = citadel_telemetry::init_logging(json, &log.level) {
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
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{name} failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
