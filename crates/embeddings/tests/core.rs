//! The core's contract with a stand-in backend: validation, backpressure, deadlines, shaping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use citadel_embeddings::{
    Backend, BackendOutput, BackendRequest, CacheKey, CacheMode, CacheStatus, CachedEmbedding,
    EmbedError, EmbedParams, EmbeddingCache, EmbeddingCore, FlushProgress, Limits, ModelInfo,
    ModelOptions, ModelState, ModelTag, model_tag,
};
use tokio::{sync::watch, time::Instant};

/// Answers `[i+1, 0, 0, 0]`-shaped vectors (scaled by 2) after `delay`; refuses while its
/// state is `Unavailable`, as a remote model with every server down does. Remembers the inputs
/// of the last call.
struct Stub {
    info: ModelInfo,
    state: watch::Sender<ModelState>,
    delay: Duration,
    seen: Mutex<Vec<String>>,
    calls: std::sync::atomic::AtomicUsize,
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
    async fn embed(&self, request: BackendRequest) -> Result<BackendOutput, EmbedError> {
        if let ModelState::Unavailable(reason) = self.state() {
            let model = self.info.name.clone();
            let retry_after = None;
            return Err(EmbedError::Unavailable {
                model,
                reason,
                retry_after,
            });
        }
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(self.delay).await;
        let inputs = request.inputs;
        *self.seen.lock().unwrap() = inputs.clone();
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

fn stub(name: &str, delay: Duration, state: ModelState) -> Arc<Stub> {
    let info = ModelInfo {
        name: name.into(),
        aliases: vec![format!("{name}-alias")],
        dimensions: 4,
        max_input_tokens: 16,
        backend: "stub",
        owned_by: "test".into(),
        identity: format!("stub:{name}"),
    };
    let (state, _) = watch::channel(state);
    let seen = Mutex::default();
    Arc::new(Stub {
        info,
        state,
        delay,
        seen,
        calls: Default::default(),
    })
}

fn empty_core() -> EmbeddingCore {
    EmbeddingCore::new(Limits {
        max_inputs_per_request: 8,
    })
}

fn queue(max_queued_inputs: usize) -> ModelOptions {
    ModelOptions {
        max_queued_inputs,
        ..Default::default()
    }
}

fn core(delay: Duration, queued: usize, state: ModelState) -> EmbeddingCore {
    let mut core = empty_core();
    core.register(stub("stub", delay, state), queue(queued));
    core
}

fn params(inputs: &[&str]) -> EmbedParams {
    EmbedParams {
        model: "stub".into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        dimensions: None,
        normalize: true,
        truncate: true,
        prompt_name: None,
        cache_policy: Default::default(),
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

#[tokio::test]
async fn prompts_prefix_every_input() {
    let backend = stub("stub", Duration::ZERO, ModelState::Ready);
    let mut core = empty_core();
    let prompts = vec![
        ("query".to_string(), "search_query: ".to_string()),
        ("document".to_string(), "search_document: ".to_string()),
    ];
    let options = ModelOptions {
        prompts,
        default_prompt: Some("document".into()),
        ..queue(16)
    };
    core.register(backend.clone(), options);

    core.embed(params(&["a", "b"])).await.unwrap();
    assert_eq!(
        *backend.seen.lock().unwrap(),
        ["search_document: a", "search_document: b"]
    );
    let mut p = params(&["a"]);
    p.prompt_name = Some("query".into());
    core.embed(p).await.unwrap();
    assert_eq!(*backend.seen.lock().unwrap(), ["search_query: a"]);

    let mut p = params(&["a"]);
    p.prompt_name = Some("passage".into());
    match core.embed(p).await.unwrap_err() {
        EmbedError::InvalidInput { param, message } => {
            assert_eq!(param, "prompt_name");
            assert!(message.contains("query, document"), "{message}");
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unavailable_model_is_served_by_its_fallback() {
    let down = ModelState::Unavailable("every endpoint is failing".into());
    let mut core = empty_core();
    let options = ModelOptions {
        fallback: Some("spare".into()),
        ..queue(16)
    };
    core.register(stub("primary", Duration::ZERO, down.clone()), options);
    core.register(stub("spare", Duration::ZERO, ModelState::Ready), queue(16));
    core.register(stub("lonely", Duration::ZERO, down), queue(16));

    let mut p = params(&["a"]);
    p.model = "primary".into();
    assert_eq!(core.embed(p).await.unwrap().model, "spare");
    // Without a fallback, the refusal reaches the caller; it is not a load failure.
    let mut p = params(&["a"]);
    p.model = "lonely".into();
    assert!(matches!(
        core.embed(p).await,
        Err(EmbedError::Unavailable { .. })
    ));
    assert_eq!(core.wait_ready().await, Ok(()));
}

/// An in-memory cache, enough to drive the core's cache path.
#[derive(Default)]
struct MemoryCache(Mutex<std::collections::HashMap<CacheKey, CachedEmbedding>>);

#[async_trait]
impl EmbeddingCache for MemoryCache {
    fn mode(&self) -> CacheMode {
        CacheMode::On
    }
    async fn get_many(&self, keys: &[CacheKey], _dims: usize) -> Vec<Option<CachedEmbedding>> {
        let map = self.0.lock().unwrap();
        keys.iter().map(|k| map.get(k).cloned()).collect()
    }
    fn put_many(&self, entries: Vec<(CacheKey, CachedEmbedding)>) {
        self.0.lock().unwrap().extend(entries);
    }
    fn status(&self) -> CacheStatus {
        CacheStatus::default()
    }
    async fn flush_model(
        &self,
        tag: ModelTag,
        progress: &(dyn Fn(FlushProgress) + Send + Sync),
    ) -> Result<FlushProgress, String> {
        let mut map = self.0.lock().unwrap();
        let before = map.len();
        map.retain(|key, _| key[..4] != tag);
        let done = FlushProgress {
            deleted: (before - map.len()) as u64,
        };
        progress(done);
        Ok(done)
    }
}

#[tokio::test]
async fn a_flush_drops_one_models_vectors_and_no_other() {
    let (one, two) = (
        stub("one", Duration::ZERO, ModelState::Ready),
        stub("two", Duration::ZERO, ModelState::Ready),
    );
    let mut core = empty_core();
    core.register(one.clone(), queue(16));
    core.register(two.clone(), queue(16));
    core.set_cache(Arc::new(MemoryCache::default()));
    let embed = |model: &str, inputs: &[&str]| {
        let mut p = params(inputs);
        p.model = model.into();
        core.embed(p)
    };
    // The alias caches under the canonical name: its tag is the model's.
    embed("one-alias", &["a", "b"]).await.unwrap();
    embed("two", &["a", "b"]).await.unwrap();
    let cache = core.cache().unwrap();
    let done = cache.flush_model(model_tag("one"), &|_| {}).await.unwrap();
    assert_eq!(done.deleted, 2);
    let calls = |s: &Stub| s.calls.load(std::sync::atomic::Ordering::Relaxed);
    let (one_before, two_before) = (calls(&one), calls(&two));
    embed("one", &["a", "b"]).await.unwrap();
    embed("two", &["a", "b"]).await.unwrap();
    assert_eq!(calls(&one), one_before + 1, "flushed: computed again");
    assert_eq!(calls(&two), two_before, "the other model still cached");
}

#[tokio::test]
async fn one_waiter_computes_for_all_when_the_owner_gives_up() {
    let backend = stub("stub", Duration::from_millis(200), ModelState::Ready);
    let mut core = empty_core();
    core.register(backend.clone(), queue(16));
    core.set_cache(Arc::new(MemoryCache::default()));
    let core = Arc::new(core);

    // The owner's deadline passes mid-computation; its two waiters have none and must still
    // answer, one of them computing for both.
    let mut owner = params(&["a", "b"]);
    owner.deadline = Some(Instant::now() + Duration::from_millis(50));
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let core = core.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                core.embed(params(&["a", "b"])).await
            })
        })
        .collect();
    assert!(matches!(
        core.embed(owner).await,
        Err(EmbedError::DeadlineExceeded { .. })
    ));
    for waiter in waiters {
        let answer = waiter.await.unwrap().unwrap();
        assert_eq!((answer.vectors.len(), answer.cached), (2, 0));
    }
    assert_eq!(
        backend.calls.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "the owner's call, then one waiter's for both"
    );
    // Now cached: a third request computes nothing.
    let again = core.embed(params(&["b", "a"])).await.unwrap();
    assert_eq!(again.cached, 2);
    assert_eq!(backend.calls.load(std::sync::atomic::Ordering::Relaxed), 2);
}
