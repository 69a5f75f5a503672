//! The Durable Object's SQLite database as the engine's [`Store`].

use std::cell::Cell;
use std::rc::Rc;

use worker::{SqlStorage, SqlStorageValue};

use crate::engine::{Store, StoreError, Version};

/// [`Store`] on the object's SQLite database, one row per key with a version column.
/// Statements run synchronously inside the object, so each conditional write is one atomic
/// statement: `INSERT … ON CONFLICT DO NOTHING` for an absent key, `UPDATE … WHERE version = ?`
/// for an existing one. The object interleaves requests while one awaits a fetch; the version
/// check is what keeps one request's stale copy from overwriting another's write.
///
/// The table is created by the first write only: a read for an id that names no job (a
/// probe, a typo) must not leave a persisted object behind.
///
/// Once the table exists it stays (nothing drops it), so the object remembers that in
/// `table` and asks SQLite only until then: one statement fewer per store call.
///
/// The stateless front has no object: [`SqlStore::STATELESS`] refuses every call, as the
/// engine's `NoStore` would. One store type keeps one copy of the engine in the Worker's wasm
/// (a second `Engine<NoStore, _>` cost ~60 KB).
pub(super) struct SqlStore {
    pub(super) sql: Option<SqlStorage>,
    pub(super) table: Option<Rc<Cell<bool>>>,
}

impl SqlStore {
    pub(super) const STATELESS: SqlStore = SqlStore { sql: None, table: None };

    fn sql(&self) -> Result<&SqlStorage, StoreError> {
        self.sql.as_ref().ok_or_else(|| StoreError::new("no store for a stateless request"))
    }

    fn table_known(&self) -> bool {
        self.table.as_ref().is_some_and(|t| t.get())
    }

    fn note_table(&self) {
        if let Some(t) = &self.table {
            t.set(true);
        }
    }

    fn has_table(&self) -> Result<bool, StoreError> {
        if self.table_known() {
            return Ok(true);
        }
        let rows: Vec<Row> = self
            .sql()?
            .exec("SELECT name AS key FROM sqlite_master WHERE type = 'table' AND name = 'entries'", None)
            .and_then(|c| c.to_array())
            .map_err(store_error)?;
        if !rows.is_empty() {
            self.note_table();
        }
        Ok(!rows.is_empty())
    }

    fn create_table(&self) -> Result<(), StoreError> {
        if self.table_known() {
            return Ok(());
        }
        self.sql()?
            .exec("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, version INTEGER NOT NULL)", None)
            .map(drop)
            .map_err(store_error)?;
        self.note_table();
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct Row {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    version: i64,
}

fn store_error(e: worker::Error) -> StoreError {
    StoreError::new(e.to_string())
}

fn text(bytes: Vec<u8>) -> Result<SqlStorageValue, StoreError> {
    String::from_utf8(bytes).map(SqlStorageValue::String).map_err(|_| StoreError::new("value is not UTF-8"))
}

impl Store for SqlStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get_versioned(key).await?.map(|(value, _)| value))
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StoreError> {
        if !self.has_table()? {
            return Ok(None);
        }
        let rows: Vec<Row> = self
            .sql()?
            .exec(
                "SELECT key, value, version FROM entries WHERE key = ?",
                vec![SqlStorageValue::String(key.to_owned())],
            )
            .and_then(|c| c.to_array())
            .map_err(store_error)?;
        Ok(rows.into_iter().next().map(|r| (r.value.into_bytes(), Version::try_from(r.version).unwrap_or_default())))
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.create_table()?;
        self.sql()?
            .exec(
                "INSERT INTO entries (key, value, version) VALUES (?, ?, 1) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = entries.version + 1",
                vec![SqlStorageValue::String(key.to_owned()), text(value)?],
            )
            .map(drop)
            .map_err(store_error)
    }

    async fn put_if_version(&self, key: &str, value: Vec<u8>, expected: Version) -> Result<bool, StoreError> {
        self.create_table()?;
        let key = SqlStorageValue::String(key.to_owned());
        let written: Vec<Row> = if expected == 0 {
            self.sql()?.exec(
                "INSERT INTO entries (key, value, version) VALUES (?, ?, 1) ON CONFLICT(key) DO NOTHING RETURNING key",
                vec![key, text(value)?],
            )
        } else {
            let expected = i64::try_from(expected).map_err(|_| StoreError::new("version out of range"))?;
            self.sql()?.exec(
                "UPDATE entries SET value = ?, version = version + 1 WHERE key = ? AND version = ? RETURNING key",
                vec![text(value)?, key, SqlStorageValue::Integer(expected)],
            )
        }
        .and_then(|c| c.to_array())
        .map_err(store_error)?;
        Ok(!written.is_empty())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        if !self.has_table()? {
            return Ok(());
        }
        self.sql()?
            .exec("DELETE FROM entries WHERE key = ?", vec![SqlStorageValue::String(key.to_owned())])
            .map(drop)
            .map_err(store_error)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        if !self.has_table()? {
            return Ok(Vec::new());
        }
        let rows: Vec<Row> = self
            .sql()?
            // A range on the primary key, so a sweep's listing reads its index, not the table.
            // Keys are ASCII: every key with the prefix sorts below the prefix and U+10FFFF.
            .exec(
                "SELECT key FROM entries WHERE key >= ?1 AND key < ?2",
                vec![
                    SqlStorageValue::String(prefix.to_owned()),
                    SqlStorageValue::String(format!("{prefix}\u{10FFFF}")),
                ],
            )
            .and_then(|c| c.to_array())
            .map_err(store_error)?;
        Ok(rows.into_iter().map(|r| r.key).collect())
    }
}
