//! The one policy for every door of Citadel: who a caller is, what its role permits and how
//! fast it may go.
//!
//! This crate owns credentials (Clerk session tokens verified against the instance's JWKS or
//! PEM, with no call per request; Citadel's API keys, stored as hashes), roles and permissions,
//! the principal handed to the services, and rate limits (requests and tokens per minute, in
//! Redis or in process). The REST and gRPC edges call `Policy::admit` with a route's
//! permission and translate its answer; they decide nothing themselves. It must not know HTTP,
//! gRPC or any service: it sees a credential string and a permission.

#![forbid(unsafe_code)]

mod audit;
mod jwks;
mod keys;
mod limits;
mod permission;
mod policy;
mod principal;
mod token;

pub use keys::{KEY_PREFIX, KeyError, KeyRecord, KeyStore, NewKey};
pub use limits::{LimiterStatus, RateState};
pub use permission::{Limits, Permission, Permissions, Role, Roles};
pub use policy::{Admission, Policy, Refusal, SharedLimits, bearer};
pub use principal::{Caller, Principal, PrincipalKind};
