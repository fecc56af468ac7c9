//! Tokenization as sentence-transformers does it: the model's own `tokenizer.json`, special
//! tokens added, no padding (the batcher pads each run to its longest input), and truncation
//! to `max_input_tokens` keeping `[CLS] ... [SEP]`.

use std::path::Path;

use citadel_embeddings::EmbedError;
use tokenizers::Tokenizer;

use crate::OnnxError;

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
