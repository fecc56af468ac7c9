//! Vector JSON at `/api/v1/collections` and its translation to and from the proto contract.
//! Only the JSON's shape is checked here; sizes, filters and payload bounds are the mesh's.

use citadel_proto::v1;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub name: Option<String>,
    pub model: Option<String>,
}

impl CreateBody {
    pub fn into_proto(self) -> Result<v1::CreateCollectionRequest, ApiError> {
        let name = self
            .name
            .ok_or_else(|| ApiError::invalid("name", "you must name the collection"))?;
        let model = self.model.ok_or_else(|| {
            ApiError::invalid(
                "model",
                "you must give the embedding model the collection uses",
            )
        })?;
        Ok(v1::CreateCollectionRequest { name, model })
    }
}

#[derive(Debug, Serialize)]
pub struct CollectionObject {
    object: &'static str,
    name: String,
    model: String,
    dimensions: u32,
    distance: String,
    points_count: u64,
    created_at: i64,
}

impl From<v1::Collection> for CollectionObject {
    fn from(c: v1::Collection) -> Self {
        CollectionObject {
            object: "collection",
            name: c.name,
            model: c.model,
            dimensions: c.dimensions,
            distance: c.distance,
            points_count: c.points_count,
            created_at: c.created_at.map_or(0, |t| t.seconds),
        }
    }
}

/// A document id: a string, or a whole number (kept as its decimal text).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum DocumentId {
    Text(String),
    Number(u64),
}

impl DocumentId {
    fn into_string(self) -> String {
        match self {
            DocumentId::Text(s) => s,
            DocumentId::Number(n) => n.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointBody {
    id: DocumentId,
    text: Option<String>,
    vector: Option<Vec<f32>>,
    payload: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertBody {
    points: Vec<PointBody>,
}

impl UpsertBody {
    pub fn into_proto(self, collection: String) -> Result<v1::UpsertPointsRequest, ApiError> {
        let points = self
            .points
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let content = match (p.text, p.vector) {
                    (Some(t), None) => v1::point::Content::Text(t),
                    (None, Some(values)) => v1::point::Content::Vector(v1::Vector { values }),
                    _ => {
                        let m = format!("points[{i}] needs exactly one of text and vector");
                        return Err(ApiError::invalid("points", m));
                    }
                };
                Ok(v1::Point {
                    id: p.id.into_string(),
                    content: Some(content),
                    // As JSON text: a Struct would turn integers above 2^53 into doubles.
                    payload_json: p
                        .payload
                        .map(|m| Value::Object(m).to_string())
                        .unwrap_or_default(),
                    chunk: 0,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(v1::UpsertPointsRequest { collection, points })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    ids: Option<Vec<DocumentId>>,
    filter: Option<Value>,
}

impl DeleteBody {
    pub fn into_proto(self, collection: String) -> Result<v1::DeletePointsRequest, ApiError> {
        use v1::delete_points_request::Selector;
        let selector = match (self.ids, self.filter) {
            (Some(ids), None) => Selector::Ids(v1::DocumentIds {
                ids: ids.into_iter().map(DocumentId::into_string).collect(),
            }),
            (None, Some(filter)) => Selector::FilterJson(filter_text(filter)?),
            _ => {
                return Err(ApiError::invalid(
                    "ids",
                    "give exactly one of ids and filter",
                ));
            }
        };
        Ok(v1::DeletePointsRequest {
            collection,
            selector: Some(selector),
        })
    }
}

/// A search's query: a text, or a vector of numbers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum QueryBody {
    Text(String),
    Vector(Vec<f32>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    query: Option<QueryBody>,
    top_k: Option<u32>,
    filter: Option<Value>,
    score_threshold: Option<f32>,
    with_payload: Option<bool>,
}

impl SearchBody {
    pub fn with_payload(&self) -> bool {
        self.with_payload.unwrap_or(true)
    }

    pub fn into_proto(self, collection: String) -> Result<v1::SearchRequest, ApiError> {
        use v1::search_request::Query;
        let query = match self.query {
            Some(QueryBody::Text(t)) => Query::Text(t),
            Some(QueryBody::Vector(values)) => Query::Vector(v1::Vector { values }),
            None => {
                let m = "you must give a query: a text, or a vector of numbers";
                return Err(ApiError::invalid("query", m));
            }
        };
        Ok(v1::SearchRequest {
            collection,
            query: Some(query),
            top_k: self.top_k,
            filter_json: self
                .filter
                .map(filter_text)
                .transpose()?
                .unwrap_or_default(),
            score_threshold: self.score_threshold,
            with_payload: self.with_payload,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountBody {
    filter: Option<Value>,
}

impl CountBody {
    pub fn into_proto(self, collection: String) -> Result<v1::CountPointsRequest, ApiError> {
        Ok(v1::CountPointsRequest {
            collection,
            filter_json: self
                .filter
                .map(filter_text)
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

/// A filter must be an object (Qdrant's JSON); the mesh parses and bounds it.
fn filter_text(filter: Value) -> Result<String, ApiError> {
    match filter {
        Value::Null => Ok(String::new()),
        Value::Object(_) => Ok(filter.to_string()),
        _ => Err(ApiError::invalid(
            "filter",
            "filter must be an object in Qdrant's filter syntax ({\"must\": [...]})",
        )),
    }
}

#[derive(Debug, Serialize)]
pub struct HitObject {
    id: String,
    document_id: String,
    chunk: u32,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Value>,
}

impl HitObject {
    pub fn from_proto(hit: v1::SearchHit, with_payload: bool) -> Self {
        let payload = with_payload
            .then(|| serde_json::from_str(&hit.payload_json).unwrap_or(Value::Object(Map::new())));
        HitObject {
            id: hit.id,
            document_id: hit.document_id,
            chunk: hit.chunk,
            score: hit.score,
            text: with_payload.then_some(hit.text),
            payload,
        }
    }
}
