//! Protobuf's JSON mapping of `google.protobuf.Struct`/`Value`: workflow parameters and results
//! travel as `Struct` on the wire and as JSON at rest and on the REST edge. Numbers are f64 in a
//! `Value`, as in the protobuf spec; integers up to 2^53 survive the round trip.

use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_json::Value as Json;

/// A JSON value as a protobuf `Value`.
pub fn to_value(json: &Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

/// A JSON object as a protobuf `Struct`; anything else is `None`.
pub fn to_struct(json: &Json) -> Option<Struct> {
    match to_value(json).kind {
        Some(Kind::StructValue(s)) => Some(s),
        _ => None,
    }
}

/// A protobuf `Value` as JSON. Whole numbers come back as JSON integers, so `{"n": 3}` stays
/// `3`, not `3.0`; non-finite numbers (which JSON cannot hold) become null.
pub fn from_value(value: &Value) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(list)) => Json::Array(list.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => from_struct(s),
    }
}

/// A protobuf `Struct` as a JSON object.
pub fn from_struct(s: &Struct) -> Json {
    Json::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), from_value(v)))
            .collect(),
    )
}

fn number(n: f64) -> Json {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() <= EXACT {
        #[allow(clippy::cast_possible_truncation)]
        return Json::from(n as i64);
    }
    serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_nested_json() {
        let json = serde_json::json!({
            "texts": ["a", "b"], "n": 3, "x": 0.5, "flag": true, "none": null,
            "nested": {"k": [1, {"deep": -2}]}
        });
        let back = from_struct(&to_struct(&json).unwrap_or_default());
        assert_eq!(back, json);
    }

    #[test]
    fn only_objects_are_structs() {
        assert!(to_struct(&serde_json::json!([1])).is_none());
        assert!(to_struct(&serde_json::json!("s")).is_none());
    }
}
