//! The core's contract with a stand-in backend: validation, backpressure, deadlines, shaping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use citadel_embeddings::{
    Backend, BackendOutput, EmbedError, EmbedParams, EmbeddingCore, Limits, ModelInfo, ModelState,
};
use tokio::{sync::watch, time::Instant};

/// Answers `[i+1, 0, 0, 0]`-shaped vectors (scaled by 2) after `delay`.
struct Stub {
    info: ModelInfo,
    state: watch::Sender<ModelState>,
    delay: Duration,
}

#[async_trait]
impl Backend for Stub {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn state(&self) -> ModelState {
        self.state.borrow().clone()
    }
    fn watch_state(&self) -> watch::Receiver<ModelState> {
        self.state.subscribe()
    }
    async fn embed(
        &self,
        inputs: Vec<String>,
        _truncate: bool,
    ) -> Result<BackendOutput, EmbedError> {
        tokio::time::sleep(self.delay).await;
        let vectors = (0..inputs.len())
            .map(|i| vec![2.0 * (i as f32 + 1.0), 2.0, 0.0, 0.0])
            .collect();
        Ok(BackendOutput {
            vectors,
            prompt_tokens: inputs.len() as u64,
            ..Default::default()
        })
    }
}

fn core(delay: Duration, queue: usize, state: ModelState) -> EmbeddingCore {
    let info = ModelInfo {
        name: "stub".into(),
        aliases: vec!["stub-alias".into()],
        dimensions: 4,
        max_input_tokens: 16,
        backend: "stub",
        owned_by: "test".into(),
    };
    let (state, _) = watch::channel(state);
    let mut core = EmbeddingCore::new(Limits {
        max_inputs_per_request: 8,
    });
    core.register(Arc::new(Stub { info, state, delay }), queue);
    core
}

fn params(inputs: &[&str]) -> EmbedParams {
    EmbedParams {
        model: "stub".into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        dimensions: None,
        normalize: true,
        truncate: true,
        deadline: None,
    }
}

#[tokio::test]
async fn shapes_vectors_and_resolves_aliases() {
    let core = core(Duration::ZERO, 16, ModelState::Ready);
    let mut p = params(&["a", "b"]);
    p.model = "stub-alias".into();
    p.dimensions = Some(2);
    let done = core.embed(p).await.unwrap();
    assert_eq!(done.model, "stub");
    assert_eq!(done.vectors.len(), 2);
    let v = &done.vectors[1];
    assert_eq!(v.len(), 2);
    assert!((v[0] - 4.0 / 20f32.sqrt()).abs() < 1e-6 && (v[1] - 2.0 / 20f32.sqrt()).abs() < 1e-6);

    let mut raw = params(&["a"]);
    raw.normalize = false;
    assert_eq!(
        core.embed(raw).await.unwrap().vectors[0],
        vec![2.0, 2.0, 0.0, 0.0]
    );
}

#[tokio::test]
async fn rejects_bad_requests_naming_the_field() {
    let core = core(Duration::ZERO, 16, ModelState::Ready);
    let param = |e: EmbedError| match e {
        EmbedError::InvalidInput { param, .. } => param,
        other => panic!("expected invalid input, got {other:?}"),
    };
    assert_eq!(param(core.embed(params(&[])).await.unwrap_err()), "input");
    assert_eq!(
        param(core.embed(params(&["a", ""])).await.unwrap_err()),
        "input"
    );
    assert_eq!(
        param(core.embed(params(&["a"; 9])).await.unwrap_err()),
        "input"
    );
    for dims in [0, 5] {
        let mut p = params(&["a"]);
        p.dimensions = Some(dims);
        assert_eq!(param(core.embed(p).await.unwrap_err()), "dimensions");
    }
    let mut unknown = params(&["a"]);
    unknown.model = "nope".into();
    assert!(matches!(
        core.embed(unknown).await,
        Err(EmbedError::ModelNotFound(_))
    ));
}

#[tokio::test]
async fn a_full_queue_is_overloaded_and_frees_up_afterwards() {
    let core = Arc::new(core(Duration::from_millis(200), 4, ModelState::Ready));
    let busy = {
        let core = core.clone();
        tokio::spawn(async move { core.embed(params(&["a", "b", "c"])).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = core.embed(params(&["d", "e"])).await.unwrap_err();
    assert!(
        matches!(refused, EmbedError::Overloaded { queued: 3, .. }),
        "{refused:?}"
    );
    assert!(
        core.embed(params(&["f"])).await.is_ok(),
        "one permit was still free"
    );
    busy.await.unwrap().unwrap();
    assert!(
        core.embed(params(&["a", "b", "c", "d"])).await.is_ok(),
        "permits came back"
    );
}

#[tokio::test]
async fn deadlines_and_readiness_are_enforced() {
    let slow = core(Duration::from_secs(5), 16, ModelState::Ready);
    let mut p = params(&["a"]);
    p.deadline = Some(Instant::now() + Duration::from_millis(20));
    assert!(matches!(
        slow.embed(p).await,
        Err(EmbedError::DeadlineExceeded { .. })
    ));

    let loading = core(Duration::ZERO, 16, ModelState::Loading);
    assert!(matches!(
        loading.embed(params(&["a"])).await,
        Err(EmbedError::Unavailable { .. })
    ));
    let failed = core(Duration::ZERO, 16, ModelState::Failed("bad graph".into()));
    let error = failed.embed(params(&["a"])).await.unwrap_err();
    assert!(error.to_string().contains("bad graph"), "{error}");
    assert_eq!(
        failed.wait_ready().await,
        Err(("stub".to_string(), "bad graph".to_string()))
    );
}
