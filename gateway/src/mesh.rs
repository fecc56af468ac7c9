//! How the edge reaches the mesh: one transport type for the tonic clients, either a real
//! channel to a remote mesh (`grpc.upstream`) or the mesh's own service stack called in
//! memory when both run in one process. Either way the call is the same gRPC call (framing,
//! `grpc-timeout`, metadata, status codes, every server layer): only the socket, HTTP/2 and
//! the thread wake-ups between two connections are gone in memory.

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use tonic::body::Body;
use tower::{Service, ServiceExt, util::BoxCloneSyncService};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The transport every client of the edge uses.
pub type MeshChannel = BoxCloneSyncService<Request<Body>, Response<Body>, MeshError>;

/// A transport failure (a concrete type: the handlers' futures must be provably `Send`, which
/// a bare boxed error in the client's bounds defeats).
#[derive(Debug)]
pub struct MeshError(BoxError);

impl std::fmt::Display for MeshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for MeshError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A lazily connecting channel to the mesh at `url` (`http://host:port`).
pub fn remote(url: &str) -> Result<MeshChannel, tonic::transport::Error> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy();
    Ok(BoxCloneSyncService::new(
        channel.map_err(|e| MeshError(Box::new(e))),
    ))
}

/// The mesh's service stack as the clients' transport: a call runs the server's layers and
/// handler inside the caller's task, so dropping the caller's future (a client that went
/// away) cancels the handler at once.
pub fn in_process<S, B>(service: S) -> MeshChannel
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let service = service
        .map_response(|response: Response<B>| response.map(Body::new))
        .map_err(|never: Infallible| -> MeshError { match never {} });
    BoxCloneSyncService::new(service)
}
