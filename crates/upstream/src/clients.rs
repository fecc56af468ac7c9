//! One pooled HTTP client per upstream host, shared by every model served from that host, so
//! keep-alive connections are reused across models.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

/// Builds clients on first use; cheap to clone.
#[derive(Clone)]
pub struct ClientPool {
    connect_timeout: Duration,
    max_idle_per_host: usize,
    clients: Arc<Mutex<HashMap<String, reqwest::Client>>>,
}

impl ClientPool {
    pub fn new(connect_timeout: Duration, max_idle_per_host: usize) -> Self {
        ClientPool {
            connect_timeout,
            max_idle_per_host,
            clients: Arc::default(),
        }
    }

    /// The client for `url`'s scheme, host and port.
    pub fn client_for(&self, url: &reqwest::Url) -> Result<reqwest::Client, reqwest::Error> {
        let origin = url.origin().ascii_serialization();
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&origin) {
            return Ok(client.clone());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .pool_max_idle_per_host(self.max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            // Small JSON exchanges: Nagle plus delayed ACKs would add ~40 ms to each.
            .tcp_nodelay(true)
            // Upstreams are named in configuration; an HTTP(S)_PROXY variable must not reroute
            // them silently.
            .no_proxy()
            .build()?;
        clients.insert(origin, client.clone());
        Ok(client)
    }
}
