//! Background probes: a real one-input embed call to each endpoint on an interval. A dead
//! endpoint's breaker opens before user traffic finds it, and an open one closes as soon as the
//! server answers again, without waiting for a user request to risk the half-open trial.

use std::{sync::Weak, time::Duration};

use crate::model::RemoteModel;

const PROBE_TEXT: &str = "citadel health probe";

/// Probes endpoint `i` of `model` until the model is dropped or closed.
pub(crate) async fn run(model: Weak<RemoteModel>, i: usize, interval: Duration) {
    loop {
        let Some(model) = model.upgrade() else { return };
        let body = model.request_body(&[PROBE_TEXT.to_string()], true);
        // `attempt` records the verdict on the endpoint's breaker and metrics. A probe gets
        // as long as a request would: a slow but working server is not a dead one.
        let timeout = model.attempt_timeout;
        if let Err(error) = model.attempt(i, body, 1, timeout, true).await {
            let endpoint = &model.endpoints[i].url;
            tracing::debug!(%endpoint, %error, "upstream probe failed");
        }
        drop(model);
        tokio::time::sleep(interval).await;
    }
}
