//! The process-wide ONNX Runtime environment, loaded from a shared library at start-up.

use std::{path::Path, sync::OnceLock};

use crate::OnnxError;

static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();

/// Loads `libonnxruntime` from `library` once per process. Later calls are no-ops.
pub(crate) fn init_runtime(library: &Path) -> Result<(), OnnxError> {
    if ENVIRONMENT.get().is_some() {
        return Ok(());
    }
    let shown = library.display().to_string();
    if !library.is_file() {
        return Err(OnnxError::RuntimeMissing(shown));
    }
    let load_error = |message: String| OnnxError::RuntimeLoad {
        path: shown.clone(),
        message,
    };
    let environment = ort::init_from(library)
        .map_err(|e| load_error(e.to_string()))?
        .with_name("citadel")
        .with_telemetry(false)
        .build()
        .map_err(|e| load_error(e.to_string()))?;
    let _ = ENVIRONMENT.set(environment);
    Ok(())
}

/// The environment set up by [`init_runtime`], if it ran.
pub(crate) fn environment() -> Option<&'static ort::environment::Environment> {
    ENVIRONMENT.get()
}
