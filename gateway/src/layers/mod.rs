//! The edge's middleware, one concern per file, assembled in `lib.rs`.

pub mod auth;
pub mod cors;
pub mod http_metrics;
pub mod request_body;
pub mod sanitize;
pub mod trace;
