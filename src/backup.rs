//! `citadel backup --to FILE` and `citadel restore --from FILE`: the workflow database (which
//! also holds the API keys) and the embedded vector store in one tar file an operator can
//! list and unpack by hand. The backup runs beside a serving process: the database copy is
//! one consistent snapshot (`backup.rs` of the workflow crate), each vector log is copied up
//! to its length when the backup began (`embedded_snapshot`). A manifest with each file's
//! SHA-256 comes last, so a cut-off archive is refused on restore; the archive is written
//! under a temporary name and renamed once whole. Restore checks everything before it
//! replaces anything, and refuses a target that holds data unless `--force`. Qdrant keeps its
//! own snapshots: a Qdrant-backed deployment backs up its vectors with Qdrant's API.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use anyhow::{Context, bail};
use citadel_config::{Config, VectorStoreKind};
use citadel_vectors::embedded_snapshot;
use citadel_workflows::backup::{self as db, DatabaseLocation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::ConfigArgs;

const MANIFEST: &str = "citadel-backup.json";
const FORMAT: &str = "citadel-backup/1";

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The archive to write (a tar file; replaced only once the new one is complete).
    #[arg(long)]
    to: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// An archive written by `citadel backup`.
    #[arg(long)]
    from: PathBuf,
    /// Replace a database or vector store that already holds data. Stop `citadel serve`
    /// and every `citadel worker` on it first.
    #[arg(long)]
    force: bool,
}

pub fn backup(args: &BackupArgs) -> ExitCode {
    let config = match args.config.load() {
        Ok(config) => config,
        Err(e) => return crate::fail(&e),
    };
    finish(run_blocking(write_backup(&config, &args.to)))
}

pub fn restore(args: &RestoreArgs) -> ExitCode {
    let config = match args.config.load() {
        Ok(config) => config,
        Err(e) => return crate::fail(&e),
    };
    finish(run_blocking(read_backup(&config, &args.from, args.force)))
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::fail(&format!("{e:#}")),
    }
}

fn run_blocking(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(work)
}

/// The embedded store's directory, when this configuration uses one.
fn embedded_vectors(config: &Config) -> Option<PathBuf> {
    (config.vectors.store == VectorStoreKind::Embedded).then(|| PathBuf::from(&config.vectors.path))
}

fn database_entry(location: &DatabaseLocation) -> &'static str {
    match location {
        DatabaseLocation::Sqlite(_) => "database/workflows.sqlite",
        DatabaseLocation::Postgres(_) => "database/workflows.pgdump",
    }
}

async fn write_backup(config: &Config, to: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let location = DatabaseLocation::of(&config.database.url).context("database.url")?;
    let scratch = Scratch::new("backup")?;
    // The vector logs' lengths are read first: what was synced before now is in the copy.
    let vectors = match embedded_vectors(config) {
        Some(dir) => embedded_snapshot::snapshot_files(&dir)
            .with_context(|| format!("vectors.path {}", dir.display()))?,
        None => Vec::new(),
    };
    eprintln!("==> database ({}): consistent copy", location.backend());
    let db_copy = scratch.path.join("database");
    db::snapshot(&location, &config.database.url, &db_copy)
        .await
        .context("database.url")?;
    eprintln!("    {}", size(std::fs::metadata(&db_copy)?.len()));

    let partial = PathBuf::from(format!("{}.partial", to.display()));
    let out = File::create(&partial)
        .with_context(|| format!("--to: cannot create {}", partial.display()))?;
    let mut archive = tar::Builder::new(BufWriter::new(out));
    let mut files = serde_json::Map::new();
    let db_name = database_entry(&location);
    let db_len = std::fs::metadata(&db_copy)?.len();
    let (len, sha) = append(&mut archive, db_name, File::open(&db_copy)?, db_len)?;
    files.insert(db_name.into(), json!({"bytes": len, "sha256": sha}));
    let mut collections = std::collections::BTreeSet::new();
    for file in vectors {
        let name = format!("vectors/{}", file.relative.display());
        if let Some(collection) = file.relative.iter().next()
            && collections.insert(collection.to_string_lossy().to_string())
        {
            eprintln!("==> vectors: collection {}", collection.to_string_lossy());
        }
        let (len, sha) = append(&mut archive, &name, file.file, file.len)?;
        files.insert(name, json!({"bytes": len, "sha256": sha}));
    }
    let manifest = json!({
        "format": FORMAT,
        "citadel_version": env!("CARGO_PKG_VERSION"),
        "created_unix_ms": citadel_workflows::now_us() / 1000,
        "database": {"backend": location.backend(), "file": db_name},
        "vectors": {"collections": collections},
        "files": files,
    });
    let manifest = serde_json::to_vec_pretty(&manifest)?;
    append(&mut archive, MANIFEST, &manifest[..], manifest.len() as u64)?;
    let out = archive
        .into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?;
    out.sync_all()?;
    std::fs::rename(&partial, to)
        .with_context(|| format!("--to: cannot write {}", to.display()))?;
    let total = std::fs::metadata(to)?.len();
    eprintln!(
        "backup written: {} ({}, {} vector collections) in {:.1} s",
        to.display(),
        size(total),
        collections.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Appends the first `len` bytes of `data` as `name`, streamed; returns the length and
/// SHA-256 written.
fn append<W: Write>(
    archive: &mut tar::Builder<W>,
    name: &str,
    data: impl Read,
    len: u64,
) -> anyhow::Result<(u64, String)> {
    let mut header = tar::Header::new_gnu();
    header.set_size(len);
    header.set_mode(0o600);
    header.set_mtime(u64::try_from(citadel_workflows::now_us() / 1_000_000).unwrap_or(0));
    header.set_cksum();
    let mut hashing = Hashing::new(data.take(len));
    archive
        .append_data(&mut header, name, &mut hashing)
        .with_context(|| format!("cannot copy {name} into the archive"))?;
    // A file cut shorter than its length meanwhile would leave tar's padding in its place.
    if hashing.bytes != len {
        bail!(
            "{name} shrank while it was copied ({} of {len} bytes)",
            hashing.bytes
        );
    }
    Ok((hashing.bytes, hashing.finish()))
}

/// A reader (or writer) that hashes what passes through it.
struct Hashing<T> {
    inner: T,
    sha: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Hashing {
            inner,
            sha: Sha256::new(),
            bytes: 0,
        }
    }

    fn finish(self) -> String {
        hex(&self.sha.finalize())
    }
}

impl<T: Read> Read for Hashing<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<T: Write> Write for Hashing<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

async fn read_backup(config: &Config, from: &Path, force: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let location = DatabaseLocation::of(&config.database.url).context("database.url")?;
    let scratch = Scratch::new("restore")?;
    eprintln!("==> reading {}", from.display());
    let manifest = unpack(from, &scratch.path)?;
    let backend = manifest["database"]["backend"].as_str().unwrap_or_default();
    if backend != location.backend() {
        bail!(
            "{} holds a {backend} database but database.url is {}: restore into the same kind",
            from.display(),
            location.backend()
        );
    }
    let collections: Vec<String> = manifest["vectors"]["collections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    let vectors_dir = embedded_vectors(config);

    // Nothing is replaced before every check has passed.
    if let Some(n) = db::workflow_count(&config.database.url)
        .await
        .context("database.url")?
        && n > 0
        && !force
    {
        bail!(
            "database.url already holds {n} workflows; restore replaces them: stop the \
             server and workers using it and pass --force"
        );
    }
    let existing = vectors_dir
        .as_deref()
        .map(embedded_snapshot::collections_in)
        .unwrap_or_default();
    if !existing.is_empty() && !force {
        bail!(
            "vectors.path already holds collections ({}); restore replaces them: stop the \
             server and pass --force",
            existing.join(", ")
        );
    }

    eprintln!("==> database ({})", location.backend());
    let db_file = scratch.path.join(database_entry(&location));
    db::restore(&location, &db_file)
        .await
        .context("database.url")?;
    let restored = db::workflow_count(&config.database.url).await?.unwrap_or(0);
    eprintln!("    {restored} workflows");
    match &vectors_dir {
        Some(dir) => restore_vectors(dir, &scratch.path.join("vectors"), &existing, &collections)?,
        None if !collections.is_empty() => eprintln!(
            "warning: the backup holds embedded vector collections ({}) but vectors.store is \
             not \"embedded\"; they were not restored",
            collections.join(", ")
        ),
        None => {}
    }
    eprintln!(
        "restore done: {restored} workflows, {} vector collections, in {:.1} s",
        collections.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn restore_vectors(
    dir: &Path,
    staged: &Path,
    existing: &[String],
    collections: &[String],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("vectors.path {}", dir.display()))?;
    for name in existing {
        std::fs::remove_dir_all(dir.join(name))
            .with_context(|| format!("cannot remove collection {name} in {}", dir.display()))?;
    }
    for name in collections {
        eprintln!("==> vectors: collection {name}");
        let target = dir.join(name);
        // Staged in the temp directory, which may be another file system than the target.
        std::fs::create_dir_all(&target)?;
        for entry in std::fs::read_dir(staged.join(name))? {
            let entry = entry?;
            let out = target.join(entry.file_name());
            std::fs::copy(entry.path(), &out)
                .with_context(|| format!("cannot write {}", out.display()))?;
            File::open(&out)?.sync_all()?;
        }
    }
    Ok(())
}

/// Unpacks `from` into `dir`, checking every file against the manifest; returns the manifest.
fn unpack(from: &Path, dir: &Path) -> anyhow::Result<Value> {
    let file =
        File::open(from).with_context(|| format!("--from: cannot open {}", from.display()))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut seen = serde_json::Map::new();
    let mut manifest = None;
    let not_ours = || {
        format!(
            "{} is not an archive written by `citadel backup`",
            from.display()
        )
    };
    for entry in archive.entries().with_context(not_ours)? {
        let mut entry = entry.with_context(not_ours)?;
        let name = entry.path()?.to_string_lossy().to_string();
        if name == MANIFEST {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .with_context(|| format!("{}: the manifest is cut short", from.display()))?;
            manifest = Some(serde_json::from_slice::<Value>(&bytes).with_context(not_ours)?);
            continue;
        }
        let allowed = name == "database/workflows.sqlite"
            || name == "database/workflows.pgdump"
            || name
                .strip_prefix("vectors/")
                .is_some_and(|rel| embedded_snapshot::is_store_file(Path::new(rel)));
        if !allowed {
            bail!("{}: unexpected entry {name:?}", not_ours());
        }
        let out = dir.join(&name);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut writer = Hashing::new(BufWriter::new(File::create(&out)?));
        std::io::copy(&mut entry, &mut writer)
            .with_context(|| format!("{}: {name} is cut short", from.display()))?;
        writer.flush()?;
        let bytes = writer.bytes;
        seen.insert(name, json!({"bytes": bytes, "sha256": writer.finish()}));
    }
    let manifest = manifest.with_context(|| {
        format!(
            "{}: no manifest; the archive is incomplete (was the backup interrupted?)",
            from.display()
        )
    })?;
    if manifest["format"] != FORMAT {
        bail!(
            "{}: format {} is not {FORMAT}",
            not_ours(),
            manifest["format"]
        );
    }
    if manifest["files"] != Value::Object(seen) {
        bail!(
            "{}: the files do not match the manifest's sizes and SHA-256 (damaged or edited)",
            from.display()
        );
    }
    Ok(manifest)
}

/// A directory in the temp directory, removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(what: &str) -> anyhow::Result<Scratch> {
        let path = std::env::temp_dir().join(format!(
            "citadel-{what}-{}-{}",
            std::process::id(),
            citadel_workflows::now_us()
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn size(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let mb = bytes as f64 / 1_048_576.0;
    format!("{mb:.1} MiB")
}
