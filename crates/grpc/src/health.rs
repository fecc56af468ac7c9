//! `grpc.health.v1.Health`, tied to model readiness: NOT_SERVING until every model has loaded,
//! SERVING while it runs, NOT_SERVING again once shutdown begins.

use std::sync::Arc;

use citadel_embeddings::EmbeddingCore;
use citadel_proto::v1::embedding_service_server::EmbeddingServiceServer;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::EmbeddingApi;

/// The overall server health, per the gRPC health-checking spec.
const OVERALL: &str = "";

#[derive(Clone)]
pub struct HealthControl {
    reporter: HealthReporter,
}

impl HealthControl {
    /// Creates the health service with every service NOT_SERVING.
    pub async fn new() -> (
        Self,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    ) {
        let (reporter, service) = tonic_health::server::health_reporter();
        let control = HealthControl { reporter };
        control.set_all(ServingStatus::NotServing).await;
        (control, service)
    }

    /// Marks the services SERVING once every model is ready and returns true; returns false,
    /// leaving them NOT_SERVING, if one failed to load (the failure is logged and shown on
    /// /health/detailed).
    pub async fn follow_readiness(self, core: Arc<EmbeddingCore>) -> bool {
        match core.wait_ready().await {
            Ok(()) => {
                self.set_all(ServingStatus::Serving).await;
                true
            }
            Err((model, reason)) => {
                tracing::error!(%model, %reason, "a model failed to load; health stays NOT_SERVING");
                false
            }
        }
    }

    /// First step of shutdown: probes and watchers see NOT_SERVING.
    pub async fn shutting_down(&self) {
        self.set_all(ServingStatus::NotServing).await;
    }

    /// Last step before the gRPC server drains: ends open `Watch` streams, which would
    /// otherwise hold the server open until the drain timeout.
    pub async fn close(&self) {
        let mut reporter = self.reporter.clone();
        reporter.clear_service_status(OVERALL).await;
        reporter.clear_service_status(service_name()).await;
    }

    async fn set_all(&self, status: ServingStatus) {
        self.reporter.set_service_status(OVERALL, status).await;
        self.reporter
            .set_service_status(service_name(), status)
            .await;
    }
}

fn service_name() -> &'static str {
    <EmbeddingServiceServer<EmbeddingApi> as tonic::server::NamedService>::NAME
}
