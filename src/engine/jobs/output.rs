//! Model outputs, kept so polling is a complete result channel. A small output lives in its
//! job record. A large one (base64 images, embedding batches) does not fit one record on
//! every store (a Durable Object's SQLite row holds at most 2 MB), so it is kept beside the
//! record in chunks, under a prefix unique to the delivery that brought it, and read back
//! whole. An output over the configured limit fails its job with `OUTPUT_TOO_LARGE`: the
//! upstream is answered 200, so it does not retry a result that can never be kept.

use serde_json::Value;

use crate::engine::base::Error;
use crate::engine::jobs::record::{Job, OutputChunks};
use crate::engine::{Engine, HttpClient, Store, StoreError};

/// Outputs up to this size (JSON bytes) stay in the record.
const INLINE_MAX: usize = 64 * 1024;
/// The size of one chunk: far below a Durable Object row's 2 MB and Spin stores' value limits.
const CHUNK_BYTES: usize = 512 * 1024;

/// A result's output, made ready for its record.
#[derive(Debug)]
pub(crate) enum Stored {
    /// No output (the result is an error).
    None,
    Inline(Value),
    Chunked(OutputChunks),
    /// Larger than the limit: its size in bytes. Nothing was written.
    TooLarge(usize),
}

impl<S: Store, H: HttpClient> Engine<'_, S, H> {
    /// Writes a large output's chunks under `out/{id}/{delivery}` before the record refers to
    /// them; a small one is returned for the record itself.
    pub(crate) async fn store_output(&self, id: &str, delivery: &str, data: &Value) -> Result<Stored, Error> {
        let json = data.to_string();
        if json.len() > self.config.output_limit {
            return Ok(Stored::TooLarge(json.len()));
        }
        if json.len() <= INLINE_MAX {
            return Ok(Stored::Inline(data.clone()));
        }
        let prefix = format!("out/{id}/{delivery}");
        let mut count = 0u32;
        let mut rest = json.as_str();
        while !rest.is_empty() {
            // Split on a character boundary: every chunk is valid UTF-8 (Durable Object rows
            // hold text).
            let mut end = rest.len().min(CHUNK_BYTES);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            let (chunk, tail) = rest.split_at(end);
            self.store.put(&format!("{prefix}/{count}"), chunk.as_bytes().to_vec()).await?;
            count += 1;
            rest = tail;
        }
        Ok(Stored::Chunked(OutputChunks { prefix, count, bytes: json.len() as u64 }))
    }

    /// The job's output, wherever it is kept.
    pub(crate) async fn output_of(&self, job: &Job) -> Result<Option<Value>, Error> {
        let Some(chunks) = &job.output_chunks else { return Ok(job.output.clone()) };
        let mut json = Vec::with_capacity(usize::try_from(chunks.bytes).unwrap_or_default());
        for i in 0..chunks.count {
            let chunk = self.store.get(&format!("{}/{i}", chunks.prefix)).await?;
            json.extend(chunk.ok_or_else(|| corrupt(job, "an output chunk is missing"))?);
        }
        serde_json::from_slice(&json).map(Some).map_err(|_| corrupt(job, "the output chunks do not form JSON"))
    }

    /// Deletes an output's chunks (at the end of retention, or a result that was not taken).
    pub(crate) async fn delete_output(&self, chunks: &OutputChunks) -> Result<(), Error> {
        for i in 0..chunks.count {
            self.store.delete(&format!("{}/{i}", chunks.prefix)).await?;
        }
        Ok(())
    }
}

fn corrupt(job: &Job, what: &str) -> Error {
    Error::Store(StoreError::new(format!("record {}: {what}", job.id)))
}
