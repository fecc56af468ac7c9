//! The production store: Qdrant over gRPC through `qdrant-client`.
//!
//! One Qdrant collection per Citadel collection, one unnamed cosine vector, the model and
//! creation time in the collection's metadata (`citadel_model`, `citadel_created_at`), so the
//! binding lives with the data. Writes wait for Qdrant to apply them (`wait: true`): an
//! acknowledged upsert is searchable. A call that finds Qdrant unreachable or overloaded is
//! retried twice with a short backoff (on top of qdrant-client's own immediate retry on a
//! fresh connection); every operation is idempotent (point ids derive from document ids), so
//! a retry never duplicates. Each call is a `qdrant` span, and with traces on it carries the
//! W3C trace context as gRPC metadata, so Qdrant's own tracing joins the request's trace.

use std::{borrow::Cow, collections::HashMap, time::Duration};

use qdrant_client::{
    Qdrant, QdrantError,
    qdrant::{
        self, CountPoints, CreateCollection, DeletePoints, Distance, PointStruct, PointsIdsList,
        PointsSelector, SearchPoints, UpsertPoints, VectorParams, VectorsConfig,
        point_id::PointIdOptions, points_selector::PointsSelectorOneOf, vectors_config,
        with_payload_selector::SelectorOptions,
    },
};
use serde_json::{Map, Value as Json};
use tonic::Code;
use tracing::Instrument;

use crate::filter::{Filter, to_qdrant};
use crate::store::{
    CollectionInfo, CollectionSpec, PointSelector, ScoredPoint, StoreError, StoreHealth,
    StoreQuery, StoredPoint, VectorStore,
};

const MODEL_KEY: &str = "citadel_model";
const CREATED_KEY: &str = "citadel_created_at";
const RETRIES: u32 = 2;

pub struct QdrantStore {
    client: Qdrant,
    url: String,
}

impl QdrantStore {
    /// Builds the client without connecting (`skip_compatibility_check`: the version check is
    /// a blocking call at start-up; health shows reachability instead).
    pub fn new(url: &str, api_key: Option<&str>, timeout: Duration) -> Result<QdrantStore, String> {
        let client = Qdrant::from_url(url)
            .api_key(api_key.map(str::to_string))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .skip_compatibility_check()
            .build()
            .map_err(|e| format!("qdrant.url {url:?}: {e}"))?;
        Ok(QdrantStore {
            client,
            url: url.to_string(),
        })
    }

    /// The client for one call: with the current trace context's headers when traces are on
    /// (a clone sharing the connection pool), else the client itself.
    fn client(&self) -> Cow<'_, Qdrant> {
        let mut headers = Vec::new();
        citadel_telemetry::trace::inject(|key, value| headers.push((key.to_string(), value)));
        match headers.is_empty() {
            true => Cow::Borrowed(&self.client),
            false => Cow::Owned(
                headers
                    .into_iter()
                    .fold(self.client.clone(), |c, (k, v)| c.with_header(k, v)),
            ),
        }
    }

    async fn info(&self, name: &str) -> Result<Option<CollectionInfo>, StoreError> {
        let answer = retrying("collection_info", async || {
            self.client().collection_info(name).await
        })
        .await;
        let info = match answer {
            Ok(r) => r.result.unwrap_or_default(),
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let config = info.config.unwrap_or_default();
        let dims = config
            .params
            .and_then(|p| p.vectors_config)
            .and_then(|v| match v.config {
                Some(vectors_config::Config::Params(p)) => Some(p.size),
                _ => None,
            });
        let meta = |k: &str| {
            config
                .metadata
                .get(k)
                .cloned()
                .map(qdrant::Value::into_json)
        };
        let (Some(dims), Some(Json::String(model))) = (dims, meta(MODEL_KEY)) else {
            // Someone else's collection on the same Qdrant: not ours to serve.
            return Ok(None);
        };
        Ok(Some(CollectionInfo {
            spec: CollectionSpec {
                name: name.to_string(),
                model,
                dimensions: u32::try_from(dims).unwrap_or(0),
                created_at: meta(CREATED_KEY).and_then(|v| v.as_i64()).unwrap_or(0),
            },
            points_count: info.points_count.unwrap_or(0),
        }))
    }

    async fn require(&self, name: &str) -> Result<CollectionInfo, StoreError> {
        self.info(name)
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))
    }
}

#[async_trait::async_trait]
impl VectorStore for QdrantStore {
    async fn create_collection(&self, spec: &CollectionSpec) -> Result<(), StoreError> {
        let metadata = HashMap::from([
            (MODEL_KEY.to_string(), Json::from(spec.model.clone()).into()),
            (CREATED_KEY.to_string(), Json::from(spec.created_at).into()),
        ]);
        let request = CreateCollection {
            collection_name: spec.name.clone(),
            vectors_config: Some(VectorsConfig {
                config: Some(vectors_config::Config::Params(VectorParams {
                    size: u64::from(spec.dimensions),
                    distance: Distance::Cosine as i32,
                    ..Default::default()
                })),
            }),
            metadata,
            ..Default::default()
        };
        retrying("create_collection", async || {
            self.client().create_collection(request.clone()).await
        })
        .await
        .map(|_| ())
        .map_err(|e| match e {
            StoreError::Invalid(m) if m.contains("already exists") => {
                StoreError::AlreadyExists(spec.name.clone())
            }
            e => e,
        })
    }

    async fn list_collections(&self) -> Result<Vec<CollectionInfo>, StoreError> {
        let names = retrying("list_collections", async || {
            self.client().list_collections().await
        })
        .await?;
        let mut all = Vec::new();
        for d in names.collections {
            if let Some(info) = self.info(&d.name).await? {
                all.push(info);
            }
        }
        all.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(all)
    }

    async fn collection(&self, name: &str) -> Result<Option<CollectionInfo>, StoreError> {
        self.info(name).await
    }

    async fn delete_collection(&self, name: &str) -> Result<(), StoreError> {
        self.require(name).await?;
        retrying("delete_collection", async || {
            self.client().delete_collection(name).await
        })
        .await
        .map(|_| ())
    }

    async fn upsert(&self, collection: &str, points: Vec<StoredPoint>) -> Result<(), StoreError> {
        let points: Vec<PointStruct> = points
            .into_iter()
            .map(|p| PointStruct {
                id: Some(p.id.to_string().into()),
                payload: p.payload.into_iter().map(|(k, v)| (k, v.into())).collect(),
                vectors: Some(p.vector.into()),
            })
            .collect();
        let request = UpsertPoints {
            collection_name: collection.to_string(),
            wait: Some(true),
            points,
            ..Default::default()
        };
        retrying("upsert_points", async || {
            self.client().upsert_points(request.clone()).await
        })
        .await
        .map(|_| ())
    }

    async fn delete_points(
        &self,
        collection: &str,
        selector: PointSelector,
    ) -> Result<(), StoreError> {
        let selector = match selector {
            PointSelector::Ids(ids) => PointsSelectorOneOf::Points(PointsIdsList {
                ids: ids.iter().map(|id| id.to_string().into()).collect(),
            }),
            PointSelector::Filter(f) => PointsSelectorOneOf::Filter(to_qdrant(&f)),
        };
        let request = DeletePoints {
            collection_name: collection.to_string(),
            wait: Some(true),
            points: Some(PointsSelector {
                points_selector_one_of: Some(selector),
            }),
            ..Default::default()
        };
        retrying("delete_points", async || {
            self.client().delete_points(request.clone()).await
        })
        .await
        .map(|_| ())
    }

    async fn search(
        &self,
        collection: &str,
        query: StoreQuery,
    ) -> Result<Vec<ScoredPoint>, StoreError> {
        let request = SearchPoints {
            collection_name: collection.to_string(),
            vector: query.vector,
            filter: query.filter.as_ref().map(to_qdrant),
            limit: query.top_k as u64,
            with_payload: Some(SelectorOptions::Enable(query.with_payload).into()),
            score_threshold: query.score_threshold,
            ..Default::default()
        };
        let answer = retrying("search_points", async || {
            self.client().search_points(request.clone()).await
        })
        .await?;
        answer
            .result
            .into_iter()
            .map(|p| {
                Ok(ScoredPoint {
                    id: uuid_of(p.id)?,
                    score: p.score,
                    payload: p
                        .payload
                        .into_iter()
                        .map(|(k, v)| (k, v.into_json()))
                        .collect::<Map<String, Json>>(),
                })
            })
            .collect()
    }

    async fn count(&self, collection: &str, filter: Option<Filter>) -> Result<u64, StoreError> {
        let request = CountPoints {
            collection_name: collection.to_string(),
            filter: filter.as_ref().map(to_qdrant),
            exact: Some(true),
            ..Default::default()
        };
        let answer = retrying("count", async || self.client().count(request.clone()).await).await?;
        Ok(answer.result.map_or(0, |r| r.count))
    }

    async fn health(&self) -> StoreHealth {
        match self.client().health_check().await {
            Ok(reply) => StoreHealth {
                kind: "qdrant",
                ok: true,
                detail: format!("{} (Qdrant {})", self.url, reply.version),
            },
            Err(e) => StoreHealth {
                kind: "qdrant",
                ok: false,
                detail: format!("{}: {}", self.url, store_error(e)),
            },
        }
    }
}

fn uuid_of(id: Option<qdrant::PointId>) -> Result<uuid::Uuid, StoreError> {
    match id.and_then(|id| id.point_id_options) {
        Some(PointIdOptions::Uuid(s)) => s
            .parse()
            .map_err(|_| StoreError::Internal(format!("Qdrant answered a point id {s:?}"))),
        other => Err(StoreError::Internal(format!(
            "Qdrant answered a point id that is not a UUID: {other:?}"
        ))),
    }
}

/// Runs `call` in a `qdrant` span, again after 50 ms and 250 ms while Qdrant is unreachable
/// or overloaded.
async fn retrying<T, F, Fut>(op: &'static str, mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QdrantError>>,
{
    let span = citadel_telemetry::trace_span!("qdrant", op);
    async move {
        let mut attempt = 0;
        loop {
            match call().await.map_err(store_error) {
                Err(StoreError::Unavailable(m)) if attempt < RETRIES => {
                    tracing::debug!(attempt, error = %m, "qdrant call failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * 5u64.pow(attempt))).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
    .instrument(span)
    .await
}

fn store_error(e: QdrantError) -> StoreError {
    match e {
        QdrantError::ResponseError { status } => {
            let m = status.message().to_string();
            match status.code() {
                Code::NotFound => StoreError::NotFound(m),
                Code::AlreadyExists => StoreError::Invalid(format!("already exists: {m}")),
                Code::InvalidArgument | Code::FailedPrecondition => StoreError::Invalid(m),
                Code::Unavailable
                | Code::ResourceExhausted
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted => StoreError::Unavailable(m),
                Code::Unauthenticated | Code::PermissionDenied => StoreError::Internal(format!(
                    "Qdrant refused the credential ({m}): check qdrant.api_key"
                )),
                _ => StoreError::Internal(m),
            }
        }
        other => StoreError::Unavailable(other.to_string()),
    }
}
