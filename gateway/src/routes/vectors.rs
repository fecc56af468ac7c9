//! `/api/v1/collections`: collections, points and search through `citadel.v1.VectorService`.

use axum::{
    Json,
    extract::{Path, rejection::PathRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use citadel_proto::v1;
use serde_json::{Value, json};

use crate::{
    error::{ApiError, vector_error},
    extract,
    mesh_client::Mesh,
    vectors::{
        CollectionObject, CountBody, CreateBody, DeleteBody, HitObject, SearchBody, UpsertBody,
    },
};

const SERVICE: &str = "vector service";

/// `POST /api/v1/collections` `{"name", "model"}`: 201 with `Location`.
pub async fn create(
    state: Mesh,
    extract::Json(body): extract::Json<CreateBody>,
) -> Result<Response, ApiError> {
    let mut client = state.vectors.clone();
    let call = client.create_collection(state.request(body.into_proto()?));
    let created = state.call_mapped(call, SERVICE, vector_error).await?;
    let location = HeaderValue::try_from(format!("/api/v1/collections/{}", created.name));
    let mut response = (StatusCode::CREATED, Json(CollectionObject::from(created))).into_response();
    if let Ok(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /api/v1/collections`.
pub async fn list(state: Mesh) -> Result<Json<Value>, ApiError> {
    let mut client = state.vectors.clone();
    let call = client.list_collections(state.request(v1::ListCollectionsRequest {}));
    let all = state.call_mapped(call, SERVICE, vector_error).await?;
    let data: Vec<CollectionObject> = all.collections.into_iter().map(Into::into).collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `GET /api/v1/collections/{name}`, with `points_count`.
pub async fn get(
    state: Mesh,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<CollectionObject>, ApiError> {
    let name = collection_name(name)?;
    let mut client = state.vectors.clone();
    let call = client.get_collection(state.request(v1::GetCollectionRequest { name }));
    let found = state.call_mapped(call, SERVICE, vector_error).await?;
    Ok(Json(found.into()))
}

/// `DELETE /api/v1/collections/{name}`.
pub async fn delete(
    state: Mesh,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = collection_name(name)?;
    let mut client = state.vectors.clone();
    let request = v1::DeleteCollectionRequest { name: name.clone() };
    let call = client.delete_collection(state.request(request));
    state.call_mapped(call, SERVICE, vector_error).await?;
    Ok(Json(
        json!({"object": "collection.deleted", "name": name, "deleted": true}),
    ))
}

/// `POST /api/v1/collections/{name}/points` `{"points": [{"id", "text" | "vector", "payload"}]}`.
pub async fn upsert(
    state: Mesh,
    name: Result<Path<String>, PathRejection>,
    extract::Json(body): extract::Json<UpsertBody>,
) -> Result<Json<Value>, ApiError> {
    let request = body.into_proto(collection_name(name)?)?;
    let mut client = state.vectors.clone();
    let call = client.upsert_points(state.request(request));
    let answer = state.call_mapped(call, SERVICE, vector_error).await?;
    Ok(Json(
        json!({"object": "points.upserted", "upserted": answer.upserted}),
    ))
}

/// `POST /api/v1/collections/{name}/points/delete` `{"ids"}` or `{"filter"}`.
pub async fn delete_points(
    state: Mesh,
    name: Result<Path<String>, PathRejection>,
    extract::Json(body): extract::Json<DeleteBody>,
) -> Result<Json<Value>, ApiError> {
    let request = body.into_proto(collection_name(name)?)?;
    let mut client = state.vectors.clone();
    let call = client.delete_points(state.request(request));
    state.call_mapped(call, SERVICE, vector_error).await?;
    Ok(Json(json!({"object": "points.deleted", "deleted": true})))
}

/// `POST /api/v1/collections/{name}/search` `{"query", "top_k", "filter", "score_threshold"}`.
pub async fn search(
    state: Mesh,
    name: Result<Path<String>, PathRejection>,
    extract::Json(body): extract::Json<SearchBody>,
) -> Result<Json<Value>, ApiError> {
    let with_payload = body.with_payload();
    let request = body.into_proto(collection_name(name)?)?;
    let mut client = state.vectors.clone();
    let call = client.search(state.request(request));
    let found = state.call_mapped(call, SERVICE, vector_error).await?;
    let data: Vec<HitObject> = found
        .hits
        .into_iter()
        .map(|h| HitObject::from_proto(h, with_payload))
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "timing": {"embed_ms": found.embed_us as f64 / 1e3, "store_ms": found.store_us as f64 / 1e3},
    })))
}

/// `POST /api/v1/collections/{name}/count` `{}` or `{"filter"}`.
pub async fn count(
    state: Mesh,
    name: Result<Path<String>, PathRejection>,
    extract::Json(body): extract::Json<CountBody>,
) -> Result<Json<Value>, ApiError> {
    let request = body.into_proto(collection_name(name)?)?;
    let mut client = state.vectors.clone();
    let call = client.count(state.request(request));
    let counted = state.call_mapped(call, SERVICE, vector_error).await?;
    Ok(Json(json!({"object": "count", "count": counted.count})))
}

fn collection_name(name: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    name.map(|Path(n)| n)
        .map_err(|e| ApiError::invalid("name", e.body_text()))
}
