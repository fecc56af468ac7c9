//! Clerk session tokens, checked the way Clerk's own SDK does, only stricter where the JWT
//! BCP asks: a bounded size; three base64url parts; a header whose `alg` is in the allow-list
//! and matches its key's; no `crit`, no M2M `cat`, `typ` JWT when present; the signature
//! before any claim; then `exp` (required), `nbf` and `iat` with a small leeway, the exact
//! `iss`, `azp` among the authorized parties, `sub`. `jku`, `x5u` and embedded `jwk` headers
//! are never read. Every failure reads the same to the caller (no oracle); the reason goes to
//! the audit log.

use std::collections::HashSet;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde_json::Value;

use crate::jwks::{KeyMiss, KeySource};

/// Why a token was refused: for the audit log and metrics, never for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    Malformed,
    Algorithm,
    UnknownKey,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Party,
    Claims,
    /// No key was ever fetched: the token cannot be checked (503).
    KeysUnavailable,
}

impl TokenError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed_token",
            TokenError::Algorithm => "algorithm",
            TokenError::UnknownKey => "unknown_kid",
            TokenError::Signature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::Issuer => "issuer",
            TokenError::Party => "authorized_party",
            TokenError::Claims => "claims",
            TokenError::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// What a valid token says about its holder.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) subject: String,
    pub(crate) session: Option<String>,
    /// The role claim, `org:` prefix stripped; `None`: the default role.
    pub(crate) role: Option<String>,
    pub(crate) expires_at: u64,
}

pub(crate) struct SessionVerifier {
    pub(crate) keys: KeySource,
    issuer: String,
    parties: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    role_claim: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    cat: Option<Value>,
    #[serde(default)]
    crit: Option<Value>,
}

impl SessionVerifier {
    pub(crate) fn new(
        keys: KeySource,
        config: &citadel_config::AuthConfig,
    ) -> Result<SessionVerifier, String> {
        let algorithms = config
            .algorithms
            .iter()
            .map(|a| {
                a.parse::<Algorithm>()
                    .map_err(|_| format!("auth.algorithms: unknown algorithm `{a}`"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let role_claim = match config.role_claim.trim() {
            "" => Vec::new(),
            path => path.split('.').map(str::to_string).collect(),
        };
        Ok(SessionVerifier {
            keys,
            issuer: config.issuer.clone(),
            parties: config.authorized_parties.clone(),
            algorithms,
            leeway: config.leeway_secs,
            role_claim,
        })
    }

    pub(crate) async fn verify(&self, token: &str) -> Result<Session, TokenError> {
        let parts: Vec<&str> = token.split('.').collect();
        let base64url = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if parts.len() != 3 || !parts.iter().all(|p| base64url(p)) {
            return Err(TokenError::Malformed);
        }
        let header = URL_SAFE_NO_PAD
            .decode(parts[0])
            .ok()
            .and_then(|raw| serde_json::from_slice::<Header>(&raw).ok())
            .ok_or(TokenError::Malformed)?;
        let typ_ok = header
            .typ
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case("JWT"));
        if header.crit.is_some() || header.cat.is_some() || !typ_ok {
            return Err(TokenError::Malformed);
        }
        let alg = header
            .alg
            .parse::<Algorithm>()
            .ok()
            .filter(|a| self.algorithms.contains(a))
            .ok_or(TokenError::Algorithm)?;
        let key = self
            .keys
            .key(header.kid.as_deref())
            .await
            .map_err(|miss| match miss {
                KeyMiss::Unknown => TokenError::UnknownKey,
                KeyMiss::Unavailable => TokenError::KeysUnavailable,
            })?;
        // Each key is used with exactly one algorithm (RFC 8725 §3.1).
        if key.alg.is_some_and(|k| k != alg) {
            return Err(TokenError::Algorithm);
        }
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::from(["exp".to_string(), "sub".to_string()]);
        // `iss` is compared below, after the signature, as every other claim.
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, &validation)
                .map_err(|e| match e.kind() {
                    ErrorKind::InvalidSignature | ErrorKind::InvalidKeyFormat => {
                        TokenError::Signature
                    }
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                    ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
                    ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                        TokenError::Claims
                    }
                    _ => TokenError::Malformed,
                })?;
        self.session(&data.claims)
    }

    fn session(&self, claims: &serde_json::Map<String, Value>) -> Result<Session, TokenError> {
        let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
        if str_claim("iss") != Some(self.issuer.as_str()) {
            return Err(TokenError::Issuer);
        }
        if !self.parties.is_empty() {
            let azp = str_claim("azp").ok_or(TokenError::Party)?;
            if !self.parties.iter().any(|p| p == azp) {
                return Err(TokenError::Party);
            }
        }
        let now = now_secs();
        match claims.get("iat") {
            None => {}
            Some(iat) => match iat.as_u64() {
                Some(iat) if iat <= now + self.leeway => {}
                Some(_) => return Err(TokenError::NotYetValid),
                None => return Err(TokenError::Claims),
            },
        }
        let subject = str_claim("sub")
            .filter(|s| !s.is_empty())
            .ok_or(TokenError::Claims)?;
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(TokenError::Claims)?;
        Ok(Session {
            subject: subject.to_string(),
            session: str_claim("sid").map(str::to_string),
            role: self.role(claims),
            expires_at: expires_at + self.leeway,
        })
    }

    /// `auth.role_claim`'s path, else Clerk's v2 `o.rol`, else v1 `org_role`.
    fn role(&self, claims: &serde_json::Map<String, Value>) -> Option<String> {
        let found = if self.role_claim.is_empty() {
            claims
                .get("o")
                .and_then(|o| o.get("rol"))
                .or_else(|| claims.get("org_role"))
        } else {
            let mut at = claims.get(&self.role_claim[0]);
            for step in &self.role_claim[1..] {
                at = at.and_then(|v| v.get(step));
            }
            at
        };
        let role = found.and_then(Value::as_str)?;
        let role = role.strip_prefix("org:").unwrap_or(role);
        (!role.is_empty()).then(|| role.to_string())
    }
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
