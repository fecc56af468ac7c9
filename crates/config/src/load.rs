//! Layering: embedded defaults, then the profile file, then `--config`, then `CITADEL_*`
//! variables, then command-line flags. Later layers win key by key.

use std::{net::SocketAddr, path::PathBuf};

use config::{Environment, File, FileFormat};

use crate::Config;

/// The defaults shipped inside the binary.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Prefix of the environment variables that override keys (`CITADEL_HTTP__ADDR`).
const ENV_PREFIX: &str = "CITADEL";
/// Variables with the prefix that Citadel reads for something other than a key: the file to
/// load, and the `cache warm` client's server and credential.
const NOT_KEYS: &[&str] = &["CITADEL_CONFIG", "CITADEL_SERVER", "CITADEL_API_KEY"];

/// Whether a variable sets a configuration key: `CITADEL_<SECTION>__<KEY>` (every key lives in
/// a section), or `CITADEL_ENV`, the one top-level key. Anything else with the prefix (the
/// fleet's hosts set `CITADEL_HOME`, for one) is not ours and must not stop the process; a
/// misspelt key inside a section still fails, naming it.
fn sets_a_key(name: &str) -> bool {
    name == "CITADEL_ENV"
        || name
            .strip_prefix("CITADEL_")
            .is_some_and(|rest| rest.contains("__") && !rest.starts_with('_'))
}

/// The `CITADEL_*` variables that are neither configuration keys nor read by Citadel: the
/// binary warns about each (a typo such as `CITADEL_HTTP_ADDR` with one underscore lands here).
pub fn ignored_vars(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut ignored: Vec<String> = vars
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("CITADEL_") && !sets_a_key(k) && !NOT_KEYS.contains(&k.as_str()))
        .collect();
    ignored.sort();
    ignored
}

/// What the command line adds on top of files and variables.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// Profile (`CITADEL_ENV`): loads `<config_dir>/<env>.toml` when set.
    pub env: Option<String>,
    /// Where profile files live; `config` relative to the working directory by default.
    pub config_dir: Option<PathBuf>,
    pub http_addr: Option<SocketAddr>,
    pub grpc_addr: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} not found{hint}")]
    FileMissing { path: PathBuf, hint: String },
    #[error("configuration error: {0}")]
    Parse(String),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// Loads and validates the configuration. `vars` are the process's environment variables
/// (passed in so tests need not touch the real environment).
pub fn load(
    overrides: &Overrides,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut builder =
        config::Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));

    if let Some(env) = overrides.env.as_deref().filter(|e| !e.is_empty()) {
        let dir = overrides
            .config_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("config"));
        let path = dir.join(format!("{env}.toml"));
        if !path.is_file() {
            let hint = format!(
                " (selected by CITADEL_ENV={env}; profiles live in {})",
                dir.display()
            );
            return Err(ConfigError::FileMissing { path, hint });
        }
        builder = builder.add_source(File::from(path).format(FileFormat::Toml));
    }
    if let Some(path) = &overrides.config_file {
        if !path.is_file() {
            let hint = " (given with --config or CITADEL_CONFIG)".to_string();
            return Err(ConfigError::FileMissing {
                path: path.clone(),
                hint,
            });
        }
        builder = builder.add_source(File::from(path.clone()).format(FileFormat::Toml));
    }

    let keyed_vars = vars.into_iter().filter(|(k, _)| sets_a_key(k)).collect();
    builder = builder.add_source(
        Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("http.cors_allowed_origins")
            .source(Some(keyed_vars)),
    );

    if let Some(addr) = overrides.http_addr {
        builder = set(builder, "http.addr", addr.to_string())?;
    }
    if let Some(addr) = overrides.grpc_addr {
        builder = set(builder, "grpc.addr", addr.to_string())?;
    }
    if let Some(env) = &overrides.env {
        builder = set(builder, "env", env.clone())?;
    }

    let cfg: Config = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError::Parse(e.to_string()))?;
    crate::validate::validate(&cfg)?;
    Ok(cfg)
}

type Builder = config::ConfigBuilder<config::builder::DefaultState>;

fn set(builder: Builder, key: &str, value: String) -> Result<Builder, ConfigError> {
    builder
        .set_override(key, value)
        .map_err(|e| ConfigError::Parse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| (n.to_string(), "x".to_string()))
            .collect()
    }

    #[test]
    fn only_section_keys_and_env_are_keys() {
        for key in [
            "CITADEL_ENV",
            "CITADEL_HTTP__ADDR",
            "CITADEL_AUTH__ROLES__OPS__RPM",
        ] {
            assert!(sets_a_key(key), "{key}");
        }
        for other in [
            "CITADEL_HOME",
            "CITADEL_HTTP_ADDR",
            "CITADEL___X",
            "CITADEL_",
            "HOME",
        ] {
            assert!(!sets_a_key(other), "{other}");
        }
        let ignored = ignored_vars(vars(&[
            "CITADEL_HOME",
            "CITADEL_CONFIG",
            "CITADEL_ENV",
            "CITADEL_HTTP_ADDR",
            "PATH",
        ]));
        assert_eq!(ignored, ["CITADEL_HOME", "CITADEL_HTTP_ADDR"]);
    }
}
