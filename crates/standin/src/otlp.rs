//! A stand-in OpenTelemetry collector: OTLP/gRPC's own `TraceService` (the generated code
//! of `opentelemetry-proto`) on a loopback port, keeping every span it is sent, so a test can
//! follow one request's spans and their parent links. With `sink` it keeps only a count (for
//! benchmarks, where holding millions of spans would measure the stand-in).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as AnyValue,
};
use tokio::task::JoinHandle;

/// One received span, with ids as lowercase hex as W3C `traceparent` writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// String forms of the span's attributes.
    pub attributes: Vec<(String, String)>,
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<CollectedSpan>>,
    count: AtomicU64,
    keep: bool,
}

#[derive(Clone)]
struct Collector(Arc<Received>);

pub struct OtlpStandIn {
    pub addr: SocketAddr,
    received: Arc<Received>,
    task: JoinHandle<()>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value.as_ref()))
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(CollectedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                });
            }
        }
        self.0
            .count
            .fetch_add(spans.len() as u64, Ordering::Relaxed);
        if self.0.keep {
            let mut kept = self.0.spans.lock().unwrap_or_else(|e| e.into_inner());
            kept.extend(spans);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl OtlpStandIn {
    /// Serves on `addr` (port 0: a free one), keeping every span.
    pub async fn start(addr: SocketAddr) -> std::io::Result<OtlpStandIn> {
        Self::serve(addr, true).await
    }

    /// Serves on `addr`, counting spans without keeping them.
    pub async fn sink(addr: SocketAddr) -> std::io::Result<OtlpStandIn> {
        Self::serve(addr, false).await
    }

    async fn serve(addr: SocketAddr, keep: bool) -> std::io::Result<OtlpStandIn> {
        let received = Arc::new(Received {
            keep,
            ..Received::default()
        });
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(received.clone())))
            .serve_with_incoming(incoming);
        let task = tokio::spawn(async move {
            if let Err(e) = server.await {
                eprintln!("stand-in OTLP collector stopped: {e}");
            }
        });
        Ok(OtlpStandIn {
            addr,
            received,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far (none in `sink` mode).
    pub fn spans(&self) -> Vec<CollectedSpan> {
        let kept = self
            .received
            .spans
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        kept.clone()
    }

    /// How many spans were received.
    pub fn count(&self) -> u64 {
        self.received.count.load(Ordering::Relaxed)
    }
}

impl Drop for OtlpStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}
