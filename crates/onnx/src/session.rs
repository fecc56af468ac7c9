//! One ONNX Runtime session and how a batch of token ids goes through it.

use std::path::Path;

use ort::{
    session::{Session, builder::GraphOptimizationLevel},
    value::TensorRef,
};

use crate::OnnxError;

/// The graph contract of `model.onnx` (see scripts/build_onnx_minilm.py).
const INPUT_IDS: &str = "input_ids";
const ATTENTION_MASK: &str = "attention_mask";
const OUTPUT: &str = "sentence_embedding";

pub(crate) struct ModelSession {
    session: Session,
    dimensions: usize,
}

impl ModelSession {
    pub(crate) fn load(
        path: &Path,
        intra_threads: usize,
        dimensions: usize,
    ) -> Result<Self, OnnxError> {
        let error = |message: String| OnnxError::Session {
            path: path.display().to_string(),
            message,
        };
        let environment = crate::runtime::environment().ok_or_else(|| {
            error("ONNX Runtime is not initialised (init_runtime was not called)".into())
        })?;
        let session = Session::builder(environment)
            .map_err(|e| error(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| error(e.to_string()))?
            .with_intra_threads(intra_threads)
            .map_err(|e| error(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| error(e.to_string()))?
            .commit_from_file(path)
            .map_err(|e| error(e.to_string()))?;
        Ok(ModelSession {
            session,
            dimensions,
        })
    }

    /// Runs one batch, padded to its longest input. Returns mean-pooled vectors in batch order.
    pub(crate) fn run(&mut self, batch: &[&[i64]]) -> Result<Vec<Vec<f32>>, String> {
        let rows = batch.len();
        let width = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        let mut ids = vec![0i64; rows * width];
        let mut mask = vec![0i64; rows * width];
        for (row, tokens) in batch.iter().enumerate() {
            ids[row * width..row * width + tokens.len()].copy_from_slice(tokens);
            mask[row * width..row * width + tokens.len()].fill(1);
        }
        let ids =
            TensorRef::from_array_view(([rows, width], &ids[..])).map_err(|e| e.to_string())?;
        let mask =
            TensorRef::from_array_view(([rows, width], &mask[..])).map_err(|e| e.to_string())?;
        let outputs = self
            .session
            .run(ort::inputs![INPUT_IDS => ids, ATTENTION_MASK => mask])
            .map_err(|e| e.to_string())?;
        let output = outputs
            .get(OUTPUT)
            .ok_or_else(|| format!("the graph has no `{OUTPUT}` output"))?;
        let (shape, data) = output
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        if data.len() != rows * self.dimensions {
            return Err(format!(
                "output shape {shape:?}, expected [{rows}, {}]",
                self.dimensions
            ));
        }
        Ok(data
            .chunks_exact(self.dimensions)
            .map(<[f32]>::to_vec)
            .collect())
    }
}
