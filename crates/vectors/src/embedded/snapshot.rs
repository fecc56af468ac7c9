//! The embedded store's files as `citadel backup` copies them and `citadel restore` puts
//! them back, from another process than the one serving them. A collection is two files:
//! its spec (written whole, by rename) and its point log (appended in checksummed frames,
//! replaced whole by compaction). Each log is opened and its length read first, and only
//! that many bytes are copied from the open handle: everything synced before the backup began
//! is in the copy, a frame being appended meanwhile is at most a torn tail (which loading
//! cuts), and a compaction that renames a new log in leaves the handle on the complete old one.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use super::{SPEC_FILE, log::LOG_FILE};
use crate::{StoreError, core::check_name};

/// One file to copy: its path below the store's directory, an open handle, and how many
/// bytes of it to take.
pub struct SnapshotFile {
    pub relative: PathBuf,
    pub file: File,
    pub len: u64,
}

fn io(what: &str, path: &Path, e: &std::io::Error) -> StoreError {
    StoreError::Internal(format!("cannot {what} {}: {e}", path.display()))
}

/// The files of every collection under `dir` (none when `dir` does not exist), the spec of
/// each before its log.
pub fn snapshot_files(dir: &Path) -> Result<Vec<SnapshotFile>, StoreError> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(io("read", dir, &e)),
    };
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io("read", dir, &e))?;
        if entry.path().join(SPEC_FILE).is_file()
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    for name in names {
        for file_name in [SPEC_FILE, LOG_FILE] {
            let path = dir.join(&name).join(file_name);
            let file = match File::open(&path) {
                Ok(file) => file,
                // A collection deleted meanwhile: it was not there when the backup began.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("open", &path, &e)),
            };
            let len = file.metadata().map_err(|e| io("stat", &path, &e))?.len();
            files.push(SnapshotFile {
                relative: Path::new(&name).join(file_name),
                file,
                len,
            });
        }
    }
    Ok(files)
}

/// Whether `relative` names a file the store keeps (`<collection>/collection.json` or
/// `<collection>/points.log`, with a valid collection name): restore writes nothing else.
pub fn is_store_file(relative: &Path) -> bool {
    let parts: Vec<_> = relative.components().collect();
    let [
        std::path::Component::Normal(name),
        std::path::Component::Normal(file),
    ] = parts[..]
    else {
        return false;
    };
    let (Some(name), Some(file)) = (name.to_str(), file.to_str()) else {
        return false;
    };
    check_name(name).is_ok() && (file == SPEC_FILE || file == LOG_FILE)
}

/// The collections under `dir` (directories holding a spec).
pub fn collections_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(SPEC_FILE).is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}
