//! `citadel.v1.VectorService` handlers: JSON text fields parsed once here (payloads, filters),
//! the caller's model allow-list checked against the collection's model, the call handed to
//! the vector core (`citadel_vectors::Vectors`), the answer back to protobuf.

use std::sync::Arc;

use citadel_proto::v1::{
    self, CountPointsRequest, CountPointsResponse, CreateCollectionRequest,
    DeleteCollectionRequest, DeleteCollectionResponse, DeletePointsRequest, DeletePointsResponse,
    GetCollectionRequest, ListCollectionsRequest, ListCollectionsResponse, SearchRequest,
    SearchResponse, UpsertPointsRequest, UpsertPointsResponse, delete_points_request, point,
    search_request, vector_service_server::VectorService,
};
use citadel_vectors::{
    CollectionInfo, Content, DeleteSelector, Filter, PointInput, Query, SearchInput, Vectors,
};
use serde_json::{Map, Value as Json};
use tonic::{Request, Response, Status};

use crate::{
    auth::{caller, check_model},
    deadline::deadline,
    status::{invalid, vector_status},
};

#[derive(Clone)]
pub struct VectorApi {
    vectors: Arc<Vectors>,
}

impl VectorApi {
    pub fn new(vectors: Arc<Vectors>) -> Self {
        VectorApi { vectors }
    }

    /// PERMISSION_DENIED when the caller's key may not use the collection's model: embedding
    /// through a collection is still embedding with that model.
    async fn may_use<T>(&self, request: &Request<T>, collection: &str) -> Result<(), Status> {
        let caller = caller(request)?;
        let spec = self.vectors.spec(collection).await.map_err(vector_status)?;
        check_model(&caller, &spec.model)
    }
}

#[tonic::async_trait]
impl VectorService for VectorApi {
    async fn create_collection(
        &self,
        request: Request<CreateCollectionRequest>,
    ) -> Result<Response<v1::Collection>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        // The collection records the canonical name, and every later use is checked on it.
        let model = self.vectors.model_name(&r.model).map_err(vector_status)?;
        check_model(&caller, &model)?;
        let info = self.vectors.create(&r.name, &r.model).await;
        Ok(Response::new(collection(info.map_err(vector_status)?)))
    }

    async fn list_collections(
        &self,
        _request: Request<ListCollectionsRequest>,
    ) -> Result<Response<ListCollectionsResponse>, Status> {
        let all = self.vectors.list().await.map_err(vector_status)?;
        Ok(Response::new(ListCollectionsResponse {
            collections: all.into_iter().map(collection).collect(),
        }))
    }

    async fn get_collection(
        &self,
        request: Request<GetCollectionRequest>,
    ) -> Result<Response<v1::Collection>, Status> {
        let info = self.vectors.get(&request.into_inner().name).await;
        Ok(Response::new(collection(info.map_err(vector_status)?)))
    }

    async fn delete_collection(
        &self,
        request: Request<DeleteCollectionRequest>,
    ) -> Result<Response<DeleteCollectionResponse>, Status> {
        let name = request.into_inner().name;
        self.vectors.delete(&name).await.map_err(vector_status)?;
        Ok(Response::new(DeleteCollectionResponse {}))
    }

    async fn upsert_points(
        &self,
        request: Request<UpsertPointsRequest>,
    ) -> Result<Response<UpsertPointsResponse>, Status> {
        let deadline = deadline(request.metadata())?;
        self.may_use(&request, &request.get_ref().collection)
            .await?;
        let r = request.into_inner();
        let points = r
            .points
            .into_iter()
            .enumerate()
            .map(|(i, p)| point_input(i, p))
            .collect::<Result<Vec<_>, _>>()?;
        let upserted = self.vectors.upsert(&r.collection, points, deadline).await;
        Ok(Response::new(UpsertPointsResponse {
            upserted: upserted.map_err(vector_status)?,
        }))
    }

    async fn delete_points(
        &self,
        request: Request<DeletePointsRequest>,
    ) -> Result<Response<DeletePointsResponse>, Status> {
        let r = request.into_inner();
        let selector = match r.selector {
            Some(delete_points_request::Selector::Ids(ids)) => DeleteSelector::Documents(ids.ids),
            Some(delete_points_request::Selector::FilterJson(text)) => match filter(&text)? {
                Some(f) => DeleteSelector::Filter(f),
                None => return Err(invalid("filter", "a delete's filter must not be empty")),
            },
            None => return Err(invalid("ids", "give either ids or filter")),
        };
        let deleted = self.vectors.delete_points(&r.collection, selector).await;
        deleted.map_err(vector_status)?;
        Ok(Response::new(DeletePointsResponse {}))
    }

    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let deadline = deadline(request.metadata())?;
        self.may_use(&request, &request.get_ref().collection)
            .await?;
        let r = request.into_inner();
        let query = match r.query {
            Some(search_request::Query::Text(t)) => Query::Text(t),
            Some(search_request::Query::Vector(v)) => Query::Vector(v.values),
            None => return Err(invalid("query", "give a query text or vector")),
        };
        let input = SearchInput {
            query,
            top_k: r.top_k,
            filter: filter(&r.filter_json)?,
            score_threshold: r.score_threshold,
            with_payload: r.with_payload.unwrap_or(true),
            deadline,
        };
        let out = self
            .vectors
            .search(&r.collection, input)
            .await
            .map_err(vector_status)?;
        Ok(Response::new(SearchResponse {
            hits: out
                .hits
                .into_iter()
                .map(|h| v1::SearchHit {
                    id: h.id.to_string(),
                    document_id: h.document_id,
                    chunk: h.chunk,
                    score: h.score,
                    text: h.text,
                    payload_json: if r.with_payload.unwrap_or(true) {
                        Json::Object(h.payload).to_string()
                    } else {
                        String::new()
                    },
                })
                .collect(),
            embed_us: out.embed_us,
            store_us: out.store_us,
        }))
    }

    async fn count(
        &self,
        request: Request<CountPointsRequest>,
    ) -> Result<Response<CountPointsResponse>, Status> {
        let r = request.into_inner();
        let counted = self
            .vectors
            .count(&r.collection, filter(&r.filter_json)?)
            .await;
        Ok(Response::new(CountPointsResponse {
            count: counted.map_err(vector_status)?,
        }))
    }
}

fn collection(info: CollectionInfo) -> v1::Collection {
    v1::Collection {
        name: info.spec.name,
        model: info.spec.model,
        dimensions: info.spec.dimensions,
        distance: "cosine".to_string(),
        points_count: info.points_count,
        created_at: Some(prost_types::Timestamp {
            seconds: info.spec.created_at,
            nanos: 0,
        }),
    }
}

fn filter(text: &str) -> Result<Option<Filter>, Status> {
    Filter::parse(text).map_err(|e| invalid("filter", e.to_string()))
}

fn point_input(i: usize, p: v1::Point) -> Result<PointInput, Status> {
    let content = match p.content {
        Some(point::Content::Text(t)) => Content::Text(t),
        Some(point::Content::Vector(v)) => Content::Vector(v.values),
        None => {
            return Err(invalid(
                "points",
                format!("points[{i}] needs a text or a vector"),
            ));
        }
    };
    let payload = match p.payload_json.trim() {
        "" => Map::new(),
        text => match serde_json::from_str::<Json>(text) {
            Ok(Json::Object(map)) => map,
            Ok(_) => {
                return Err(invalid(
                    "points",
                    format!("points[{i}].payload must be a JSON object"),
                ));
            }
            Err(e) => {
                return Err(invalid(
                    "points",
                    format!("points[{i}].payload is not JSON: {e}"),
                ));
            }
        },
    };
    Ok(PointInput {
        document_id: p.id,
        chunk: p.chunk,
        content,
        payload,
    })
}
