//! A key's limits object: one Durable Object per configured key (`limits-{key id}`) holds the
//! counters of that key and of every browser token minted from it, so one call takes all of a
//! request's charges. An object runs one request's statements at a time and each increment is
//! one SQLite statement, so every count is exact however many isolates send to it.

use std::cell::Cell;

use worker::{durable_object, DurableObject, Env, SqlStorage, SqlStorageValue, State};

use super::runtime::WorkerTimer;
use crate::engine::ports::counters::{self, Charge};
use crate::engine::ports::kv::{Counts, KvError};

/// The name of the object that holds `tenant`'s counters.
pub(super) fn limits_object(tenant: &str) -> String {
    format!("limits-{tenant}")
}

#[allow(missing_debug_implementations)] // State has no Debug
#[durable_object]
pub struct LimitObject {
    state: State,
    /// Whether the counters' table exists (it is made by the first call, and stays).
    table: Cell<bool>,
}

impl DurableObject for LimitObject {
    fn new(state: State, _env: Env) -> Self {
        Self { state, table: Cell::new(false) }
    }

    /// Takes the charges in the body (JSON, from this Worker's front) and answers what was
    /// taken (JSON `Taken`).
    async fn fetch(&self, mut request: worker::Request) -> worker::Result<worker::Response> {
        let charges: Vec<Charge> = request.json().await?;
        let sql = SqlCounts(self.state.storage().sql());
        if !self.table.get() {
            sql.create()?;
            self.table.set(true);
        }
        match counters::take(&sql, &WorkerTimer, &charges).await {
            Ok(taken) => worker::Response::from_json(&taken),
            Err(e) => worker::Response::error(e.to_string(), 503),
        }
    }
}

/// The object's SQLite database as counters: one row per counter.
struct SqlCounts(SqlStorage);

#[derive(serde::Deserialize)]
struct Count {
    n: i64,
}

impl SqlCounts {
    fn create(&self) -> worker::Result<()> {
        self.0.exec("CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, n INTEGER NOT NULL)", None).map(drop)
    }
}

fn kv_error(e: worker::Error) -> KvError {
    KvError::Other(e.to_string())
}

impl Counts for SqlCounts {
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let rows: Vec<Count> = self
            .0
            .exec(
                "INSERT INTO counters (key, n) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET n = n + excluded.n RETURNING n",
                vec![SqlStorageValue::String(key.to_owned()), SqlStorageValue::Integer(delta)],
            )
            .and_then(|c| c.to_array())
            .map_err(kv_error)?;
        rows.first().map(|r| r.n).ok_or_else(|| KvError::Other("increment returned no row".to_owned()))
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.0
            .exec("DELETE FROM counters WHERE key = ?", vec![SqlStorageValue::String(key.to_owned())])
            .map(drop)
            .map_err(kv_error)
    }
}
