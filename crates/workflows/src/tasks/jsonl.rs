//! The one JSONL reader: `embed_batch`, `cache_warm`, `vector_ingest` and `citadel cache warm`
//! all read records the same way, so a file that works for one works for all.
//!
//! A line is a JSON string (the text) or an object whose `text_field` holds the text (by
//! default `text`, with `input` accepted too, OpenAI's name); an object's `id` and `payload`
//! come along. Blank lines are skipped; an error names `source:line` and what to write instead.

use serde_json::{Map, Value as Json};

/// One record of a JSONL file.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// 1-based line in the file.
    pub line: usize,
    pub text: String,
    pub id: Option<Json>,
    pub payload: Option<Map<String, Json>>,
}

/// Parses `content`; `source` names it in errors (a path, `stdin`, `input_file`).
/// `text_field` is `None` for the default (`text`, else `input`).
pub fn parse(source: &str, content: &str, text_field: Option<&str>) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    for (i, raw) in content.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let line = i + 1;
        let at = format!("{source}:{line}");
        let value: Json = serde_json::from_str(raw).map_err(|e| {
            format!("{at}: not valid JSON ({e}): each line must be a string or an object like {{\"text\": \"...\"}}")
        })?;
        let record = match value {
            Json::String(text) => Record {
                line,
                text,
                id: None,
                payload: None,
            },
            Json::Object(mut map) => {
                let text = match text_field {
                    Some(field) => map.remove(field),
                    None => map.remove("text").or_else(|| map.remove("input")),
                };
                let Some(Json::String(text)) = text else {
                    return Err(match text_field {
                        Some(f) => {
                            format!("{at}: no string field `{f}`: expected {{\"{f}\": \"...\"}}")
                        }
                        None => format!(
                            "{at}: no string field `text` (or `input`): expected {{\"text\": \"...\"}}"
                        ),
                    });
                };
                let payload = match map.remove("payload") {
                    None | Some(Json::Null) => None,
                    Some(Json::Object(p)) => Some(p),
                    Some(_) => return Err(format!("{at}: payload must be a JSON object")),
                };
                Record {
                    line,
                    text,
                    id: map.remove("id"),
                    payload,
                }
            }
            _ => return Err(format!("{at}: expected a string or an object")),
        };
        // The embedding service refuses empty inputs; better to say so here, with the line.
        if record.text.trim().is_empty() {
            return Err(format!(
                "{at}: the `text` is empty (empty inputs cannot be embedded)"
            ));
        }
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_objects_and_errors_with_lines() {
        let content = "\"plain\"\n\n{\"id\": 7, \"text\": \"a\", \"payload\": {\"k\": 1}}\n{\"input\": \"b\"}\n";
        let records = parse("f.jsonl", content, None).unwrap_or_default();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].text, "plain");
        assert_eq!(records[1].line, 3);
        assert_eq!(records[1].id, Some(Json::from(7)));
        assert_eq!(
            records[1].payload.as_ref().and_then(|p| p.get("k")),
            Some(&Json::from(1))
        );
        assert_eq!(records[2].text, "b");

        let custom =
            parse("f", "{\"body\": \"x\", \"text\": \"y\"}", Some("body")).unwrap_or_default();
        assert_eq!(custom[0].text, "x");

        for (bad, want) in [
            ("{\"text\": 3}", "f:1: no string field `text`"),
            ("\n[1]", "f:2: expected a string"),
            ("{nope", "f:1: not valid JSON"),
            ("{\"text\": \"  \"}", "f:1: the `text` is empty"),
            ("{\"text\": \"a\", \"payload\": 1}", "f:1: payload must be"),
        ] {
            let err = parse("f", bad, None).err().unwrap_or_default();
            assert!(err.starts_with(want), "{bad}: {err}");
        }
    }
}
