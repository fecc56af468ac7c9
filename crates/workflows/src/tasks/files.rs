//! Where `embed_batch` and `cache_warm` may read and write files: only under one directory
//! (`workflows.files_dir`), named by relative paths, so a submitted workflow can neither read
//! nor overwrite anything else on the worker's machine.

use std::path::{Component, Path, PathBuf};

use crate::TaskError;

/// Largest `input_file` read.
const MAX_INPUT_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct FileRoot {
    root: PathBuf,
}

impl FileRoot {
    pub fn new(root: impl Into<PathBuf>) -> FileRoot {
        FileRoot { root: root.into() }
    }

    /// Checks a path parameter without touching the disk (submit time).
    pub fn check(key: &str, path: &str) -> Result<(), String> {
        let p = Path::new(path);
        let plain = p
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        // It must name a file: `.`, `dir/` or `dir/.` would put temporary files beside the
        // root instead of in it.
        let names_a_file = matches!(p.components().next_back(), Some(Component::Normal(_)))
            && !path.ends_with('/')
            && !path.ends_with("/.");
        if path.is_empty() || !plain || !names_a_file || p.is_absolute() {
            return Err(format!(
                "params.{key} must name a file by a relative path inside the workers' \
                 files_dir, without `..`: got {path:?}"
            ));
        }
        Ok(())
    }

    pub fn resolve(&self, key: &str, path: &str) -> Result<PathBuf, String> {
        Self::check(key, path)?;
        Ok(self.root.join(path))
    }

    /// The whole of an `input_file` parameter's file, checked to be a regular file of a
    /// bounded size.
    pub(crate) async fn read_input(&self, path: &str) -> Result<String, TaskError> {
        let full = self
            .resolve("input_file", path)
            .map_err(TaskError::permanent)?;
        let cannot_read = |e: std::io::Error| {
            io_error(
                &e,
                format!("cannot read input_file {}: {e}", full.display()),
            )
        };
        let meta = tokio::fs::metadata(&full).await.map_err(cannot_read)?;
        if !meta.is_file() || meta.len() > MAX_INPUT_BYTES {
            return Err(TaskError::permanent(format!(
                "input_file {} must be a regular file of at most {MAX_INPUT_BYTES} bytes",
                full.display()
            )));
        }
        tokio::fs::read_to_string(&full).await.map_err(cannot_read)
    }
}

/// A file error as a retry decision: what is missing or forbidden stays so; the rest (a full
/// disk, too many open files) may pass.
pub(crate) fn io_error(e: &std::io::Error, message: String) -> TaskError {
    use std::io::ErrorKind::{InvalidData, InvalidInput, NotFound, PermissionDenied};
    match e.kind() {
        NotFound | PermissionDenied | InvalidData | InvalidInput => TaskError::permanent(message),
        _ => TaskError::retryable(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relative_paths_inside_the_root() {
        assert!(FileRoot::check("f", "corpus/a.jsonl").is_ok());
        assert!(FileRoot::check("f", "./a.jsonl").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", ".", "out/", "out/."] {
            assert!(FileRoot::check("f", bad).is_err(), "{bad}");
        }
        let root = FileRoot::new("/data");
        assert_eq!(
            root.resolve("f", "a.jsonl").ok(),
            Some(PathBuf::from("/data/a.jsonl"))
        );
    }
}
