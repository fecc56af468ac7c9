//! Citadel's own API keys, for services: `ck_<id>_<secret>`, 256 random bits of secret, the
//! public id for lookup, limits and audit. Only the SHA-256 of the whole key is stored (the key
//! is shown once, at creation). The table lives in the metadata database beside the workflows,
//! with its own migrations (table `citadel_auth_migrations`), the same on PostgreSQL and SQLite.

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, FromQueryResult, Statement,
    Value,
};
use sea_orm_migration::{
    MigrationName, MigrationTrait, MigratorTrait, SchemaManager, async_trait, sea_query::Alias,
    sea_query::IntoIden,
};
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "ck_";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no active key is named or numbered `{0}`")]
    NotFound(String),
    #[error("an active key is already named `{0}`: revoke it or choose another name")]
    NameTaken(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the key database is unavailable: {0}")]
    Unavailable(String),
}

impl From<sea_orm::DbErr> for KeyError {
    fn from(e: sea_orm::DbErr) -> Self {
        KeyError::Unavailable(e.to_string())
    }
}

/// A key as stored (never the secret).
#[derive(Debug, Clone, FromQueryResult, serde::Serialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    /// A JSON array of model names, or null for every model.
    #[serde(skip)]
    pub models: Option<String>,
    pub rpm: i64,
    pub tpm: i64,
    #[serde(skip)]
    pub secret_hash: String,
    pub created_us: i64,
    pub expires_us: Option<i64>,
    pub revoked_us: Option<i64>,
}

impl KeyRecord {
    pub fn model_list(&self) -> Option<Vec<String>> {
        self.models
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok())
    }

    pub(crate) fn usable_at(&self, now_us: i64) -> bool {
        self.revoked_us.is_none() && self.expires_us.is_none_or(|e| e > now_us)
    }
}

/// What `citadel keys create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    pub role: String,
    pub models: Option<Vec<String>>,
    pub rpm: u64,
    pub tpm: u64,
    pub expires_in: Option<Duration>,
}

#[derive(Clone)]
pub struct KeyStore {
    db: DatabaseConnection,
}

const SELECT: &str = "SELECT id, name, role, models, rpm, tpm, secret_hash, created_us, \
    expires_us, revoked_us FROM api_keys";

impl KeyStore {
    /// Opens `database.url` and brings the keys' table up to date.
    pub async fn connect(url: &str) -> Result<KeyStore, KeyError> {
        let mut options = ConnectOptions::new(url);
        options
            .max_connections(4)
            .min_connections(0)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|o| o.busy_timeout(Duration::from_secs(10)));
        let db = Database::connect(options)
            .await
            .map_err(|e| KeyError::Unavailable(format!("cannot open the database: {e}")))?;
        let mut tries = 0;
        loop {
            match Migrator::up(&db, None).await {
                Ok(()) => break,
                // Two processes starting together race on CREATE; both are IF NOT EXISTS.
                Err(_) if tries < 3 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(e) => return Err(KeyError::Unavailable(format!("migrations failed: {e}"))),
            }
        }
        Ok(KeyStore { db })
    }

    fn statement(&self, sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(self.db.get_database_backend(), sql, values)
    }

    /// Stores a new key; returns its record and the key itself, which is not kept.
    pub async fn create(&self, new: &NewKey) -> Result<(KeyRecord, String), KeyError> {
        if new.name.trim().is_empty() || new.name.len() > 128 {
            return Err(KeyError::Invalid(
                "--name must be 1 to 128 characters".into(),
            ));
        }
        let (id, key) = generate()?;
        let now = now_us();
        let expires = new
            .expires_in
            .map(|d| now.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)));
        let models = match &new.models {
            Some(m) => {
                Some(serde_json::to_string(m).map_err(|e| KeyError::Invalid(e.to_string()))?)
            }
            None => None,
        };
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let values: Vec<Value> = vec![
            id.clone().into(),
            new.name.clone().into(),
            new.role.clone().into(),
            models.into(),
            clamp(new.rpm).into(),
            clamp(new.tpm).into(),
            hash(&key).into(),
            now.into(),
            expires.into(),
        ];
        let insert = "INSERT INTO api_keys (id, name, role, models, rpm, tpm, secret_hash, \
            created_us, expires_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        if let Err(e) = self.db.execute_raw(self.statement(insert, values)).await {
            let text = e.to_string();
            if text.contains("UNIQUE") || text.contains("unique") || text.contains("duplicate") {
                return Err(KeyError::NameTaken(new.name.clone()));
            }
            return Err(e.into());
        }
        let record = self
            .find(&id)
            .await?
            .ok_or_else(|| KeyError::NotFound(id.clone()))?;
        Ok((record, key))
    }

    /// Every key, newest first, revoked ones included.
    pub async fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        let sql = format!("{SELECT} ORDER BY created_us DESC");
        Ok(KeyRecord::find_by_statement(self.statement(&sql, vec![]))
            .all(&self.db)
            .await?)
    }

    pub async fn find(&self, id: &str) -> Result<Option<KeyRecord>, KeyError> {
        let sql = format!("{SELECT} WHERE id = $1");
        Ok(
            KeyRecord::find_by_statement(self.statement(&sql, vec![id.into()]))
                .one(&self.db)
                .await?,
        )
    }

    /// Revokes the active key named `name_or_id` (or with that id).
    pub async fn revoke(&self, name_or_id: &str) -> Result<KeyRecord, KeyError> {
        let sql = "UPDATE api_keys SET revoked_us = $1 WHERE revoked_us IS NULL \
            AND (id = $2 OR name = $2)";
        let values = vec![now_us().into(), name_or_id.into()];
        let done = self.db.execute_raw(self.statement(sql, values)).await?;
        if done.rows_affected() == 0 {
            return Err(KeyError::NotFound(name_or_id.to_string()));
        }
        let sql = format!("{SELECT} WHERE id = $1 OR name = $1 ORDER BY revoked_us DESC");
        KeyRecord::find_by_statement(self.statement(&sql, vec![name_or_id.into()]))
            .one(&self.db)
            .await?
            .ok_or_else(|| KeyError::NotFound(name_or_id.to_string()))
    }
}

/// A key's public id, when `key` has the shape of one.
pub(crate) fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 12) && hex(secret, 64)).then_some(id)
}

pub(crate) fn hash(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// Equal hashes, compared in constant time.
pub(crate) fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn generate() -> Result<(String, String), KeyError> {
    let mut bytes = [0u8; 38];
    getrandom::fill(&mut bytes)
        .map_err(|e| KeyError::Unavailable(format!("no randomness from the OS: {e}")))?;
    let id = hex(&bytes[..6]);
    let key = format!("{KEY_PREFIX}{id}_{}", hex(&bytes[6..]));
    Ok((id, key))
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

pub(crate) fn now_us() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateApiKeys)]
    }

    /// Its own table: the workflow store's migrator must not see these as unknown.
    fn migration_table_name() -> sea_orm::DynIden {
        Alias::new("citadel_auth_migrations").into_iden()
    }
}

struct CreateApiKeys;

impl MigrationName for CreateApiKeys {
    fn name(&self) -> &str {
        "m20261201_000001_create_api_keys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateApiKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), sea_orm::DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE TABLE IF NOT EXISTS api_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                role TEXT NOT NULL,
                models TEXT,
                rpm BIGINT NOT NULL DEFAULT 0,
                tpm BIGINT NOT NULL DEFAULT 0,
                secret_hash TEXT NOT NULL,
                created_us BIGINT NOT NULL,
                expires_us BIGINT,
                revoked_us BIGINT
            )",
        )
        .await?;
        // One active key per name; revoked ones keep theirs for the record.
        db.execute_unprepared(
            "CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys (name) \
             WHERE revoked_us IS NULL",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), sea_orm::DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS api_keys")
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_shape_and_their_id() {
        let (id, key) = generate().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key_id(&key), Some(id.as_str()));
        assert!(key.starts_with("ck_"));
        assert_eq!(key_id("ck_short_abc"), None);
        assert!(same_hash(&hash(&key), &hash(&key)));
        assert!(!same_hash(&hash(&key), &hash("other")));
    }
}
