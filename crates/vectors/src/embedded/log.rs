//! `points.log`: the embedded store's durable record of a collection, one frame per upsert or
//! delete, appended and synced before the write is acknowledged.
//!
//! A frame is `len: u32 LE | kind: u8 | id: 16 bytes | body | sha256(kind..body)[..4]`, where an
//! upsert's body is `dims: u32 | dims × f32 LE | payload JSON`. Loading replays the frames in
//! order. A torn last frame (a crash during the last append: it runs past the end of the file)
//! is cut off, since nothing in it was acknowledged; a bad frame anywhere else is corruption,
//! and the collection refuses to open rather than silently drop what follows it. An append
//! that fails part way is cut back to where it began, so a later append never lands behind
//! garbage. When live points are under a third of the frames, the log is rewritten from the
//! live set (a temporary file, synced, renamed, the directory synced).

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

use super::io;
use crate::store::{StoreError, StoredPoint};

pub const LOG_FILE: &str = "points.log";
const UPSERT: u8 = 1;
const DELETE: u8 = 2;
/// Below this many frames a log is never worth rewriting.
const COMPACT_MIN_FRAMES: u64 = 4_096;

pub enum Record {
    Upsert(StoredPoint),
    Delete(uuid::Uuid),
}

/// What `append` writes, borrowed from the caller.
pub enum Frame<'a> {
    Upsert(&'a StoredPoint),
    Delete(uuid::Uuid),
}

pub struct PointLog {
    path: PathBuf,
    file: File,
    frames: u64,
}

impl PointLog {
    /// Opens (creating) the log and hands every intact record to `apply`, oldest first.
    pub fn open(path: &Path, mut apply: impl FnMut(Record)) -> Result<PointLog, StoreError> {
        let mut bytes = Vec::new();
        if path.exists() {
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| io("read", path, &e))?;
        }
        let (mut at, mut frames) = (0usize, 0u64);
        while let Some((record, next)) = decode(&bytes, at) {
            apply(record);
            frames += 1;
            at = next;
        }
        if at < bytes.len() && !runs_past_end(&bytes, at) {
            return Err(StoreError::Internal(format!(
                "{} is corrupt at byte {at} of {}: move it aside to open the collection \
                 without the points stored after that byte",
                path.display(),
                bytes.len()
            )));
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io("open", path, &e))?;
        if at < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = bytes.len() - at,
                "vector log ends in a torn frame; cutting it off"
            );
            file.set_len(at as u64)
                .map_err(|e| io("truncate", path, &e))?;
        }
        let mut log = PointLog {
            path: path.to_path_buf(),
            file,
            frames,
        };
        log.seek_end()?;
        Ok(log)
    }

    fn seek_end(&mut self) -> Result<(), StoreError> {
        use std::io::Seek;
        self.file
            .seek(std::io::SeekFrom::End(0))
            .map(|_| ())
            .map_err(|e| io("seek", &self.path, &e))
    }

    /// Appends and syncs: when this returns, the records survive a crash. On failure the
    /// file is cut back to where it was, so nothing half-written stays in it.
    pub fn append<'a>(
        &mut self,
        frames: impl Iterator<Item = Frame<'a>>,
    ) -> Result<(), StoreError> {
        use std::io::Seek;
        let start = self
            .file
            .stream_position()
            .map_err(|e| io("seek", &self.path, &e))?;
        let mut n = 0;
        let written = (|| {
            let mut out = BufWriter::with_capacity(1 << 16, &self.file);
            for frame in frames {
                out.write_all(&encode(&frame))?;
                n += 1;
            }
            out.flush()?;
            drop(out);
            self.file.sync_data()
        })();
        if let Err(e) = written {
            let undone = self
                .file
                .set_len(start)
                .and_then(|()| self.file.seek(std::io::SeekFrom::Start(start)).map(|_| ()));
            if let Err(undo) = undone {
                tracing::error!(path = %self.path.display(), error = %undo, "cannot cut a failed append back");
            }
            return Err(io("write", &self.path, &e));
        }
        self.frames += n;
        Ok(())
    }

    /// Rewrites the log from `live()` when most frames are dead.
    pub fn compact_if_mostly_dead(
        &mut self,
        live_points: usize,
        live: impl FnOnce() -> Vec<StoredPoint>,
    ) -> Result<(), StoreError> {
        if self.frames < COMPACT_MIN_FRAMES || (live_points as u64) * 3 > self.frames {
            return Ok(());
        }
        let points = live();
        let temp = self.path.with_extension("log.tmp");
        // Written and synced whole before the rename, and kept open: the handle that wrote it
        // is the one later appends use, so no reopen can fail after the rename.
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&temp)
            .map_err(|e| io("create", &temp, &e))?;
        {
            let mut out = BufWriter::with_capacity(1 << 16, &file);
            for p in &points {
                out.write_all(&encode(&Frame::Upsert(p)))
                    .map_err(|e| io("write", &temp, &e))?;
            }
            out.flush().map_err(|e| io("write", &temp, &e))?;
        }
        file.sync_all().map_err(|e| io("sync", &temp, &e))?;
        std::fs::rename(&temp, &self.path).map_err(|e| io("rename", &self.path, &e))?;
        sync_dir(&self.path)?;
        self.file = file;
        self.frames = points.len() as u64;
        self.seek_end()
    }
}

/// Makes a new name (a created or renamed file) in `path`'s directory survive a crash.
pub fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync", dir, &e))
}

/// Whether the frame at `at` claims more bytes than the file has: a torn last append.
fn runs_past_end(bytes: &[u8], at: usize) -> bool {
    match bytes.get(at..at + 4) {
        None => true,
        Some(len) => {
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            at.saturating_add(8).saturating_add(len) > bytes.len()
        }
    }
}

fn encode(frame: &Frame<'_>) -> Vec<u8> {
    let mut body = Vec::new();
    match frame {
        Frame::Upsert(p) => {
            body.push(UPSERT);
            body.extend_from_slice(p.id.as_bytes());
            body.extend_from_slice(&(p.vector.len() as u32).to_le_bytes());
            for v in &p.vector {
                body.extend_from_slice(&v.to_le_bytes());
            }
            // A Map always serialises.
            body.extend_from_slice(&serde_json::to_vec(&p.payload).unwrap_or_default());
        }
        Frame::Delete(id) => {
            body.push(DELETE);
            body.extend_from_slice(id.as_bytes());
        }
    }
    let mut frame = Vec::with_capacity(body.len() + 8);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    frame.extend_from_slice(&Sha256::digest(&body)[..4]);
    frame
}

/// The record at `at` and where the next starts; `None` at the end or at a torn frame.
fn decode(bytes: &[u8], at: usize) -> Option<(Record, usize)> {
    let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
    let body = bytes.get(at + 4..(at + 4).checked_add(len)?)?;
    let sum = bytes.get(at + 4 + len..at + 8 + len)?;
    if Sha256::digest(body)[..4] != *sum || body.len() < 17 {
        return None;
    }
    let id = uuid::Uuid::from_slice(&body[1..17]).ok()?;
    let record = match body[0] {
        UPSERT => {
            let dims = u32::from_le_bytes(body.get(17..21)?.try_into().ok()?) as usize;
            let end = 21 + dims * 4;
            let vector = body
                .get(21..end)?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let payload: Map<String, Json> = serde_json::from_slice(body.get(end..)?).ok()?;
            Record::Upsert(StoredPoint {
                id,
                vector,
                payload,
            })
        }
        DELETE => Record::Delete(id),
        _ => return None,
    };
    Some((record, at + 8 + len))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("citadel-log-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn point(n: u8) -> StoredPoint {
        let mut payload = Map::new();
        payload.insert("n".into(), Json::from(n));
        StoredPoint {
            id: uuid::Uuid::from_bytes([n; 16]),
            vector: vec![f32::from(n), 0.5],
            payload,
        }
    }

    #[test]
    fn replays_in_order_and_cuts_a_torn_tail() {
        let dir = temp_dir();
        let path = dir.join(LOG_FILE);
        let mut log = PointLog::open(&path, |_| {}).unwrap();
        let (a, b) = (point(1), point(2));
        log.append([Frame::Upsert(&a), Frame::Upsert(&b)].into_iter())
            .unwrap();
        log.append([Frame::Delete(a.id)].into_iter()).unwrap();
        drop(log);
        // A crash in the middle of the next frame.
        let mut torn = encode(&Frame::Upsert(&point(3)));
        torn.truncate(torn.len() - 3);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&torn)
            .unwrap();

        let mut seen = Vec::new();
        let mut log = PointLog::open(&path, |r| seen.push(r)).unwrap();
        assert_eq!(seen.len(), 3);
        assert!(matches!(&seen[1], Record::Upsert(p) if *p == b));
        assert!(matches!(&seen[2], Record::Delete(id) if *id == a.id));
        // The tail is gone, so the next append lands on a frame boundary.
        let c = point(4);
        log.append([Frame::Upsert(&c)].into_iter()).unwrap();
        drop(log);
        let mut count = 0;
        PointLog::open(&path, |_| count += 1).unwrap();
        assert_eq!(count, 4);

        // A flipped byte inside an earlier frame is corruption, not a torn tail: refused.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let refused = PointLog::open(&path, |_| {}).err().unwrap();
        assert!(
            refused.to_string().contains("corrupt at byte 0"),
            "{refused}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
