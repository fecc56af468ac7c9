//! The wire contract of the mesh: Rust types and tonic stubs generated from `proto/` by the
//! workspace's root `build.rs`, the encoded descriptor set for server reflection, and the
//! metadata keys both edges agree on.
//!
//! This crate owns nothing but the contract. Conversions to and from domain types live in the
//! edges (`citadel-grpc`, `citadel-gateway`), never here, so the contract stays free of logic;
//! the one exception is `json`, protobuf's own JSON mapping of `Struct`, which both edges and the
//! workflow store share.

pub mod codec;
pub mod json;

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("citadel.v1");
}

/// Encoded `FileDescriptorSet` of every citadel proto, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/citadel_descriptor.bin"));

/// gRPC metadata keys that are part of the contract (see proto/citadel/v1/embeddings.proto).
pub mod metadata {
    /// Correlates one request across the REST edge, the mesh and the logs.
    pub const REQUEST_ID: &str = "x-request-id";
    /// Longest request id either edge accepts from a caller.
    pub const MAX_REQUEST_ID_BYTES: usize = 128;

    /// A caller's request id is kept (logged, echoed, forwarded) only when it is 1 to 128
    /// visible ASCII characters: a 64 KB one once broke the edge's channel to the mesh.
    pub fn acceptable_request_id(id: &[u8]) -> bool {
        (1..=MAX_REQUEST_ID_BYTES).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
    }
    /// Trailer of an INVALID_ARGUMENT naming the offending request field.
    pub const ERROR_PARAM: &str = "x-citadel-error-param";
    /// Trailer of an INVALID_ARGUMENT with OpenAI's error code (`context_length_exceeded`).
    pub const ERROR_CODE: &str = "x-citadel-error-code";
    /// Trailer of a RESOURCE_EXHAUSTED or UNAVAILABLE: seconds to wait before retrying.
    pub const RETRY_AFTER: &str = "retry-after";
    /// Trailer of an INTERNAL caused by an upstream server's answer: which server (the REST
    /// edge answers 502 Bad Gateway).
    pub const UPSTREAM: &str = "x-citadel-upstream";
    /// Trailer of a Watch that ABORTED because the watcher fell behind: how many changes it
    /// missed.
    pub const MISSED: &str = "x-citadel-missed";
    /// The caller's credential: `Bearer <Clerk session token or Citadel API key>`.
    pub const AUTHORIZATION: &str = "authorization";
    /// OpenAI's rate-limit headers, sent as initial metadata (or trailers of a refusal) when
    /// the caller has limits; the REST edge copies them onto its answer.
    pub const RATE_LIMIT: [&str; 6] = [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ];
}
