//! Who a caller is once its credential checked out, and what it carries into the services:
//! the handlers read a `Caller` from the request's extensions (ownership, model allow-lists,
//! token usage) and never look at credentials themselves.

use std::sync::Arc;

use crate::{
    limits::Limiter,
    permission::{Limits, Permission, Role},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// `auth.mode = "off"`: everyone, with every permission.
    Anonymous,
    /// A Clerk session token; `session` is its `sid`.
    Session { session: Option<String> },
    /// One of Citadel's API keys.
    ApiKey { key_id: String, name: String },
}

#[derive(Debug)]
pub struct Principal {
    /// The owner recorded on what it creates: the token's `sub`, or `key:<id>`.
    pub id: String,
    pub kind: PrincipalKind,
    pub role: Arc<Role>,
    /// Models a key is limited to; `None`: every model.
    pub models: Option<Vec<String>>,
    pub limits: Limits,
    /// When the credential stops being valid (Unix seconds): a session token's `exp`, for
    /// long-lived connections to close then. `None`: until revoked.
    pub expires_at: Option<u64>,
}

impl Principal {
    pub(crate) fn anonymous(role: Arc<Role>) -> Principal {
        Principal {
            id: "anonymous".to_string(),
            kind: PrincipalKind::Anonymous,
            role,
            models: None,
            limits: Limits::default(),
            expires_at: None,
        }
    }

    pub fn may(&self, permission: Permission) -> bool {
        self.role.permissions.contains(permission)
    }

    /// Whether it may use `model` (a key's allow-list; names as the caller wrote them).
    pub fn may_use_model(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|m| m == model))
    }

    /// The owner a workflow is recorded under; `None` with auth off (no owner, as before).
    pub fn owner(&self) -> Option<&str> {
        match self.kind {
            PrincipalKind::Anonymous => None,
            _ => Some(&self.id),
        }
    }

    /// Sees (and may act on) every principal's workflows.
    pub fn sees_all_workflows(&self) -> bool {
        self.kind == PrincipalKind::Anonymous || self.may(Permission::WorkflowsAll)
    }
}

/// A request's admitted caller, as the edges hand it to the services.
#[derive(Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    pub(crate) limiter: Option<Arc<Limiter>>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("principal", &self.principal.id)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// Debits tokens used (embedding inputs, prompt plus completion) from the caller's
    /// tokens-per-minute budget; later requests wait once it is spent. Off the request path.
    pub fn record_tokens(&self, tokens: u64) {
        let tpm = self.principal.limits.tpm;
        if let (Some(limiter), true) = (&self.limiter, tpm > 0 && tokens > 0) {
            limiter.debit_tokens(&self.principal.id, tpm, tokens);
        }
    }
}
