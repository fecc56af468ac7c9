//! The one decision for every door: a credential (or none) and the permission a route needs in,
//! an admitted `Caller` (with its rate state) or a `Refusal` out. Each refusal is one audit line
//! (reason, principal when known, route; the span adds the request id; never the credential)
//! and a metric. Verified tokens are cached by their SHA-256 until they expire, and key records
//! for `auth.key_cache_ms`, so a repeated credential costs a lookup, not an RSA verify or a
//! database read. The role table (permissions and default limits) is replaced whole on a
//! configuration reload (`reload_roles`).

use std::{
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use citadel_config::{AuthConfig, AuthMode};
use sha2::{Digest, Sha256};

use crate::{
    Caller, Permission, Principal, PrincipalKind, RateState,
    audit::{audit, metrics},
    jwks::{self, Jwks, KeySource},
    keys::{self, KeyRecord, KeyStore},
    limits::{Limiter, LimiterStatus, Verdict},
    permission::{Limits, Roles},
    token::{SessionVerifier, TokenError},
};

/// Where rate limits are shared (`cache.redis_url`).
#[derive(Debug, Clone)]
pub struct SharedLimits {
    pub redis_url: String,
    pub key_prefix: String,
    pub timeout: Duration,
}

/// A request let in.
#[derive(Debug, Clone)]
pub struct Admission {
    pub caller: Caller,
    /// The caller's budgets, when it has limits (for `x-ratelimit-*`).
    pub rate: Option<RateState>,
}

/// A request turned away; the edges translate it (401/403/429/503, or the gRPC codes).
#[derive(Debug, Clone)]
pub enum Refusal {
    /// No credential, or one that is not valid (the same answer whatever the reason).
    Unauthenticated,
    /// The credential cannot be checked now (no signing key was ever fetched).
    Unavailable,
    Forbidden(String),
    RateLimited {
        state: RateState,
        retry_after: Duration,
    },
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::Unauthenticated => "missing or invalid credentials: send `Authorization: \
                Bearer <Clerk session token or Citadel API key>`"
                .to_string(),
            Refusal::Unavailable => {
                "credentials cannot be checked right now (the signing keys are unavailable); \
                 try again shortly"
                    .to_string()
            }
            Refusal::Forbidden(message) => message.clone(),
            Refusal::RateLimited { retry_after, .. } => format!(
                "rate limit reached for this principal; retry in {:.1}s",
                retry_after.as_secs_f64()
            ),
        }
    }
}

type TokenHash = [u8; 32];

/// What `[auth.roles]` and `auth.default_role` say, read per credential check.
struct RoleTable {
    roles: Roles,
    default_role: String,
}

pub struct Policy {
    mode: AuthMode,
    /// Behind a lock so a reload swaps it; readers clone the `Arc` and never wait on a writer
    /// for longer than that swap.
    roles: RwLock<Arc<RoleTable>>,
    sessions: Option<SessionVerifier>,
    keys: Option<KeyStore>,
    key_cache: moka::sync::Cache<String, Option<Arc<KeyRecord>>>,
    token_cache: moka::sync::Cache<TokenHash, (Arc<Principal>, u64)>,
    limiter: Arc<Limiter>,
    max_token_bytes: usize,
    protect_reflection: bool,
    protect_metrics: bool,
    anonymous: Caller,
}

impl Policy {
    /// `auth.mode = "off"`: everyone is an anonymous admin, nothing is counted.
    pub fn off() -> Arc<Policy> {
        let config = AuthConfig::default();
        let roles = Roles::builtin();
        let anonymous = Caller {
            principal: Arc::new(Principal::anonymous(roles.admin())),
            limiter: None,
        };
        Arc::new(Self::assemble(
            &config,
            roles,
            None,
            None,
            Limiter::local(),
            anonymous,
        ))
    }

    /// Builds the policy from `[auth]`; connects the key store (`database_url`) and starts the
    /// JWKS refresh when auth is required. Errors name the key to fix.
    pub async fn start(
        config: &AuthConfig,
        database_url: &str,
        shared: Option<SharedLimits>,
    ) -> Result<Arc<Policy>, String> {
        if config.mode == AuthMode::Off {
            let policy = Self::build(config, None, None, shared)?;
            return Ok(policy);
        }
        let keys = KeyStore::connect(database_url)
            .await
            .map_err(|e| format!("database.url: API keys cannot be read: {e}"))?;
        let source = if !config.public_key_pem.trim().is_empty() {
            Some(KeySource::Pem(jwks::pem_key(&config.public_key_pem)?))
        } else if !config.jwks_url.is_empty() {
            let jwks = Jwks::new(
                &config.jwks_url,
                Duration::from_secs(config.jwks_min_refetch_secs),
            )?;
            jwks.start(Duration::from_secs(config.jwks_refresh_secs));
            Some(KeySource::Jwks(jwks))
        } else {
            None
        };
        let sessions = source
            .map(|s| SessionVerifier::new(s, config))
            .transpose()?;
        Self::build(config, sessions, Some(keys), shared)
    }

    fn build(
        config: &AuthConfig,
        sessions: Option<SessionVerifier>,
        keys: Option<KeyStore>,
        shared: Option<SharedLimits>,
    ) -> Result<Arc<Policy>, String> {
        let roles = Roles::from_config(config)?;
        let limiter = match &shared {
            Some(s) => Limiter::new(Some(&s.redis_url), &s.key_prefix, s.timeout)?,
            None => Limiter::local(),
        };
        let anonymous = Caller {
            principal: Arc::new(Principal::anonymous(roles.admin())),
            limiter: None,
        };
        Ok(Arc::new(Self::assemble(
            config, roles, sessions, keys, limiter, anonymous,
        )))
    }

    fn assemble(
        config: &AuthConfig,
        roles: Roles,
        sessions: Option<SessionVerifier>,
        keys: Option<KeyStore>,
        limiter: Limiter,
        anonymous: Caller,
    ) -> Policy {
        Policy {
            mode: config.mode,
            roles: RwLock::new(Arc::new(RoleTable {
                roles,
                default_role: config.default_role.clone(),
            })),
            sessions,
            keys,
            key_cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_millis(config.key_cache_ms.max(1)))
                .build(),
            token_cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                // Clerk's tokens live 60 s; each entry is also checked against its own `exp`.
                .time_to_live(Duration::from_secs(120))
                .build(),
            limiter: {
                let limiter = Arc::new(limiter);
                limiter.start_flush();
                limiter
            },
            max_token_bytes: config.max_token_bytes,
            protect_reflection: config.protect_reflection,
            protect_metrics: config.protect_metrics,
            anonymous,
        }
    }

    pub fn is_off(&self) -> bool {
        self.mode == AuthMode::Off
    }

    pub fn protects_reflection(&self) -> bool {
        !self.is_off() && self.protect_reflection
    }

    pub fn protects_metrics(&self) -> bool {
        !self.is_off() && self.protect_metrics
    }

    pub fn key_store(&self) -> Option<&KeyStore> {
        self.keys.as_ref()
    }

    fn role_table(&self) -> Arc<RoleTable> {
        Arc::clone(&self.roles.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Applies a reloaded `[auth]`'s roles, their permissions and default limits, and
    /// `default_role`, to every request checked from now on. Verified tokens are forgotten, so
    /// a session's next request gets its role as it is now; an API key's record already is
    /// re-read per request. An error names the key, and the table in force stays.
    pub fn reload_roles(&self, config: &AuthConfig) -> Result<(), String> {
        let roles = Roles::from_config(config)?;
        let table = Arc::new(RoleTable {
            roles,
            default_role: config.default_role.clone(),
        });
        *self.roles.write().unwrap_or_else(PoisonError::into_inner) = table;
        self.token_cache.invalidate_all();
        Ok(())
    }

    /// For `/health/detailed`: where limits are counted and whether Redis fell back.
    pub fn limiter_status(&self) -> LimiterStatus {
        self.limiter.status()
    }

    /// Decides a request for `route` needing `permission` (`None`: any valid caller).
    pub async fn admit(
        &self,
        credential: Option<&str>,
        permission: Option<Permission>,
        route: &str,
    ) -> Result<Admission, Refusal> {
        if self.is_off() {
            return Ok(Admission {
                caller: self.anonymous.clone(),
                rate: None,
            });
        }
        let principal = match self.authenticate(credential).await {
            Ok(p) => p,
            Err((reason, refusal)) => {
                audit(reason, None, route);
                return Err(refusal);
            }
        };
        if let Some(permission) = permission.filter(|p| !principal.may(*p)) {
            audit("permission_denied", Some(&principal.id), route);
            return Err(Refusal::Forbidden(format!(
                "role `{}` does not permit `{}`",
                principal.role.name,
                permission.name()
            )));
        }
        let caller = Caller {
            principal,
            limiter: Some(Arc::clone(&self.limiter)),
        };
        let limits = caller.principal.limits;
        if limits.is_unlimited() || !permission.is_some_and(Permission::is_metered) {
            return Ok(Admission { caller, rate: None });
        }
        match self.limiter.admit(&caller.principal.id, limits).await {
            Verdict::Allowed(state) => Ok(Admission {
                caller,
                rate: Some(state),
            }),
            Verdict::Limited { state, retry_after } => {
                audit("rate_limited", Some(&caller.principal.id), route);
                metrics().rate_limited.add(1, &[]);
                Err(Refusal::RateLimited { state, retry_after })
            }
        }
    }

    async fn authenticate(
        &self,
        credential: Option<&str>,
    ) -> Result<Arc<Principal>, (&'static str, Refusal)> {
        let unauthenticated = |reason| (reason, Refusal::Unauthenticated);
        let credential = credential
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or(unauthenticated("missing_credentials"))?;
        if credential.len() > self.max_token_bytes {
            return Err(unauthenticated("oversized_credentials"));
        }
        if credential.starts_with(keys::KEY_PREFIX) {
            return self.api_key(credential).await;
        }
        let digest: TokenHash = Sha256::digest(credential.as_bytes()).into();
        let now = crate::token::now_secs();
        if let Some((principal, expires_at)) = self.token_cache.get(&digest) {
            if expires_at > now {
                return Ok(principal);
            }
            self.token_cache.invalidate(&digest);
            return Err(unauthenticated("expired"));
        }
        let sessions = self
            .sessions
            .as_ref()
            .ok_or(unauthenticated("sessions_not_configured"))?;
        let session = sessions.verify(credential).await.map_err(|e| match e {
            TokenError::KeysUnavailable => (e.reason(), Refusal::Unavailable),
            e => unauthenticated(e.reason()),
        })?;
        let table = self.role_table();
        let role_name = session.role.as_deref().unwrap_or(&table.default_role);
        let role = table.roles.get(role_name).ok_or_else(|| {
            (
                "unknown_role",
                Refusal::Forbidden(format!("role `{role_name}` is not known here")),
            )
        })?;
        let principal = Arc::new(Principal {
            id: session.subject,
            kind: PrincipalKind::Session {
                session: session.session,
            },
            limits: role.limits,
            role,
            models: None,
            expires_at: Some(session.expires_at),
        });
        let entry = (Arc::clone(&principal), session.expires_at);
        self.token_cache.insert(digest, entry);
        Ok(principal)
    }

    async fn api_key(&self, key: &str) -> Result<Arc<Principal>, (&'static str, Refusal)> {
        let unauthenticated = |reason| (reason, Refusal::Unauthenticated);
        let id = keys::key_id(key).ok_or(unauthenticated("malformed_key"))?;
        let store = self
            .keys
            .as_ref()
            .ok_or(unauthenticated("keys_not_configured"))?;
        let record = match self.key_cache.get(id) {
            Some(record) => record,
            None => {
                let record = store
                    .find(id)
                    .await
                    .map_err(|_| ("key_store_unavailable", Refusal::Unavailable))?
                    .map(Arc::new);
                self.key_cache.insert(id.to_string(), record.clone());
                record
            }
        };
        let record = record.ok_or(unauthenticated("unknown_key"))?;
        if !keys::same_hash(&keys::hash(key), &record.secret_hash) {
            return Err(unauthenticated("bad_key"));
        }
        if !record.usable_at(keys::now_us()) {
            let reason = if record.revoked_us.is_some() {
                "revoked_key"
            } else {
                "expired_key"
            };
            return Err(unauthenticated(reason));
        }
        let role = self.role_table().roles.get(&record.role).ok_or_else(|| {
            (
                "unknown_role",
                Refusal::Forbidden(format!("role `{}` is not known here", record.role)),
            )
        })?;
        let own = |v: i64, default: u64| match u64::try_from(v) {
            Ok(0) | Err(_) => default,
            Ok(v) => v,
        };
        Ok(Arc::new(Principal {
            id: format!("key:{}", record.id),
            kind: PrincipalKind::ApiKey {
                key_id: record.id.clone(),
                name: record.name.clone(),
            },
            limits: Limits {
                rpm: own(record.rpm, role.limits.rpm),
                tpm: own(record.tpm, role.limits.tpm),
            },
            models: record.model_list(),
            role,
            expires_at: None,
        }))
    }
}

/// The part of a header value that is the credential: `Bearer <token>`, or a bare token
/// (Clerk's SDKs accept both). Other schemes carry none.
pub fn bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => Some(rest.trim()),
        Some(_) => None,
        None => Some(value),
    }
}
