//! One pooled HTTP client per upstream origin (and connect timeout), shared by every model and
//! route served from it, so keep-alive connections are reused across them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

/// Builds clients on first use; cheap to clone.
#[derive(Clone)]
pub struct ClientPool {
    max_idle_per_host: usize,
    clients: Arc<Mutex<HashMap<(String, Duration), reqwest::Client>>>,
}

impl ClientPool {
    pub fn new(max_idle_per_host: usize) -> Self {
        ClientPool {
            max_idle_per_host,
            clients: Arc::default(),
        }
    }

    /// The client for `url`'s scheme, host and port.
    pub fn client_for(
        &self,
        url: &reqwest::Url,
        connect_timeout: Duration,
    ) -> Result<reqwest::Client, reqwest::Error> {
        let key = (url.origin().ascii_serialization(), connect_timeout);
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .pool_max_idle_per_host(self.max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            // Small JSON exchanges: Nagle plus delayed ACKs would add ~40 ms to each.
            .tcp_nodelay(true)
            // Upstreams are named in configuration; an HTTP(S)_PROXY variable must not reroute
            // them silently.
            .no_proxy()
            .build()?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}
