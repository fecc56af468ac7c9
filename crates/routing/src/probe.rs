//! Background probes: a real call to each endpoint on an interval, made by the adapter (a
//! one-input embed, a `GET /v1/models`). A dead endpoint's breaker opens before user traffic
//! finds it, and an open one closes as soon as the server answers again, without waiting for a
//! user request to risk the half-open trial.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use futures_util::future::BoxFuture;

use crate::{Attempt, AttemptError, Router};

/// One probe call; its verdict is recorded like a request's.
pub type Probe = Arc<dyn Fn(Attempt) -> BoxFuture<'static, Result<(), AttemptError>> + Send + Sync>;

/// Probes endpoint `i` of `router` until the router is dropped.
pub(crate) async fn run(
    router: Weak<Router>,
    i: usize,
    interval: Duration,
    limit: Duration,
    probe: Probe,
) {
    loop {
        let Some(router) = router.upgrade() else {
            return;
        };
        let result = router
            .attempt(router.name(), i, limit, true, |attempt| probe(attempt))
            .await;
        if let Err(error) = result {
            let endpoint = router.endpoint(i).url();
            tracing::debug!(%endpoint, %error, "upstream probe failed");
        }
        drop(router);
        tokio::time::sleep(interval).await;
    }
}
