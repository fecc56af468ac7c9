//! `grpc.health.v1.Health`, tied to model readiness.
//!
//! - `""` and `citadel.v1.EmbeddingService`: NOT_SERVING until every model has loaded, SERVING
//!   while the process runs, NOT_SERVING again once shutdown begins. An upstream outage does not
//!   flip them: restarting this process would not bring Ollama back.
//! - `citadel.v1.EmbeddingService/<model>`, one per model: follows that model's live state, so
//!   it goes NOT_SERVING only when none of the model's servers can answer.
//! - `citadel.v1.CompletionService`: SERVING with the process, like the embedding service;
//!   `citadel.v1.CompletionService/<model>`, one per LLM model its servers list: NOT_SERVING
//!   when every server of the model has an open breaker (or stopped listing it).
//! - `citadel.v1.VectorService`: SERVING while the vector store answers (the embedded store's
//!   directory is there; Qdrant's health check passes), re-checked every few seconds.
//! - `citadel.v1.WorkflowService`: SERVING while the workflow database answers the queue
//!   monitor's probe. `citadel worker` publishes it (and `""`) alone: `worker_health`.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use citadel_embeddings::{EmbeddingCore, ModelState};
use citadel_llm::LlmCore;
use citadel_proto::v1::{
    completion_service_server::SERVICE_NAME as COMPLETION_SERVICE,
    embedding_service_server::EmbeddingServiceServer,
    vector_service_server::SERVICE_NAME as VECTOR_SERVICE,
    workflow_service_server::SERVICE_NAME as WORKFLOW_SERVICE,
};
use citadel_workflows::DatabaseState;
use tokio::sync::watch;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::EmbeddingApi;

/// The overall server health, per the gRPC health-checking spec.
const OVERALL: &str = "";

#[derive(Clone)]
pub struct HealthControl {
    reporter: HealthReporter,
    models: Vec<String>,
    /// `citadel.v1.CompletionService/<model>` names published so far.
    llm_services: Arc<Mutex<BTreeSet<String>>>,
    /// Set once shutdown begins: model watchers must not turn anything back to SERVING.
    closing: Arc<AtomicBool>,
}

/// LLM models come and go with discovery: their health is re-read this often, and at once
/// when a breaker changes.
const LLM_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// How often the vector store is asked whether it answers.
const VECTOR_HEALTH_INTERVAL: Duration = Duration::from_secs(2);

impl HealthControl {
    /// Creates the health service with every service NOT_SERVING.
    pub async fn new(
        core: &EmbeddingCore,
    ) -> (
        Self,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    ) {
        let (reporter, service) = tonic_health::server::health_reporter();
        let models = core.models().into_iter().map(|m| m.info.name).collect();
        let control = HealthControl {
            reporter,
            models,
            llm_services: Arc::default(),
            closing: Arc::default(),
        };
        control.set_all(ServingStatus::NotServing).await;
        (control, service)
    }

    /// Marks the services SERVING once every model is ready, starts following each model's
    /// state, and returns true; returns false, leaving them NOT_SERVING, if one failed to load
    /// (the failure is logged and shown on /health/detailed).
    pub async fn follow_readiness(self, core: Arc<EmbeddingCore>) -> bool {
        if let Err((model, reason)) = core.wait_ready().await {
            tracing::error!(%model, %reason, "a model failed to load; health stays NOT_SERVING");
            return false;
        }
        if self.closing.load(Ordering::Acquire) {
            return false;
        }
        self.set(OVERALL, ServingStatus::Serving).await;
        self.set(service_name(), ServingStatus::Serving).await;
        // Shutdown may have begun while this was setting: its NOT_SERVING must win.
        if self.closing.load(Ordering::Acquire) {
            self.set_all(ServingStatus::NotServing).await;
            return false;
        }
        for model in &self.models {
            if let Some(states) = core.watch_state(model) {
                tokio::spawn(self.clone().follow_model(model.clone(), states));
            }
        }
        true
    }

    async fn follow_model(
        self,
        model: String,
        mut states: tokio::sync::watch::Receiver<ModelState>,
    ) {
        let service = model_service(&model);
        loop {
            let status = match &*states.borrow_and_update() {
                ModelState::Ready => ServingStatus::Serving,
                _ => ServingStatus::NotServing,
            };
            if self.closing.load(Ordering::Acquire) {
                return;
            }
            self.set(&service, status).await;
            // Shutdown may have begun while this was setting: its NOT_SERVING must win.
            if self.closing.load(Ordering::Acquire) {
                self.set(&service, ServingStatus::NotServing).await;
                return;
            }
            if states.changed().await.is_err() {
                return;
            }
        }
    }

    /// Publishes `citadel.v1.CompletionService` and one status per LLM model until shutdown.
    pub async fn follow_llm(self, llm: Arc<LlmCore>) {
        let mut changes = llm.fleet().map(|f| f.router().watch_state());
        self.set(COMPLETION_SERVICE, ServingStatus::Serving).await;
        // What was last published: Watch clients hear changes, not a repeat every tick.
        let mut published: BTreeMap<String, ServingStatus> = BTreeMap::new();
        loop {
            if self.closing.load(Ordering::Acquire) {
                return;
            }
            let models = llm.fleet().map(|f| f.models().models).unwrap_or_default();
            // A model no server lists any more is NOT_SERVING, not forgotten.
            let mut wanted: BTreeMap<String, ServingStatus> = published
                .keys()
                .map(|s| (s.clone(), ServingStatus::NotServing))
                .collect();
            for model in &models {
                let status = match model.state.as_str() {
                    "ready" => ServingStatus::Serving,
                    _ => ServingStatus::NotServing,
                };
                wanted.insert(llm_service(&model.id), status);
            }
            self.llm_services
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(wanted.keys().cloned());
            for (service, status) in wanted {
                if published.get(&service) != Some(&status) {
                    self.set(&service, status).await;
                    published.insert(service, status);
                }
            }
            if self.closing.load(Ordering::Acquire) {
                self.set_all(ServingStatus::NotServing).await;
                return;
            }
            let tick = tokio::time::sleep(LLM_HEALTH_INTERVAL);
            match &mut changes {
                Some(changes) => {
                    tokio::select! {
                        _ = changes.changed() => {}
                        () = tick => {}
                    }
                }
                None => tick.await,
            }
        }
    }

    /// Publishes `citadel.v1.VectorService` from the store's health until shutdown.
    pub async fn follow_vectors(self, vectors: Arc<citadel_vectors::Vectors>) {
        let mut published = None;
        loop {
            let health = vectors.health().await;
            let status = match health.ok {
                true => ServingStatus::Serving,
                false => ServingStatus::NotServing,
            };
            if self.closing.load(Ordering::Acquire) {
                return;
            }
            if published != Some(status) {
                if !health.ok {
                    tracing::warn!(store = health.kind, detail = %health.detail, "the vector store does not answer");
                }
                self.set(VECTOR_SERVICE, status).await;
                published = Some(status);
            }
            if self.closing.load(Ordering::Acquire) {
                self.set(VECTOR_SERVICE, ServingStatus::NotServing).await;
                return;
            }
            tokio::time::sleep(VECTOR_HEALTH_INTERVAL).await;
        }
    }

    /// Publishes `citadel.v1.WorkflowService` from the workflow database's state until
    /// shutdown.
    pub async fn follow_workflows(self, mut states: watch::Receiver<DatabaseState>) {
        loop {
            let status = database_status(&states.borrow_and_update());
            if self.closing.load(Ordering::Acquire) {
                return;
            }
            self.set(WORKFLOW_SERVICE, status).await;
            if self.closing.load(Ordering::Acquire) {
                self.set(WORKFLOW_SERVICE, ServingStatus::NotServing).await;
                return;
            }
            if states.changed().await.is_err() {
                return;
            }
        }
    }

    fn llm_services(&self) -> Vec<String> {
        let known = self.llm_services.lock().unwrap_or_else(|e| e.into_inner());
        known.iter().cloned().collect()
    }

    /// First step of shutdown: probes and watchers see NOT_SERVING.
    pub async fn shutting_down(&self) {
        self.closing.store(true, Ordering::Release);
        self.set_all(ServingStatus::NotServing).await;
    }

    /// Last step before the gRPC server drains: ends open `Watch` streams, which would
    /// otherwise hold the server open until the drain timeout.
    pub async fn close(&self) {
        let mut reporter = self.reporter.clone();
        reporter.clear_service_status(OVERALL).await;
        reporter.clear_service_status(service_name()).await;
        for model in &self.models {
            reporter.clear_service_status(&model_service(model)).await;
        }
        reporter.clear_service_status(COMPLETION_SERVICE).await;
        reporter.clear_service_status(VECTOR_SERVICE).await;
        reporter.clear_service_status(WORKFLOW_SERVICE).await;
        for service in self.llm_services() {
            reporter.clear_service_status(&service).await;
        }
    }

    async fn set_all(&self, status: ServingStatus) {
        self.set(OVERALL, status).await;
        self.set(service_name(), status).await;
        for model in &self.models {
            self.set(&model_service(model), status).await;
        }
        self.set(COMPLETION_SERVICE, status).await;
        self.set(VECTOR_SERVICE, status).await;
        self.set(WORKFLOW_SERVICE, status).await;
        for service in self.llm_services() {
            self.set(&service, status).await;
        }
    }

    async fn set(&self, service: &str, status: ServingStatus) {
        self.reporter.set_service_status(service, status).await;
    }
}

fn service_name() -> &'static str {
    <EmbeddingServiceServer<EmbeddingApi> as tonic::server::NamedService>::NAME
}

/// The health service name of one LLM model: `citadel.v1.CompletionService/<model>`.
fn llm_service(model: &str) -> String {
    format!("{COMPLETION_SERVICE}/{model}")
}

/// The health service name of one model: `citadel.v1.EmbeddingService/<model>`.
fn model_service(model: &str) -> String {
    format!("{}/{model}", service_name())
}

fn database_status(state: &DatabaseState) -> ServingStatus {
    match state.reachable {
        true => ServingStatus::Serving,
        false => ServingStatus::NotServing,
    }
}

/// gRPC health for `citadel worker`: `""` and `citadel.v1.WorkflowService` follow the workflow
/// database (a worker that cannot reach it can do nothing) until `states`' sender is dropped or
/// `stopping` is cancelled, then read NOT_SERVING.
pub fn worker_health(
    mut states: watch::Receiver<DatabaseState>,
    stopping: tokio_util::sync::CancellationToken,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        loop {
            let status = database_status(&states.borrow_and_update());
            for name in [OVERALL, WORKFLOW_SERVICE] {
                reporter.set_service_status(name, status).await;
            }
            tokio::select! {
                changed = states.changed() => if changed.is_err() { break },
                () = stopping.cancelled() => break,
            }
        }
        for name in [OVERALL, WORKFLOW_SERVICE] {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    });
    service
}
