//! Fresh PostgreSQL databases for workflow tests, on the server the test command ensures
//! (127.0.0.1:5432, trust auth). Each test gets its own database, so tests run side by side
//! without seeing each other's workflows or NOTIFY events; it is dropped when the guard goes.

use std::{
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

pub const HOST: &str = "127.0.0.1";
pub const PORT: u16 = 5432;

/// A database that lives as long as this value.
pub struct Database {
    pub name: String,
    pub url: String,
    port: u16,
}

fn psql(port: u16, db: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            "-h",
            HOST,
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-qtAc", sql])
        .output()
        .map_err(|e| format!("cannot run psql (is PostgreSQL's client installed?): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Database {
    /// A new, empty database on the shared server.
    pub fn create() -> Database {
        Database::create_on(PORT)
    }

    /// A new, empty database on the server at `port`.
    pub fn create_on(port: u16) -> Database {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("citadel_test_{}_{n}", std::process::id());
        psql(port, "postgres", &format!("DROP DATABASE IF EXISTS {name}"))
            .and_then(|_| psql(port, "postgres", &format!("CREATE DATABASE {name}")))
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL on {HOST}:{port} cannot create a test database: {e}\n\
                     run `bash scripts/ensure-services.sh` (the test command does)"
                )
            });
        let url = format!("postgres://postgres@{HOST}:{port}/{name}");
        Database { name, url, port }
    }

    /// Runs one SQL statement in this database; its output as text.
    pub fn query(&self, sql: &str) -> String {
        psql(self.port, &self.name, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(
            self.port,
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A PostgreSQL server of the test's own (`initdb` in a temporary directory, on a free port),
/// which the test may stop and start without disturbing anyone else. Stopped and deleted on drop.
pub struct PrivateCluster {
    pub port: u16,
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    as_postgres: bool,
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`, newest version first.
fn postgres_bin_dir() -> Option<std::path::PathBuf> {
    let mut dirs: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((HOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("pick a free port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PrivateCluster {
    /// Creates and starts a cluster. `Err` says what is missing (the PostgreSQL server
    /// binaries, the `postgres` user when running as root) or why it did not start.
    pub fn start() -> Result<PrivateCluster, String> {
        let bin = postgres_bin_dir().ok_or(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (initdb, pg_ctl): \
             install them, e.g. `apt-get install postgresql` (Debian)",
        )?;
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("citadel-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        // initdb refuses to run as root: the cluster belongs to the postgres user then.
        let as_postgres = is_root();
        if as_postgres {
            let owned = Command::new("chown")
                .args(["postgres:", &dir.display().to_string()])
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !owned.success() {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!(
                    "cannot give {} to the `postgres` user (running as root, initdb needs \
                     another user): create it, e.g. `apt-get install postgresql`",
                    dir.display()
                ));
            }
        }
        let cluster = PrivateCluster {
            port: free_port(),
            bin,
            dir,
            as_postgres,
        };
        let data = cluster.data().display().to_string();
        cluster.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        )?;
        cluster.pg_ctl_start()?;
        Ok(cluster)
    }

    /// A cluster that accepts TCP clients only over TLS (a self-signed certificate made with
    /// `openssl`; `hostnossl` connections are rejected), for `sslmode=require` clients.
    pub fn start_tls_only() -> Result<PrivateCluster, String> {
        // The key is written where the server reads it: the data directory.
        let cluster = PrivateCluster::start()?;
        cluster.stop()?;
        let data = cluster.data();
        let (crt, key) = super::self_signed_certificate(&data);
        let append = |file: &str, text: &str| {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(data.join(file))
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(|e| format!("{file}: {e}"))
        };
        append("postgresql.conf", "\nssl = on\n")?;
        // The first matching line wins: TLS connections are trusted, plain ones refused.
        let hba = std::fs::read_to_string(data.join("pg_hba.conf")).map_err(|e| e.to_string())?;
        let hba = format!(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n{hba}"
        );
        std::fs::write(data.join("pg_hba.conf"), hba).map_err(|e| e.to_string())?;
        for (path, mode) in [(&key, "600"), (&crt, "644")] {
            let _ = Command::new("chmod").arg(mode).arg(path).status();
            if cluster.as_postgres {
                let _ = Command::new("chown").arg("postgres:").arg(path).status();
            }
        }
        cluster.start_again()?;
        Ok(cluster)
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.join("data")
    }

    /// Runs one of the server's programs (as `postgres` when we are root).
    fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = command
            .args(args)
            .current_dir(&self.dir)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("{program} {args:?} failed: {text}\n{}", self.log()))
        }
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let data = self.data().display().to_string();
        let log = self.dir.join("server.log").display().to_string();
        let options = format!(
            "-c listen_addresses={HOST} -p {} -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        )
        .map(|_| ())
    }

    /// Stops the server (fast shutdown: clients are disconnected) and waits until it is down.
    pub fn stop(&self) -> Result<(), String> {
        let data = self.data().display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "-t", "60", "stop"],
        )
        .map(|_| ())
    }

    /// Starts the stopped server again on the same port and waits until it accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        self.pg_ctl_start()
    }

    /// Stops the server and starts it again at once (`stop` and `start_again` leave a gap).
    pub fn restart(&self) -> Result<(), String> {
        self.stop()?;
        self.start_again()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// A fresh database on this server.
    pub fn database(&self) -> Database {
        Database::create_on(self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
