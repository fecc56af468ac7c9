//! HTTP caching headers of the embedding routes: `Cache-Control: no-cache` (compute afresh,
//! then store) and `no-store` (neither read nor store) choose the request's cache policy, and
//! `x-citadel-cache-hits` tells how many inputs were served from the cache.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header::CACHE_CONTROL};
use citadel_proto::v1;

pub(crate) const CACHE_HITS: HeaderName = HeaderName::from_static("x-citadel-cache-hits");

/// The policy a request's `Cache-Control` asks for; `no-store` wins over `no-cache`.
pub(crate) fn policy(headers: &HeaderMap) -> v1::CachePolicy {
    let directives = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase());
    let mut policy = v1::CachePolicy::Default;
    for directive in directives {
        match directive.as_str() {
            "no-store" => return v1::CachePolicy::NoStore,
            "no-cache" => policy = v1::CachePolicy::NoCache,
            _ => {}
        }
    }
    policy
}

/// Response headers saying how many inputs came from the cache.
pub(crate) type CacheHits = [(HeaderName, HeaderValue); 1];

/// The `x-citadel-cache-hits` header for a response that served `cached` inputs from cache.
pub(crate) fn hits(cached: u32) -> CacheHits {
    [(CACHE_HITS, HeaderValue::from(cached))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_directives_case_blind_with_no_store_winning() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CACHE_CONTROL, HeaderValue::from_static(value));
            policy(&headers)
        };
        assert_eq!(policy(&HeaderMap::new()), v1::CachePolicy::Default);
        assert_eq!(with("No-Cache"), v1::CachePolicy::NoCache);
        assert_eq!(with("max-age=0, no-store"), v1::CachePolicy::NoStore);
        assert_eq!(with("no-cache, no-store"), v1::CachePolicy::NoStore);
        assert_eq!(with("max-age=60"), v1::CachePolicy::Default);
    }
}
