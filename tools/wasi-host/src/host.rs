//! Host implementations of Spin's interfaces over `wit/`: `fermyon:spin/variables@2.0.0`,
//! `fermyon:spin/key-value@2.0.0` and `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2`.
//!
//! Both key-value APIs open only the store labelled "default", and both see the same
//! [`KvStore`](crate::kv::KvStore), as in Spin where they share the store of a label.

use wasmtime::component::Resource;

use crate::kv::{Snapshot, SwapOutcome};
use crate::RequestState;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "spin-host",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::host::Bucket,
            "wasi:keyvalue/atomics.cas": crate::host::Cas,
            "fermyon:spin/key-value.store": crate::host::SpinStore,
        },
    });
}

use bindings::fermyon::spin::{key_value, variables};
use bindings::wasi::keyvalue::{atomics, batch, store};

/// The only store label (`wasi:keyvalue` identifier) the host knows.
pub const DEFAULT_STORE: &str = "default";

/// `wasi:keyvalue/store.bucket`: only "default" exists, so it needs no state.
#[derive(Debug)]
pub struct Bucket;

/// `wasi:keyvalue/atomics.cas`: the value and version of the key at `cas.new`.
#[derive(Debug)]
pub struct Cas(Snapshot);

/// `fermyon:spin/key-value.store`: only "default" exists.
#[derive(Debug)]
pub struct SpinStore;

/// Checks a Spin variable name: lowercase ASCII letters, digits and single underscores,
/// starting with a letter and not ending with an underscore (Spin's rules for variable keys).
pub fn check_variable_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.ends_with('_')
        && !name.contains("__");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid Spin variable name {name:?}: use lowercase letters, digits and single underscores, starting with a letter"
        ))
    }
}

type Wasm<T> = wasmtime::Result<T>;

impl variables::Host for RequestState {
    async fn get(&mut self, name: String) -> Wasm<Result<String, variables::Error>> {
        if let Err(msg) = check_variable_name(&name) {
            return Ok(Err(variables::Error::InvalidName(msg)));
        }
        Ok(self.host.variables.get(&name).cloned().ok_or(variables::Error::Undefined(name)))
    }
}

fn kv_error(e: anyhow::Error) -> store::Error {
    eprintln!("wasi-host: key-value error: {e:#}");
    store::Error::Other(format!("{e:#}"))
}

impl store::Host for RequestState {
    async fn open(&mut self, identifier: String) -> Wasm<Result<Resource<Bucket>, store::Error>> {
        if identifier != DEFAULT_STORE {
            return Ok(Err(store::Error::NoSuchStore));
        }
        Ok(Ok(self.table.push(Bucket)?))
    }
}

impl store::HostBucket for RequestState {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Wasm<Result<Option<Vec<u8>>, store::Error>> {
        self.table.get(&bucket)?;
        Ok(Ok(self.host.kv.get(&key)))
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Wasm<Result<(), store::Error>> {
        self.table.get(&bucket)?;
        Ok(self.host.kv.set(&key, value).map_err(kv_error))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Wasm<Result<(), store::Error>> {
        self.table.get(&bucket)?;
        Ok(self.host.kv.delete(&key).map_err(kv_error))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Wasm<Result<bool, store::Error>> {
        self.table.get(&bucket)?;
        Ok(Ok(self.host.kv.exists(&key)))
    }

    /// Returns every key in one page (`cursor` is ignored, the returned cursor is always none).
    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        _cursor: Option<String>,
    ) -> Wasm<Result<store::KeyResponse, store::Error>> {
        self.table.get(&bucket)?;
        Ok(Ok(store::KeyResponse { keys: self.host.kv.keys(), cursor: None }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> Wasm<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for RequestState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Wasm<Result<i64, store::Error>> {
        self.table.get(&bucket)?;
        Ok(self.host.kv.increment(&key, delta).map_err(kv_error))
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> Wasm<Result<(), atomics::CasError>> {
        let Cas(snapshot) = self.table.delete(cas)?;
        match self.host.kv.swap(&snapshot, value) {
            Ok(SwapOutcome::Swapped) => Ok(Ok(())),
            Ok(SwapOutcome::Changed(fresh)) => Ok(Err(atomics::CasError::CasFailed(self.table.push(Cas(fresh))?))),
            Err(e) => Ok(Err(atomics::CasError::StoreError(kv_error(e)))),
        }
    }
}

impl atomics::HostCas for RequestState {
    async fn new(&mut self, bucket: Resource<Bucket>, key: String) -> Wasm<Result<Resource<Cas>, store::Error>> {
        self.table.get(&bucket)?;
        let snapshot = self.host.kv.snapshot(&key);
        Ok(Ok(self.table.push(Cas(snapshot))?))
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Wasm<Result<Option<Vec<u8>>, store::Error>> {
        Ok(Ok(self.table.get(&cas)?.0.value.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> Wasm<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for RequestState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Wasm<Result<Vec<(String, Option<Vec<u8>>)>, store::Error>> {
        self.table.get(&bucket)?;
        Ok(Ok(self.host.kv.get_many(keys)))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Wasm<Result<(), store::Error>> {
        self.table.get(&bucket)?;
        Ok(self.host.kv.set_many(key_values).map_err(kv_error))
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Wasm<Result<(), store::Error>> {
        self.table.get(&bucket)?;
        Ok(self.host.kv.delete_many(keys).map_err(kv_error))
    }
}

fn spin_kv_error(e: anyhow::Error) -> key_value::Error {
    eprintln!("wasi-host: key-value error: {e:#}");
    key_value::Error::Other(format!("{e:#}"))
}

impl key_value::Host for RequestState {}

impl key_value::HostStore for RequestState {
    async fn open(&mut self, label: String) -> Wasm<Result<Resource<SpinStore>, key_value::Error>> {
        if label != DEFAULT_STORE {
            return Ok(Err(key_value::Error::NoSuchStore));
        }
        Ok(Ok(self.table.push(SpinStore)?))
    }

    async fn get(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
    ) -> Wasm<Result<Option<Vec<u8>>, key_value::Error>> {
        self.table.get(&store)?;
        Ok(Ok(self.host.kv.get(&key)))
    }

    async fn set(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
        value: Vec<u8>,
    ) -> Wasm<Result<(), key_value::Error>> {
        self.table.get(&store)?;
        Ok(self.host.kv.set(&key, value).map_err(spin_kv_error))
    }

    async fn delete(&mut self, store: Resource<SpinStore>, key: String) -> Wasm<Result<(), key_value::Error>> {
        self.table.get(&store)?;
        Ok(self.host.kv.delete(&key).map_err(spin_kv_error))
    }

    async fn exists(&mut self, store: Resource<SpinStore>, key: String) -> Wasm<Result<bool, key_value::Error>> {
        self.table.get(&store)?;
        Ok(Ok(self.host.kv.exists(&key)))
    }

    async fn get_keys(&mut self, store: Resource<SpinStore>) -> Wasm<Result<Vec<String>, key_value::Error>> {
        self.table.get(&store)?;
        Ok(Ok(self.host.kv.keys()))
    }

    async fn drop(&mut self, store: Resource<SpinStore>) -> Wasm<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_variable_name;

    #[test]
    fn variable_names_follow_spin_rules() {
        for ok in ["a", "upstream_url", "api_key_2"] {
            assert!(check_variable_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Upstream", "_a", "a_", "a__b", "2a", "a-b", "UPSTREAM_URL"] {
            assert!(check_variable_name(bad).is_err(), "{bad}");
        }
    }
}
