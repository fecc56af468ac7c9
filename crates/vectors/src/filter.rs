//! Qdrant's JSON filter syntax (`must` / `should` / `must_not` / `min_should` over `match`,
//! `range`, `is_empty`, `is_null`, `has_id`, `nested` and filters within filters), owned here
//! once for every store: parsed once from the caller's text, with bounds so a request cannot
//! make the store do unbounded work; evaluated in process by the embedded store; and converted
//! to and from Qdrant's gRPC `Filter` for the production client and the stand-in Qdrant server.
//! Evaluation follows Qdrant's own condition checker (an unindexed collection), so a filter
//! selects the same points whichever store holds them.

use q::condition::ConditionOneOf as One;
use q::point_id::PointIdOptions;
use qdrant_client::qdrant as q;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};

pub const MAX_DEPTH: usize = 8;
pub const MAX_CONDITIONS: usize = 256;
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Per `match.any`, `match.except` and `has_id` list.
pub const MAX_LIST_ITEMS: usize = 1024;

const FILTER_KEYS: [&str; 4] = ["must", "should", "must_not", "min_should"];
const SINGLE_KEY_CONDITIONS: [&str; 4] = ["is_empty", "is_null", "has_id", "nested"];
/// Valid Qdrant, refused by name rather than as unknown, so the caller knows it is a choice.
const UNSUPPORTED: [&str; 9] = [
    "geo_bounding_box",
    "geo_radius",
    "geo_polygon",
    "values_count",
    "datetime_range",
    "has_vector",
    "slice",
    "is_empty",
    "is_null",
];

/// Messages start with the path inside the filter, e.g. `filter.must[1].range: ...`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

/// Returns early with a [`FilterError`] that starts with the path inside the filter.
macro_rules! fail {
    ($path:expr, $($message:tt)+) => {
        return Err(FilterError(format!("{}: {}", $path, format_args!($($message)+))))
    };
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub should: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must_not: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_should: Option<MinShould>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinShould {
    pub conditions: Vec<Condition>,
    pub min_count: usize,
}

/// Serialises to Qdrant's JSON; deserialises through the same parser as [`Filter::parse`].
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Field(FieldCondition),
    /// The key's field is missing, null, or an empty array.
    IsEmpty(String),
    /// The key's field is present and null (or an array holding a null).
    IsNull(String),
    HasId(Vec<PointId>),
    Nested(NestedCondition),
    Filter(Filter),
}

/// At least one of `match` and `range`; with both, either may hold (as in Qdrant).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldCondition {
    pub key: String,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub r#match: Option<Match>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<Range>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    Value(MatchValue),
    Any(AnyValues),
    Except(AnyValues),
    /// Substring, case-sensitive.
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum MatchValue {
    Keyword(String),
    Integer(i64),
    Bool(bool),
}

/// An empty JSON list parses as `Keywords`; both empty forms select the same points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AnyValues {
    Keywords(Vec<String>),
    Integers(Vec<i64>),
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Range {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
}

/// `filter` applies to each object of the array at `key`; one matching object is enough.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NestedCondition {
    pub key: String,
    pub filter: Filter,
}

/// Our points are UUIDs; numeric ids are kept because Qdrant's syntax allows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PointId {
    Num(u64),
    Uuid(uuid::Uuid),
}

impl From<uuid::Uuid> for PointId {
    fn from(id: uuid::Uuid) -> Self {
        PointId::Uuid(id)
    }
}

impl Serialize for PointId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PointId::Num(n) => s.serialize_u64(*n),
            PointId::Uuid(u) => s.collect_str(u),
        }
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Key<'a> {
            key: &'a str,
        }
        fn single<S: Serializer, T: Serialize>(s: S, name: &str, v: &T) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(1))?;
            map.serialize_entry(name, v)?;
            map.end()
        }
        match self {
            Condition::Field(f) => f.serialize(s),
            Condition::Filter(f) => f.serialize(s),
            Condition::IsEmpty(key) => single(s, "is_empty", &Key { key }),
            Condition::IsNull(key) => single(s, "is_null", &Key { key }),
            Condition::HasId(ids) => single(s, "has_id", ids),
            Condition::Nested(n) => single(s, "nested", n),
        }
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Parser::default()
            .condition(&value, "condition", 1)
            .map_err(serde::de::Error::custom)
    }
}

impl Filter {
    /// Empty text and `{}` (or a filter of only empty lists) mean "no filter".
    pub fn parse(text: &str) -> Result<Option<Filter>, FilterError> {
        if text.len() > MAX_TEXT_BYTES {
            fail!("filter", "longer than {MAX_TEXT_BYTES} bytes");
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        match serde_json::from_str(text) {
            Ok(value) => from_value(&value),
            Err(e) => fail!("filter", "malformed JSON: {e}"),
        }
    }

    /// The same as [`Filter::parse`] for a filter already parsed as JSON (the REST body).
    pub fn from_value(value: &Value) -> Result<Option<Filter>, FilterError> {
        from_value(value)
    }

    pub fn matches(&self, id: &PointId, payload: &Map<String, Value>) -> bool {
        self.eval(Some(id), payload)
    }

    pub fn to_json(&self) -> String {
        // Cannot fail: every map key is a string and a parsed filter holds no NaN.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `id` is `None` inside `nested`: Qdrant checks nested objects without the point's id,
    /// so `has_id` there never holds.
    fn eval(&self, id: Option<&PointId>, payload: &Map<String, Value>) -> bool {
        let holds = |c: &Condition| c.holds(id, payload);
        self.must.iter().flatten().all(holds)
            && !self.must_not.iter().flatten().any(holds)
            // An empty `should` is ignored: over gRPC it cannot be told from an absent one.
            && self.should.as_ref().is_none_or(|s| s.is_empty() || s.iter().any(holds))
            && self.min_should.as_ref().is_none_or(|m| {
                m.conditions.iter().filter(|c| holds(c)).take(m.min_count).count() == m.min_count
            })
    }
}

/// [`Filter::from_value`], as a free function.
pub fn from_value(value: &Value) -> Result<Option<Filter>, FilterError> {
    let filter = Parser::default().filter(value, "filter", 1)?;
    Ok((filter != Filter::default()).then_some(filter))
}

type Res<T> = Result<T, FilterError>;

/// Reads Qdrant's JSON, counting conditions across the whole filter.
#[derive(Default)]
struct Parser {
    conditions: usize,
}

impl Parser {
    fn filter(&mut self, v: &Value, path: &str, depth: usize) -> Res<Filter> {
        if depth > MAX_DEPTH {
            fail!(path, "filter nests deeper than {MAX_DEPTH} levels");
        }
        let Some(obj) = v.as_object() else {
            fail!(path, "expected a filter object");
        };
        let mut f = Filter::default();
        for (k, v) in obj {
            let p = format!("{path}.{k}");
            match k.as_str() {
                "must" => f.must = self.list(v, &p, depth)?,
                "should" => f.should = self.list(v, &p, depth)?,
                "must_not" => f.must_not = self.list(v, &p, depth)?,
                "min_should" if v.is_null() => {}
                "min_should" => f.min_should = Some(self.min_should(v, &p, depth)?),
                _ => fail!(
                    path,
                    "unknown key {k:?} (a filter holds {})",
                    FILTER_KEYS.join(", ")
                ),
            }
        }
        Ok(f)
    }

    /// Qdrant takes one condition in place of a list. Empty lists become `None`, as gRPC has
    /// no way to tell the two apart.
    fn list(&mut self, v: &Value, path: &str, depth: usize) -> Res<Option<Vec<Condition>>> {
        let conditions = match v {
            Value::Null => Vec::new(),
            Value::Object(_) => vec![self.condition(v, path, depth)?],
            Value::Array(items) => (items.iter().enumerate())
                .map(|(i, item)| self.condition(item, &format!("{path}[{i}]"), depth))
                .collect::<Res<_>>()?,
            _ => fail!(path, "expected a condition or a list of conditions"),
        };
        Ok((!conditions.is_empty()).then_some(conditions))
    }

    fn min_should(&mut self, v: &Value, path: &str, depth: usize) -> Res<MinShould> {
        let (mut conditions, mut min_count) = (Vec::new(), None);
        for (k, v) in v.as_object().into_iter().flatten() {
            let p = format!("{path}.{k}");
            match k.as_str() {
                "conditions" => conditions = self.list(v, &p, depth)?.unwrap_or_default(),
                "min_count" => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                    Some(n) if n >= 1 => min_count = Some(n),
                    _ => fail!(p, "expected a positive integer"),
                },
                _ => fail!(path, "unknown key {k:?}"),
            }
        }
        match min_count {
            Some(min_count) => Ok(MinShould {
                conditions,
                min_count,
            }),
            None => fail!(path, "expected {{\"conditions\": [..], \"min_count\": n}}"),
        }
    }

    fn condition(&mut self, v: &Value, path: &str, depth: usize) -> Res<Condition> {
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            fail!(path, "more than {MAX_CONDITIONS} conditions in the filter");
        }
        let Some(obj) = v.as_object() else {
            fail!(path, "expected a condition object");
        };
        if obj.contains_key("key") {
            return field_condition(obj, path).map(Condition::Field);
        }
        if let (1, Some((k, inner))) = (obj.len(), obj.iter().next()) {
            let p = format!("{path}.{k}");
            let key = || match inner.as_object().map(|o| (o.len(), o.get("key"))) {
                Some((1, Some(key))) => key_of(key, &format!("{p}.key")),
                _ => fail!(p, "expected {{\"key\": ..}}"),
            };
            match k.as_str() {
                "is_empty" => return key().map(Condition::IsEmpty),
                "is_null" => return key().map(Condition::IsNull),
                "has_id" => return point_ids(inner, &p).map(Condition::HasId),
                "nested" => return self.nested(inner, &p, depth).map(Condition::Nested),
                _ => {}
            }
        }
        match obj
            .keys()
            .map(String::as_str)
            .find(|k| !FILTER_KEYS.contains(k))
        {
            None => self.filter(v, path, depth + 1).map(Condition::Filter),
            Some(k) if SINGLE_KEY_CONDITIONS.contains(&k) => {
                fail!(path, "{k:?} takes no other keys beside it")
            }
            Some(k) if UNSUPPORTED.contains(&k) => fail!(path, "{k} is not supported"),
            Some(k) => fail!(path, "unknown condition key {k:?}"),
        }
    }

    fn nested(&mut self, v: &Value, path: &str, depth: usize) -> Res<NestedCondition> {
        let (mut key, mut filter) = (None, None);
        for (k, v) in v.as_object().into_iter().flatten() {
            let p = format!("{path}.{k}");
            match k.as_str() {
                "key" => key = Some(key_of(v, &p)?),
                "filter" => filter = Some(self.filter(v, &p, depth + 1)?),
                _ => fail!(path, "unknown key {k:?}"),
            }
        }
        match (key, filter) {
            (Some(key), Some(filter)) => Ok(NestedCondition { key, filter }),
            _ => fail!(path, "expected {{\"key\": .., \"filter\": {{..}}}}"),
        }
    }
}

fn field_condition(obj: &Map<String, Value>, path: &str) -> Res<FieldCondition> {
    let (mut key, mut r#match, mut range) = (String::new(), None, None);
    for (k, v) in obj {
        let p = format!("{path}.{k}");
        match k.as_str() {
            "key" => key = key_of(v, &p)?,
            "match" | "range" if v.is_null() => {}
            "match" => r#match = Some(match_of(v, path)?),
            "range" => range = Some(range_of(v, &p)?),
            k if UNSUPPORTED.contains(&k) => fail!(p, "is not supported"),
            _ => fail!(path, "unknown condition key {k:?}"),
        }
    }
    if r#match.is_none() && range.is_none() {
        fail!(path, "a field condition needs match or range");
    }
    Ok(FieldCondition {
        key,
        r#match,
        range,
    })
}

fn match_of(v: &Value, cond_path: &str) -> Res<Match> {
    let path = format!("{cond_path}.match");
    let Some((1, Some((k, inner)))) = v.as_object().map(|o| (o.len(), o.iter().next())) else {
        fail!(path, "expected one of value, any, except or text");
    };
    let p = format!("{path}.{k}");
    let list = |name: &str| {
        let Some(items) = inner.as_array() else {
            fail!(p, "expected a list");
        };
        if items.len() > MAX_LIST_ITEMS {
            fail!(p, "more than {MAX_LIST_ITEMS} items");
        }
        if let Some(strings) = items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect()
        {
            return Ok(AnyValues::Keywords(strings));
        }
        match items
            .iter()
            .map(|v| v.as_number().and_then(integer))
            .collect()
        {
            Some(integers) => Ok(AnyValues::Integers(integers)),
            None => fail!(
                cond_path,
                "match.{name} must hold only strings or only integers"
            ),
        }
    };
    Ok(match (k.as_str(), inner) {
        ("value", _) => Match::Value(match (inner, inner.as_number().and_then(integer)) {
            (Value::String(s), _) => MatchValue::Keyword(s.clone()),
            (Value::Bool(b), _) => MatchValue::Bool(*b),
            (_, Some(i)) => MatchValue::Integer(i),
            _ => fail!(p, "expected a string, an integer or a bool"),
        }),
        ("any", _) => Match::Any(list("any")?),
        ("except", _) => Match::Except(list("except")?),
        ("text", Value::String(t)) => Match::Text(t.clone()),
        ("text", _) => fail!(p, "expected a string"),
        ("phrase" | "text_any" | "prefix" | "substring", _) => fail!(p, "is not supported"),
        _ => fail!(path, "unknown key {k:?}"),
    })
}

fn range_of(v: &Value, path: &str) -> Res<Range> {
    let mut r = Range::default();
    for (k, v) in v.as_object().into_iter().flatten() {
        let slot = match k.as_str() {
            "gt" => &mut r.gt,
            "gte" => &mut r.gte,
            "lt" => &mut r.lt,
            "lte" => &mut r.lte,
            _ => fail!(path, "unknown key {k:?}"),
        };
        match v {
            Value::Null => {}
            Value::Number(n) => *slot = n.as_f64(),
            _ => fail!(format!("{path}.{k}"), "expected a number"),
        }
    }
    if r == Range::default() {
        fail!(
            path,
            "expected an object of at least one of gt, gte, lt, lte"
        );
    }
    Ok(r)
}

fn key_of(v: &Value, path: &str) -> Res<String> {
    let Some(key) = v.as_str() else {
        fail!(path, "expected a string");
    };
    let mut rest = key_token(key).map(|(_, rest)| rest);
    while let Some(r) = rest.filter(|r| !r.is_empty()) {
        rest = step(r).map(|(_, rest)| rest);
    }
    match rest {
        Some(_) => Ok(key.to_owned()),
        None => fail!(
            path,
            "{key:?} is not a valid key (like a.b, a[].b or a[0].b)"
        ),
    }
}

fn point_ids(v: &Value, path: &str) -> Res<Vec<PointId>> {
    let Some(items) = v.as_array() else {
        fail!(path, "expected a list of point ids");
    };
    if items.len() > MAX_LIST_ITEMS {
        fail!(path, "more than {MAX_LIST_ITEMS} items");
    }
    let id = |(i, v): (usize, &Value)| {
        let id = match v {
            Value::Number(n) => n.as_u64().map(PointId::Num),
            Value::String(s) => uuid::Uuid::parse_str(s).ok().map(PointId::Uuid),
            _ => None,
        };
        match id {
            Some(id) => Ok(id),
            None => fail!(
                format!("{path}[{i}]"),
                "expected an unsigned integer or a UUID string"
            ),
        }
    };
    items.iter().enumerate().map(id).collect()
}

/// JSON has one number type, so 1.0 counts as the integer 1 (Qdrant itself would not).
fn integer(n: &Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        let f = n.as_f64()?;
        (f.fract() == 0.0 && f.abs() < 9.0e18).then_some(f as i64)
    })
}

impl Condition {
    fn holds(&self, id: Option<&PointId>, payload: &Map<String, Value>) -> bool {
        match self {
            // A field's array is checked element by element (one level, as Qdrant does).
            Condition::Field(f) => lookup(&f.key, payload).into_iter().any(|v| match v {
                Value::Array(items) => items.iter().any(|x| f.check(x)),
                _ => f.check(v),
            }),
            Condition::IsEmpty(key) => lookup(key, payload).into_iter().all(|v| match v {
                Value::Array(items) => items.is_empty(),
                _ => v.is_null(),
            }),
            Condition::IsNull(key) => lookup(key, payload).into_iter().any(|v| match v {
                Value::Array(items) => items.iter().any(Value::is_null),
                _ => v.is_null(),
            }),
            Condition::HasId(ids) => id.is_some_and(|id| ids.contains(id)),
            Condition::Nested(n) => {
                let values = lookup(&n.key, payload);
                let elements: Vec<&Value> = if n.key.ends_with("[]") {
                    values
                } else {
                    values
                        .into_iter()
                        .filter_map(Value::as_array)
                        .flatten()
                        .collect()
                };
                elements
                    .into_iter()
                    .filter_map(Value::as_object)
                    .any(|o| n.filter.eval(None, o))
            }
            Condition::Filter(f) => f.eval(id, payload),
        }
    }
}

impl FieldCondition {
    fn check(&self, v: &Value) -> bool {
        self.r#match.as_ref().is_some_and(|m| m.check(v))
            || self.range.as_ref().is_some_and(|r| r.check(v))
    }
}

impl Match {
    fn check(&self, v: &Value) -> bool {
        use AnyValues::{Integers, Keywords};
        match (self, v) {
            (Match::Value(MatchValue::Keyword(want)), Value::String(s)) => want == s,
            (Match::Value(MatchValue::Integer(want)), Value::Number(n)) => {
                integer(n) == Some(*want)
            }
            (Match::Value(MatchValue::Bool(want)), Value::Bool(b)) => want == b,
            (Match::Any(Keywords(list)), Value::String(s)) => list.contains(s),
            (Match::Any(Integers(list)), Value::Number(n)) => {
                integer(n).is_some_and(|i| list.contains(&i))
            }
            (Match::Except(Keywords(list)), Value::String(s)) => !list.contains(s),
            (Match::Except(Integers(list)), Value::Number(n)) => {
                integer(n).is_none_or(|i| !list.contains(&i))
            }
            // Qdrant: a value of another type is "not one of them"; null is no value at all.
            (Match::Except(_), v) => !v.is_null(),
            (Match::Text(text), Value::String(s)) => s.contains(text.as_str()),
            _ => false,
        }
    }
}

impl Range {
    fn check(&self, v: &Value) -> bool {
        let Some(x) = v.as_f64() else {
            return false;
        };
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

/// One step of a key after its first name: `.name`, `."quoted name"`, `[]` or `[3]`.
enum Step<'a> {
    Key(&'a str),
    All,
    Index(usize),
}

/// Qdrant's key names: letters, digits, `_` and `-`, or anything but `"` and `\` in quotes.
fn key_token(s: &str) -> Option<(&str, &str)> {
    if let Some(quoted) = s.strip_prefix('"') {
        let end = quoted.find(['"', '\\'])?;
        return quoted[end..]
            .strip_prefix('"')
            .map(|rest| (&quoted[..end], rest));
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(s.len());
    (end > 0).then(|| (&s[..end], &s[end..]))
}

fn step(s: &str) -> Option<(Step<'_>, &str)> {
    if let Some(rest) = s.strip_prefix('.') {
        return key_token(rest).map(|(k, rest)| (Step::Key(k), rest));
    }
    let (inner, rest) = s.strip_prefix('[')?.split_once(']')?;
    match inner {
        "" => Some((Step::All, rest)),
        _ if inner.bytes().all(|b| b.is_ascii_digit()) => {
            Some((Step::Index(inner.parse().ok()?), rest))
        }
        _ => None,
    }
}

/// The values a key selects. Arrays are entered only where the key says `[]` or `[n]`:
/// Qdrant does not descend into an array for `a.b`.
fn lookup<'v>(key: &str, payload: &'v Map<String, Value>) -> Vec<&'v Value> {
    fn walk<'v>(path: &str, v: &'v Value, out: &mut Vec<&'v Value>) {
        if path.is_empty() {
            return out.push(v);
        }
        match (step(path), v) {
            (Some((Step::Key(k), rest)), Value::Object(m)) => {
                m.get(k).into_iter().for_each(|v| walk(rest, v, out))
            }
            (Some((Step::All, rest)), Value::Array(a)) => a.iter().for_each(|v| walk(rest, v, out)),
            (Some((Step::Index(i), rest)), Value::Array(a)) => {
                a.get(i).into_iter().for_each(|v| walk(rest, v, out))
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some((first, rest)) = key_token(key)
        && let Some(v) = payload.get(first)
    {
        walk(rest, v, &mut out);
    }
    out
}

/// Qdrant's gRPC form. Empty lists are how gRPC says "absent".
pub fn to_qdrant(filter: &Filter) -> q::Filter {
    let list = |c: &Option<Vec<Condition>>| c.iter().flatten().map(condition_to_qdrant).collect();
    q::Filter {
        must: list(&filter.must),
        should: list(&filter.should),
        must_not: list(&filter.must_not),
        min_should: filter.min_should.as_ref().map(|m| q::MinShould {
            conditions: m.conditions.iter().map(condition_to_qdrant).collect(),
            min_count: u64::try_from(m.min_count).unwrap_or(u64::MAX),
        }),
    }
}

fn condition_to_qdrant(c: &Condition) -> q::Condition {
    use q::r#match::MatchValue as M;
    let strings = |l: &[String]| q::RepeatedStrings {
        strings: l.to_vec(),
    };
    let integers = |l: &[i64]| q::RepeatedIntegers {
        integers: l.to_vec(),
    };
    let one = match c {
        Condition::Field(f) => One::Field(q::FieldCondition {
            key: f.key.clone(),
            r#match: f.r#match.as_ref().map(|m| q::Match {
                match_value: Some(match m {
                    Match::Value(MatchValue::Keyword(s)) => M::Keyword(s.clone()),
                    Match::Value(MatchValue::Integer(i)) => M::Integer(*i),
                    Match::Value(MatchValue::Bool(b)) => M::Boolean(*b),
                    Match::Any(AnyValues::Keywords(l)) => M::Keywords(strings(l)),
                    Match::Any(AnyValues::Integers(l)) => M::Integers(integers(l)),
                    Match::Except(AnyValues::Keywords(l)) => M::ExceptKeywords(strings(l)),
                    Match::Except(AnyValues::Integers(l)) => M::ExceptIntegers(integers(l)),
                    Match::Text(t) => M::Text(t.clone()),
                }),
            }),
            range: f.range.map(|r| q::Range {
                lt: r.lt,
                gt: r.gt,
                gte: r.gte,
                lte: r.lte,
            }),
            ..Default::default()
        }),
        Condition::IsEmpty(key) => One::IsEmpty(q::IsEmptyCondition { key: key.clone() }),
        Condition::IsNull(key) => One::IsNull(q::IsNullCondition { key: key.clone() }),
        Condition::HasId(ids) => One::HasId(q::HasIdCondition {
            has_id: ids
                .iter()
                .map(|id| q::PointId {
                    point_id_options: Some(match id {
                        PointId::Num(n) => PointIdOptions::Num(*n),
                        PointId::Uuid(u) => PointIdOptions::Uuid(u.to_string()),
                    }),
                })
                .collect(),
        }),
        Condition::Nested(n) => One::Nested(q::NestedCondition {
            key: n.key.clone(),
            filter: Some(to_qdrant(&n.filter)),
        }),
        Condition::Filter(f) => One::Filter(to_qdrant(f)),
    };
    q::Condition {
        condition_one_of: Some(one),
    }
}

/// The inverse of [`to_qdrant`], for the stand-in Qdrant server. The message is rewritten as
/// Qdrant's JSON and read by the same parser, so the bounds and the error paths are the same;
/// what cannot be evaluated here becomes a key the parser refuses by name.
pub fn from_qdrant(filter: &q::Filter) -> Result<Filter, FilterError> {
    Parser::default().filter(&grpc_filter_json(filter), "filter", 1)
}

fn grpc_filter_json(f: &q::Filter) -> Value {
    let list = |l: &[q::Condition]| Value::Array(l.iter().map(grpc_condition_json).collect());
    let mut out = Map::new();
    for (name, l) in [
        ("must", &f.must),
        ("should", &f.should),
        ("must_not", &f.must_not),
    ] {
        if !l.is_empty() {
            out.insert(name.into(), list(l));
        }
    }
    if let Some(m) = &f.min_should {
        let mut min = Map::new();
        min.insert("conditions".into(), list(&m.conditions));
        min.insert("min_count".into(), m.min_count.into());
        out.insert("min_should".into(), min.into());
    }
    out.into()
}

fn grpc_condition_json(c: &q::Condition) -> Value {
    use q::r#match::MatchValue as M;
    let one = |name: &str, v: Value| Value::Object(Map::from_iter([(name.to_owned(), v)]));
    let key = |k: &str| one("key", k.into());
    match &c.condition_one_of {
        None => Value::Null,
        Some(One::Field(f)) => {
            let mut out = Map::from_iter([("key".to_owned(), Value::from(f.key.as_str()))]);
            if let Some(m) = &f.r#match {
                out.insert(
                    "match".into(),
                    match &m.match_value {
                        None => Map::new().into(),
                        Some(M::Keyword(s)) => one("value", s.as_str().into()),
                        Some(M::Integer(i)) => one("value", (*i).into()),
                        Some(M::Boolean(b)) => one("value", (*b).into()),
                        Some(M::Text(t)) => one("text", t.as_str().into()),
                        Some(M::Keywords(l)) => one("any", l.strings.clone().into()),
                        Some(M::Integers(l)) => one("any", l.integers.clone().into()),
                        Some(M::ExceptKeywords(l)) => one("except", l.strings.clone().into()),
                        Some(M::ExceptIntegers(l)) => one("except", l.integers.clone().into()),
                        Some(M::Phrase(_)) => one("phrase", Value::Null),
                        Some(M::TextAny(_)) => one("text_any", Value::Null),
                        Some(M::Prefix(_)) => one("prefix", Value::Null),
                        Some(M::Substring(_)) => one("substring", Value::Null),
                    },
                );
            }
            if let Some(r) = &f.range {
                // NaN and infinity have no JSON number; as text they are refused by name.
                let bound = |b: f64| {
                    Number::from_f64(b).map_or_else(|| b.to_string().into(), Value::Number)
                };
                let bounds = [("gt", r.gt), ("gte", r.gte), ("lt", r.lt), ("lte", r.lte)];
                let range = bounds
                    .into_iter()
                    .filter_map(|(k, b)| Some((k.to_owned(), bound(b?))));
                out.insert("range".into(), Map::from_iter(range).into());
            }
            let unsupported = [
                ("geo_bounding_box", f.geo_bounding_box.is_some()),
                ("geo_radius", f.geo_radius.is_some()),
                ("geo_polygon", f.geo_polygon.is_some()),
                ("values_count", f.values_count.is_some()),
                ("datetime_range", f.datetime_range.is_some()),
                ("is_empty", f.is_empty.is_some()),
                ("is_null", f.is_null.is_some()),
            ];
            for (name, _) in unsupported.into_iter().filter(|(_, set)| *set) {
                out.insert(name.into(), Value::Null);
            }
            out.into()
        }
        Some(One::IsEmpty(e)) => one("is_empty", key(&e.key)),
        Some(One::IsNull(e)) => one("is_null", key(&e.key)),
        Some(One::HasId(h)) => {
            let id = |p: &q::PointId| match &p.point_id_options {
                Some(PointIdOptions::Num(n)) => Value::from(*n),
                Some(PointIdOptions::Uuid(u)) => Value::from(u.as_str()),
                None => Value::Null,
            };
            one("has_id", h.has_id.iter().map(id).collect())
        }
        Some(One::Nested(n)) => {
            let mut nested = Map::from_iter([("key".to_owned(), Value::from(n.key.as_str()))]);
            if let Some(f) = &n.filter {
                nested.insert("filter".into(), grpc_filter_json(f));
            }
            one("nested", nested.into())
        }
        Some(One::Filter(f)) => grpc_filter_json(f),
        Some(One::HasVector(_)) => one("has_vector", Value::Null),
        Some(One::Slice(_)) => one("slice", Value::Null),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "6f1c2d7e-0b4a-4c55-9a3e-2f0d8e1b7c11";

    fn id() -> PointId {
        PointId::Uuid(uuid::Uuid::parse_str(ID).unwrap())
    }

    fn filter(v: Value) -> Filter {
        from_value(&v).unwrap().unwrap()
    }

    fn hits(f: Value, payload: &Value) -> bool {
        filter(f).matches(&id(), payload.as_object().unwrap())
    }

    fn must(c: Value) -> Value {
        json!({ "must": [c] })
    }

    fn error(f: Value) -> String {
        Filter::parse(&f.to_string()).unwrap_err().0
    }

    fn key_match(key: &str, m: Value) -> Value {
        must(json!({ "key": key, "match": m }))
    }

    #[test]
    fn match_value_compares_within_its_type_and_any_array_element() {
        let p = json!({ "city": "London", "n": 3, "flag": true, "tags": ["red", "blue"] });
        assert!(hits(key_match("city", json!({ "value": "London" })), &p));
        assert!(!hits(key_match("city", json!({ "value": "Paris" })), &p));
        assert!(hits(key_match("n", json!({ "value": 3 })), &p));
        assert!(!hits(key_match("n", json!({ "value": 4 })), &p));
        assert!(!hits(key_match("n", json!({ "value": "3" })), &p));
        assert!(hits(key_match("flag", json!({ "value": true })), &p));
        assert!(!hits(key_match("flag", json!({ "value": false })), &p));
        assert!(hits(key_match("tags", json!({ "value": "blue" })), &p));
        assert!(!hits(key_match("tags", json!({ "value": "green" })), &p));
        assert!(!hits(
            key_match("missing", json!({ "value": "London" })),
            &p
        ));
        let parsed = filter(key_match("n", json!({ "value": 3 })));
        let Some(Condition::Field(f)) = parsed.must.as_ref().and_then(|m| m.first()) else {
            panic!("not a field condition: {parsed:?}");
        };
        assert_eq!(f.r#match, Some(Match::Value(MatchValue::Integer(3))));
    }

    #[test]
    fn integral_floats_count_as_integers() {
        assert!(hits(
            key_match("n", json!({ "value": 1 })),
            &json!({ "n": 1.0 })
        ));
        assert!(hits(
            key_match("n", json!({ "value": 1.0 })),
            &json!({ "n": 1 })
        ));
        assert!(!hits(
            key_match("n", json!({ "value": 1 })),
            &json!({ "n": 1.5 })
        ));
        assert!(hits(
            key_match("n", json!({ "any": [2.0, 1] })),
            &json!({ "n": 1.0 })
        ));
        assert_eq!(
            error(key_match("n", json!({ "value": 1.5 }))),
            "filter.must[0].match.value: expected a string, an integer or a bool"
        );
    }

    #[test]
    fn match_any_except_and_text() {
        let p =
            json!({ "s": "b", "i": 2, "arr": ["a", "b"], "nul": null, "body": "the Quick fox" });
        assert!(hits(key_match("s", json!({ "any": ["a", "b"] })), &p));
        assert!(!hits(key_match("s", json!({ "any": ["x"] })), &p));
        assert!(hits(key_match("i", json!({ "any": [1, 2] })), &p));
        assert!(!hits(key_match("i", json!({ "any": [1, 3] })), &p));
        assert!(!hits(key_match("i", json!({ "any": ["2"] })), &p));
        assert!(hits(key_match("s", json!({ "except": ["x"] })), &p));
        assert!(!hits(key_match("s", json!({ "except": ["b"] })), &p));
        assert!(!hits(key_match("i", json!({ "except": [2] })), &p));
        // Qdrant: another type is "not one of them"; a missing or null field is no value.
        assert!(hits(key_match("i", json!({ "except": ["x"] })), &p));
        assert!(!hits(key_match("missing", json!({ "except": ["x"] })), &p));
        assert!(!hits(key_match("nul", json!({ "except": ["x"] })), &p));
        assert!(hits(key_match("arr", json!({ "except": ["a"] })), &p));
        assert!(!hits(key_match("arr", json!({ "except": ["a", "b"] })), &p));
        assert!(hits(key_match("body", json!({ "text": "Quick f" })), &p));
        assert!(!hits(key_match("body", json!({ "text": "quick" })), &p));
        assert!(!hits(key_match("i", json!({ "text": "2" })), &p));
    }

    #[test]
    fn mixed_any_list_is_refused() {
        let e = error(key_match("k", json!({ "any": ["a", 1] })));
        assert_eq!(
            e,
            "filter.must[0]: match.any must hold only strings or only integers"
        );
        let e = error(key_match("k", json!({ "except": [true] })));
        assert!(
            e.contains("match.except must hold only strings or only integers"),
            "{e}"
        );
    }

    #[test]
    fn range_bounds_and_types() {
        let p = json!({ "price": 10, "name": "10", "many": [1, 50] });
        let range = |key: &str, r: Value| must(json!({ "key": key, "range": r }));
        assert!(!hits(range("price", json!({ "gt": 10 })), &p));
        assert!(hits(range("price", json!({ "gte": 10 })), &p));
        assert!(!hits(range("price", json!({ "lt": 10 })), &p));
        assert!(hits(range("price", json!({ "lte": 10 })), &p));
        assert!(hits(range("price", json!({ "gt": 5, "lt": 20.5 })), &p));
        assert!(!hits(range("price", json!({ "gt": 5, "lt": 9 })), &p));
        assert!(!hits(range("name", json!({ "gte": 0 })), &p));
        assert!(hits(range("many", json!({ "gt": 40 })), &p));
        assert!(!hits(range("missing", json!({ "gt": 0 })), &p));
        assert_eq!(
            error(range("price", json!({ "gt": "1" }))),
            "filter.must[0].range.gt: expected a number"
        );
        assert!(error(range("price", json!({}))).starts_with("filter.must[0].range: "));
    }

    #[test]
    fn is_empty_and_is_null() {
        let p = json!({ "e": [], "n": null, "v": 1, "an": [null, 1], "arr": [1] });
        let empty = |key: &str| hits(must(json!({ "is_empty": { "key": key } })), &p);
        let null = |key: &str| hits(must(json!({ "is_null": { "key": key } })), &p);
        assert!(empty("missing") && empty("e") && empty("n"));
        assert!(!empty("v") && !empty("arr") && !empty("an"));
        assert!(null("n") && null("an"));
        assert!(!null("missing") && !null("v") && !null("e"));
    }

    #[test]
    fn has_id_takes_uuids_and_integers() {
        let p = json!({});
        assert!(hits(must(json!({ "has_id": [42, ID] })), &p));
        assert!(!hits(
            must(json!({ "has_id": ["00000000-0000-0000-0000-000000000001", 42] })),
            &p
        ));
        let f = filter(must(json!({ "has_id": [42] })));
        assert!(f.matches(&PointId::Num(42), &Map::new()));
        assert!(!f.matches(&id(), &Map::new()));
        assert_eq!(
            error(must(json!({ "has_id": [ID, "nope"] }))),
            "filter.must[0].has_id[1]: expected an unsigned integer or a UUID string"
        );
    }

    #[test]
    fn keys_are_json_paths() {
        let p = json!({
            "a": { "b": { "c": 5 } },
            "items": [{ "sku": "x" }, { "sku": "y" }],
            "x.y": 1,
        });
        assert!(hits(key_match("a.b.c", json!({ "value": 5 })), &p));
        assert!(!hits(key_match("a.b", json!({ "value": 5 })), &p));
        assert!(hits(key_match("items[].sku", json!({ "value": "y" })), &p));
        assert!(hits(key_match("items[0].sku", json!({ "value": "x" })), &p));
        assert!(!hits(
            key_match("items[0].sku", json!({ "value": "y" })),
            &p
        ));
        // As in Qdrant, arrays are entered only where the key says `[]`.
        assert!(!hits(key_match("items.sku", json!({ "value": "y" })), &p));
        assert!(hits(key_match("\"x.y\"", json!({ "value": 1 })), &p));
        assert_eq!(
            error(key_match("a..b", json!({ "value": 1 }))),
            "filter.must[0].key: \"a..b\" is not a valid key (like a.b, a[].b or a[0].b)"
        );
    }

    #[test]
    fn nested_needs_one_element_to_match_all() {
        let p = json!({ "items": [{ "sku": "x", "qty": 1 }, { "sku": "y", "qty": 5 }] });
        let inner = |sku: &str| {
            json!({ "must": [
            { "key": "sku", "match": { "value": sku } },
            { "key": "qty", "range": { "gte": 5 } },
        ] })
        };
        let nested = |key: &str, f: Value| must(json!({ "nested": { "key": key, "filter": f } }));
        assert!(!hits(nested("items", inner("x")), &p));
        assert!(hits(nested("items", inner("y")), &p));
        assert!(hits(nested("items[]", inner("y")), &p));
        // The same two conditions on flat paths may hold on different elements.
        let flat = json!({ "must": [
            { "key": "items[].sku", "match": { "value": "x" } },
            { "key": "items[].qty", "range": { "gte": 5 } },
        ] });
        assert!(hits(flat, &p));
        // Qdrant checks nested objects without the point's id.
        assert!(!hits(
            nested("items", json!({ "must": [{ "has_id": [ID] }] })),
            &p
        ));
    }

    #[test]
    fn clauses_combine_as_in_qdrant() {
        let p = json!({ "a": 1, "b": 2, "c": 3 });
        let eq = |k: &str, v: i64| json!({ "key": k, "match": { "value": v } });
        assert!(hits(json!({ "must": [eq("a", 1), eq("b", 2)] }), &p));
        assert!(!hits(json!({ "must": [eq("a", 1), eq("b", 9)] }), &p));
        assert!(hits(json!({ "should": [eq("a", 9), eq("b", 2)] }), &p));
        assert!(!hits(json!({ "should": [eq("a", 9), eq("b", 9)] }), &p));
        assert!(!hits(json!({ "must_not": [eq("a", 9), eq("c", 3)] }), &p));
        assert!(hits(json!({ "must_not": [eq("a", 9)] }), &p));
        let min = |n: usize| {
            json!({ "min_should": {
            "conditions": [eq("a", 1), eq("b", 9), eq("c", 3)], "min_count": n } })
        };
        assert!(hits(min(2), &p));
        assert!(!hits(min(3), &p));
        let all_three = json!({ "min_should": {
            "conditions": [eq("a", 1), eq("b", 2), eq("c", 3)], "min_count": 2 } });
        assert!(hits(all_three, &p), "at least, not exactly, min_count");
        let inner = json!({ "should": [{ "must": [eq("a", 1), eq("b", 9)] }, eq("c", 9)] });
        assert!(!hits(inner, &p));
        let inner = json!({ "should": [{ "must": [eq("a", 1), eq("b", 2)] }, eq("c", 9)] });
        assert!(hits(inner, &p));
        assert!(
            hits(json!({ "must": eq("a", 1) }), &p),
            "one condition in place of a list"
        );
        assert!(error(min(0)).starts_with("filter.min_should.min_count: "));
    }

    #[test]
    fn empty_filters_mean_no_filter() {
        assert_eq!(Filter::from_value(&json!({})).unwrap(), None);
        assert!(
            Filter::from_value(&json!({ "must": [{ "has_id": [1] }] }))
                .unwrap()
                .is_some()
        );
        for text in [
            "",
            "  \n",
            "{}",
            r#"{"must": [], "should": []}"#,
            r#"{"must": null}"#,
        ] {
            assert_eq!(Filter::parse(text).unwrap(), None, "{text:?}");
        }
        assert!(Filter::default().matches(&id(), &Map::new()));
        // An empty should inside a clause is ignored too, as it is over gRPC.
        assert!(hits(json!({ "must": [{ "should": [] }] }), &json!({})));
        let built = Filter {
            should: Some(Vec::new()),
            ..Filter::default()
        };
        assert!(
            built.matches(&id(), &Map::new()),
            "an empty should built in code"
        );
    }

    fn deep(levels: usize) -> Value {
        let mut f = must(json!({ "key": "a", "match": { "value": 1 } }));
        for _ in 1..levels {
            f = must(f);
        }
        f
    }

    #[test]
    fn depth_is_bounded() {
        assert!(hits(deep(8), &json!({ "a": 1 })));
        assert!(!hits(deep(8), &json!({ "a": 2 })));
        let e = error(deep(9));
        assert!(e.ends_with(": filter nests deeper than 8 levels"), "{e}");
        assert!(e.starts_with("filter.must[0].must[0]"), "{e}");
        let nested = json!({ "nested": { "key": "x", "filter": deep(8) } });
        assert!(error(must(nested)).contains("filter nests deeper than 8 levels"));
    }

    #[test]
    fn condition_count_is_bounded() {
        let many = |n: usize| {
            let c: Vec<Value> = (0..n)
                .map(|i| json!({ "key": "a", "match": { "value": i } }))
                .collect();
            json!({ "should": c })
        };
        assert!(hits(many(256), &json!({ "a": 255 })));
        assert_eq!(
            error(many(257)),
            "filter.should[256]: more than 256 conditions in the filter"
        );
        // Conditions inside inner filters count as well.
        let inner = json!({ "must": [many(200), many(56)] });
        assert!(error(inner).contains("more than 256 conditions"));
    }

    #[test]
    fn text_and_lists_are_bounded() {
        let long = format!(
            r#"{{"must": [{{"key": "k", "match": {{"value": "{}"}}}}]}}"#,
            "x".repeat(65_536)
        );
        assert!(
            Filter::parse(&long)
                .unwrap_err()
                .0
                .starts_with("filter: longer than 65536 bytes")
        );
        let list = |n: usize| (0..n).map(Value::from).collect::<Vec<_>>();
        assert!(Filter::parse(&key_match("k", json!({ "any": list(1024) })).to_string()).is_ok());
        assert_eq!(
            error(key_match("k", json!({ "except": list(1025) }))),
            "filter.must[0].match.except: more than 1024 items"
        );
        assert_eq!(
            error(must(json!({ "has_id": list(1025) }))),
            "filter.must[0].has_id: more than 1024 items"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let ok = json!({ "key": "a", "match": { "value": 1 } });
        let bad = json!({ "key": "a", "mach": { "value": 1 } });
        assert_eq!(
            error(json!({ "must": [ok, ok, bad] })),
            "filter.must[2]: unknown condition key \"mach\""
        );
        assert!(error(json!({ "mus": [] })).starts_with("filter: unknown key \"mus\""));
        assert_eq!(
            error(json!({ "should": [{ "key": "a", "match": { "valu": 1 } }] })),
            "filter.should[0].match: unknown key \"valu\""
        );
        assert_eq!(
            error(must(json!({ "key": "a", "range": { "gtt": 1 } }))),
            "filter.must[0].range: unknown key \"gtt\""
        );
        assert_eq!(
            error(must(
                json!({ "nested": { "key": "x", "filter": must(json!({ "oops": 1 })) } })
            )),
            "filter.must[0].nested.filter.must[0]: unknown condition key \"oops\""
        );
        assert_eq!(
            error(json!({ "must_not": [{ "is_empty": { "key": "a" }, "must": [] }] })),
            "filter.must_not[0]: \"is_empty\" takes no other keys beside it"
        );
        assert_eq!(
            error(must(json!({ "key": "a", "geo_radius": {} }))),
            "filter.must[0].geo_radius: is not supported"
        );
        assert_eq!(
            error(json!({ "min_should": { "conditions": [], "min_count": 1, "x": 0 } })),
            "filter.min_should: unknown key \"x\""
        );
    }

    #[test]
    fn malformed_json_is_an_error() {
        let e = Filter::parse(r#"{"must": ["#).unwrap_err().0;
        assert!(e.starts_with("filter: malformed JSON: "), "{e}");
        assert_eq!(
            Filter::parse("[1]").unwrap_err().0,
            "filter: expected a filter object"
        );
        assert_eq!(
            error(json!({ "must": 3 })),
            "filter.must: expected a condition or a list of conditions"
        );
    }

    /// Every supported form, and a payload it matches.
    fn everything() -> (Filter, Value) {
        let f = filter(json!({
            "must": [
                { "key": "city", "match": { "value": "London" } },
                { "key": "n", "match": { "value": 3 } },
                { "key": "flag", "match": { "value": true } },
                { "key": "tags", "match": { "any": ["a", "b"] } },
                { "key": "codes", "match": { "any": [1, 2] } },
                { "key": "tags", "match": { "except": ["z"] } },
                { "key": "codes", "match": { "except": [9] } },
                { "key": "body", "match": { "text": "word" } },
                { "key": "price", "range": { "gt": 1, "lte": 9.5 } },
                { "is_empty": { "key": "gone" } },
                { "is_null": { "key": "nothing" } },
                { "has_id": [ID, 42] },
                { "nested": { "key": "items", "filter": {
                    "must": [{ "key": "sku", "match": { "value": "x" } }] } } },
                { "should": [{ "key": "a.b[].c", "match": { "value": 1 } }],
                  "must_not": [{ "key": "\"d.e\"", "match": { "value": 2 } }] },
            ],
            "should": [{ "key": "items[0].sku", "match": { "value": "x" } }],
            "must_not": [{ "key": "city", "match": { "value": "Paris" } }],
            "min_should": { "min_count": 1, "conditions": [
                { "key": "n", "range": { "gte": 3 } }, { "key": "n", "range": { "lt": 0 } } ] },
        }));
        let payload = json!({
            "city": "London", "n": 3, "flag": true, "tags": ["b", "c"], "codes": [2],
            "body": "a word here", "price": 9.5, "nothing": null,
            "items": [{ "sku": "x" }], "a": { "b": [{ "c": 0 }, { "c": 1 }] }, "d.e": 3,
        });
        (f, payload)
    }

    #[test]
    fn everything_matches_and_each_part_counts() {
        let (f, payload) = everything();
        let p = payload.as_object().unwrap();
        assert!(f.matches(&id(), p));
        assert!(!f.matches(&PointId::Num(7), p));
        for (key, value) in [
            ("city", json!("Paris")),
            ("price", json!(9.6)),
            ("d.e", json!(2)),
            ("gone", json!([1])),
        ] {
            let mut changed = p.clone();
            changed.insert(key.into(), value);
            assert!(!f.matches(&id(), &changed), "{key}");
        }
    }

    #[test]
    fn to_json_round_trips() {
        let (f, _) = everything();
        let text = f.to_json();
        assert_eq!(Filter::parse(&text).unwrap(), Some(f.clone()));
        assert!(
            text.contains(r#"{"key":"city","match":{"value":"London"}}"#),
            "{text}"
        );
        assert!(
            text.contains(&format!(r#"{{"has_id":["{ID}",42]}}"#)),
            "{text}"
        );
        assert!(text.contains(r#""range":{"gt":1.0,"lte":9.5}"#), "{text}");
        // serde's own entry point reads the same syntax.
        assert_eq!(serde_json::from_str::<Filter>(&text).unwrap(), f);
        let e =
            serde_json::from_str::<Filter>(r#"{"must": [{"key": "a", "mach": 1}]}"#).unwrap_err();
        assert!(
            e.to_string().contains("unknown condition key \"mach\""),
            "{e}"
        );
    }

    #[test]
    fn qdrant_round_trips_and_uses_qdrants_forms() {
        use q::r#match::MatchValue as M;
        let (f, _) = everything();
        let g = to_qdrant(&f);
        assert_eq!(from_qdrant(&g).unwrap(), f);
        let field = |i: usize| match &g.must[i].condition_one_of {
            Some(One::Field(fc)) => fc.clone(),
            other => panic!("{other:?}"),
        };
        let value = |i: usize| field(i).r#match.and_then(|m| m.match_value);
        assert_eq!(value(0), Some(M::Keyword("London".into())));
        assert_eq!(value(1), Some(M::Integer(3)));
        assert_eq!(value(2), Some(M::Boolean(true)));
        assert_eq!(
            value(3),
            Some(M::Keywords(q::RepeatedStrings {
                strings: vec!["a".into(), "b".into()]
            }))
        );
        assert_eq!(
            value(4),
            Some(M::Integers(q::RepeatedIntegers {
                integers: vec![1, 2]
            }))
        );
        assert_eq!(
            value(5),
            Some(M::ExceptKeywords(q::RepeatedStrings {
                strings: vec!["z".into()]
            }))
        );
        assert_eq!(
            value(6),
            Some(M::ExceptIntegers(q::RepeatedIntegers { integers: vec![9] }))
        );
        assert_eq!(value(7), Some(M::Text("word".into())));
        assert_eq!(
            field(8).range,
            Some(q::Range {
                gt: Some(1.0),
                lte: Some(9.5),
                ..Default::default()
            })
        );
        let Some(One::HasId(h)) = &g.must[11].condition_one_of else {
            panic!()
        };
        assert_eq!(
            h.has_id[0].point_id_options,
            Some(PointIdOptions::Uuid(ID.into()))
        );
        assert_eq!(h.has_id[1].point_id_options, Some(PointIdOptions::Num(42)));
        assert!(matches!(&g.must[12].condition_one_of, Some(One::Nested(n)) if n.key == "items"));
        assert!(
            matches!(&g.must[13].condition_one_of, Some(One::Filter(inner)) if inner.must_not.len() == 1)
        );
        assert_eq!(
            g.min_should
                .as_ref()
                .map(|m| (m.min_count, m.conditions.len())),
            Some((1, 2))
        );
    }

    #[test]
    fn from_qdrant_refuses_what_it_cannot_evaluate() {
        let with = |fc: q::FieldCondition| q::Filter {
            must: vec![q::Condition {
                condition_one_of: Some(One::Field(fc)),
            }],
            ..Default::default()
        };
        let base = || q::FieldCondition {
            key: "k".into(),
            ..Default::default()
        };
        let geo = q::FieldCondition {
            geo_radius: Some(q::GeoRadius::default()),
            ..base()
        };
        assert_eq!(
            from_qdrant(&with(geo)).unwrap_err().0,
            "filter.must[0].geo_radius: is not supported"
        );
        let dt = q::FieldCondition {
            datetime_range: Some(q::DatetimeRange::default()),
            ..base()
        };
        assert!(
            from_qdrant(&with(dt))
                .unwrap_err()
                .0
                .contains("datetime_range: is not supported")
        );
        let phrase = q::Match {
            match_value: Some(q::r#match::MatchValue::Phrase("a b".into())),
        };
        let e = from_qdrant(&with(q::FieldCondition {
            r#match: Some(phrase),
            ..base()
        }))
        .unwrap_err();
        assert_eq!(e.0, "filter.must[0].match.phrase: is not supported");
        let nan = q::Range {
            gt: Some(f64::NAN),
            ..Default::default()
        };
        let e = from_qdrant(&with(q::FieldCondition {
            range: Some(nan),
            ..base()
        }))
        .unwrap_err();
        assert_eq!(e.0, "filter.must[0].range.gt: expected a number");
        let vector = q::Condition {
            condition_one_of: Some(One::HasVector(q::HasVectorCondition::default())),
        };
        let e = from_qdrant(&q::Filter {
            should: vec![vector],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.0, "filter.should[0]: has_vector is not supported");
        assert!(
            from_qdrant(&with(base()))
                .unwrap_err()
                .0
                .contains("needs match or range")
        );
        assert_eq!(
            from_qdrant(&q::Filter::default()).unwrap(),
            Filter::default()
        );
    }
}
