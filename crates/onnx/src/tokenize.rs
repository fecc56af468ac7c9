//! Tokenization as sentence-transformers does it: the model's own `tokenizer.json`, special
//! tokens added, no padding (the batcher pads each run to its longest input), and truncation
//! to `max_input_tokens` keeping `[CLS] ... [SEP]`.

use std::path::Path;

use citadel_embeddings::EmbedError;
use tokenizers::Tokenizer;

use crate::OnnxError;

/// Generous bound on the text one token covers (a 100-character word of 4-byte characters is a
/// single `[UNK]`); past `max_tokens` of these, text cannot change a truncated encoding.
const MAX_BYTES_PER_TOKEN: usize = 400;

/// The longest prefix of `text` of at most `max_bytes`, cut on a character boundary.
fn prefix(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub(crate) struct TextTokenizer {
    inner: Tokenizer,
    max_tokens: usize,
}

impl TextTokenizer {
    pub(crate) fn load(path: &Path, max_tokens: usize) -> Result<Self, OnnxError> {
        let error = |message: String| OnnxError::Tokenizer {
            path: path.display().to_string(),
            message,
        };
        let mut inner = Tokenizer::from_file(path).map_err(|e| error(e.to_string()))?;
        // The published tokenizer.json pads and truncates at 128; both are done here instead.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| error(e.to_string()))?;
        Ok(TextTokenizer { inner, max_tokens })
    }

    /// Token ids per input. Over-long inputs are cut to `max_tokens` (keeping the final
    /// special token) when `truncate`, refused otherwise.
    pub(crate) fn encode(
        &self,
        inputs: &[String],
        truncate: bool,
    ) -> Result<Vec<Vec<i64>>, EmbedError> {
        inputs
            .iter()
            .enumerate()
            .map(|(i, text)| self.encode_one(i, text, truncate))
            .collect()
    }

    fn encode_one(&self, index: usize, text: &str, truncate: bool) -> Result<Vec<i64>, EmbedError> {
        // Only the first `max_tokens` tokens survive truncation, and a token never needs more
        // than a few hundred bytes of text, so a 16 MiB string need not be tokenized whole.
        let text = match truncate {
            true => prefix(text, self.max_tokens.saturating_mul(MAX_BYTES_PER_TOKEN)),
            false => text,
        };
        let encoding = self.inner.encode(text, true).map_err(|e| {
            EmbedError::invalid(
                "input",
                format!("input[{index}] could not be tokenized: {e}"),
            )
        })?;
        let ids = encoding.get_ids();
        if ids.len() <= self.max_tokens {
            return Ok(ids.iter().map(|&id| i64::from(id)).collect());
        }
        if !truncate {
            let msg = format!(
                "input[{index}] has {} tokens, more than this model's limit of {}; shorten it or allow truncation",
                ids.len(),
                self.max_tokens
            );
            return Err(EmbedError::invalid("input", msg));
        }
        let last = ids[ids.len() - 1];
        let mut kept: Vec<i64> = ids[..self.max_tokens - 1]
            .iter()
            .map(|&id| i64::from(id))
            .collect();
        kept.push(i64::from(last));
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::prefix;

    #[test]
    fn prefix_cuts_on_character_boundaries() {
        assert_eq!(prefix("héllo", 2), "h");
        assert_eq!(prefix("héllo", 3), "hé");
        assert_eq!(prefix("hello", 99), "hello");
    }
}
