//! `[auth]`: who may call Citadel. Clerk session tokens (JWTs verified against the instance's
//! keys, with no call per request), Citadel's own API keys, roles and their rate limits.
//! Permission names are checked by `citadel-auth` when the policy is built (and by
//! `citadel config check`), so this crate stays free of the policy's vocabulary.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every caller is an anonymous admin: the embedded default, for a laptop.
    #[default]
    Off,
    /// Every route and RPC but the probes needs a valid token or key.
    Required,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Clerk's `<frontend-api>/.well-known/jwks.json`; read at start-up, every
    /// `jwks_refresh_secs`, and when a token names an unknown `kid` (at most once per
    /// `jwks_min_refetch_secs`).
    pub jwks_url: String,
    /// Clerk's "JWKS Public Key" PEM (networkless verification), instead of `jwks_url`.
    pub public_key_pem: String,
    /// The exact `iss` of valid tokens: the instance's Frontend API URL.
    pub issuer: String,
    /// When set, a token's `azp` must be one of these origins (a token without `azp` is
    /// refused).
    pub authorized_parties: Vec<String>,
    /// Signature algorithms accepted in a token's header.
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat` (Clerk's tokens live 60 s).
    pub leeway_secs: u64,
    /// A dotted path to the role claim (e.g. `metadata.role`); empty: Clerk's `o.rol` (v2),
    /// then `org_role` (v1).
    pub role_claim: String,
    /// The role of a token that carries none.
    pub default_role: String,
    pub jwks_refresh_secs: u64,
    pub jwks_min_refetch_secs: u64,
    /// Longer credentials are refused before any decoding.
    pub max_token_bytes: usize,
    /// An API key's record is re-read this often, so a revoke reaches every process in time.
    pub key_cache_ms: u64,
    /// gRPC reflection needs a credential too.
    pub protect_reflection: bool,
    /// `/metrics` needs a credential (permission `metrics:read`).
    pub protect_metrics: bool,
    /// Roles beyond (or replacing) the built-in `viewer`, `member` and `admin`.
    pub roles: BTreeMap<String, RoleConfig>,
}

/// One role: what it may do and its default limits (a key's own limits win).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleConfig {
    /// Permission names (`embeddings`, `completions`, `workflows:write`, ... or `*`); empty
    /// keeps a built-in role's own.
    pub permissions: Vec<String>,
    /// Requests per minute per principal; 0: unlimited.
    pub rpm: u64,
    /// Tokens per minute per principal; 0: unlimited.
    pub tpm: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Off,
            jwks_url: String::new(),
            public_key_pem: String::new(),
            issuer: String::new(),
            authorized_parties: Vec::new(),
            algorithms: vec!["RS256".to_string()],
            leeway_secs: 5,
            role_claim: String::new(),
            default_role: "viewer".to_string(),
            jwks_refresh_secs: 300,
            jwks_min_refetch_secs: 30,
            max_token_bytes: 8192,
            key_cache_ms: 2000,
            protect_reflection: false,
            protect_metrics: false,
            roles: BTreeMap::new(),
        }
    }
}
