//! Request checks that need the model: written once, here, for every edge.

use crate::{EmbedError, EmbedParams, ModelInfo, core::Limits};

/// Checks the request against the model; returns the output dimension.
pub(crate) fn validate(
    limits: &Limits,
    info: &ModelInfo,
    capacity: usize,
    p: &EmbedParams,
) -> Result<usize, EmbedError> {
    let max = limits.max_inputs_per_request;
    if p.inputs.is_empty() {
        return Err(EmbedError::invalid(
            "input",
            "input must not be empty: send at least one string",
        ));
    }
    if p.inputs.len() > max {
        let msg = format!(
            "input has {} items; at most {max} are allowed per request",
            p.inputs.len()
        );
        return Err(EmbedError::invalid("input", msg));
    }
    if p.inputs.len() > capacity {
        let msg = format!(
            "input has {} items but model `{}` queues at most {capacity}: split the request",
            p.inputs.len(),
            info.name
        );
        return Err(EmbedError::invalid("input", msg));
    }
    if let Some(i) = p.inputs.iter().position(|s| s.is_empty()) {
        let msg = format!("input[{i}] is an empty string; every input must contain text");
        return Err(EmbedError::invalid("input", msg));
    }
    match p.dimensions {
        None => Ok(info.dimensions as usize),
        Some(d) if d >= 1 && d <= info.dimensions => Ok(d as usize),
        Some(d) => {
            let msg = format!(
                "dimensions must be between 1 and {} for model `{}`, got {d}",
                info.dimensions, info.name
            );
            Err(EmbedError::invalid("dimensions", msg))
        }
    }
}

/// The prefix to put before every input: the named prompt, else the model's default.
pub(crate) fn prompt_prefix<'a>(
    model: &str,
    prompts: &'a [(String, String)],
    default_prompt: Option<&str>,
    requested: Option<&str>,
) -> Result<&'a str, EmbedError> {
    let Some(name) = requested.or(default_prompt) else {
        return Ok("");
    };
    match prompts.iter().find(|(n, _)| n == name) {
        Some((_, prefix)) => Ok(prefix),
        None if prompts.is_empty() => Err(EmbedError::invalid(
            "prompt_name",
            format!("model `{model}` has no prompts; leave prompt_name unset"),
        )),
        None => {
            let known: Vec<&str> = prompts.iter().map(|(n, _)| n.as_str()).collect();
            let msg = format!(
                "model `{model}` has no prompt `{name}`; known prompts: {}",
                known.join(", ")
            );
            Err(EmbedError::invalid("prompt_name", msg))
        }
    }
}
