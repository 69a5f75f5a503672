//! The [`Store`] contract as checks any store can be put through: what the engine relies on,
//! stated once. [`MemoryStore`](super::store::MemoryStore) passes it in a host test; every
//! other store is to pass the same checks on its own runtime.

use super::store::{Store, Version};

/// Runs every check against `store`, on keys under `scratch` (which must hold nothing, and
/// holds nothing again afterwards). The first broken promise is the error.
pub async fn check<S: Store>(store: &S, scratch: &str) -> Result<(), String> {
    let key = format!("{scratch}record");
    absent_keys_read_as_nothing(store, &key).await?;
    conditional_writes_count_versions(store, &key).await?;
    a_stale_version_loses(store, &key).await?;
    deleted_keys_can_be_created_again(store, &key).await?;
    plain_writes_overwrite(store, &format!("{scratch}index")).await?;
    listing_sees_its_prefix_only(store, scratch).await?;
    for leftover in store.list(scratch).await.map_err(|e| e.to_string())? {
        store.delete(&leftover).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn expect(holds: bool, promise: &str) -> Result<(), String> {
    if holds {
        Ok(())
    } else {
        Err(promise.to_owned())
    }
}

async fn versioned<S: Store>(store: &S, key: &str) -> Result<Option<(Vec<u8>, Version)>, String> {
    store.get_versioned(key).await.map_err(|e| e.to_string())
}

async fn absent_keys_read_as_nothing<S: Store>(store: &S, key: &str) -> Result<(), String> {
    expect(store.get(key).await.map_err(|e| e.to_string())?.is_none(), "an absent key reads as nothing")?;
    expect(versioned(store, key).await?.is_none(), "an absent key has no version")?;
    store.delete(key).await.map_err(|e| e.to_string())?;
    Ok(())
}

async fn conditional_writes_count_versions<S: Store>(store: &S, key: &str) -> Result<(), String> {
    let created = store.put_if_absent(key, b"one".to_vec()).await.map_err(|e| e.to_string())?;
    expect(created, "put_if_absent creates an absent key")?;
    expect(versioned(store, key).await? == Some((b"one".to_vec(), 1)), "a created key is at version 1")?;
    let again = store.put_if_absent(key, b"other".to_vec()).await.map_err(|e| e.to_string())?;
    expect(!again, "put_if_absent refuses a key that has a value")?;
    expect(versioned(store, key).await? == Some((b"one".to_vec(), 1)), "a refused write changes nothing")?;
    let moved = store.put_if_version(key, b"two".to_vec(), 1).await.map_err(|e| e.to_string())?;
    expect(moved, "a write at the version read succeeds")?;
    expect(versioned(store, key).await? == Some((b"two".to_vec(), 2)), "each conditional write adds one")?;
    Ok(())
}

/// Two writers read version 2; the first writes, the second must lose and see the first's value.
async fn a_stale_version_loses<S: Store>(store: &S, key: &str) -> Result<(), String> {
    let Some((_, read)) = versioned(store, key).await? else { return Err("the record is gone".to_owned()) };
    let first = store.put_if_version(key, b"first".to_vec(), read).await.map_err(|e| e.to_string())?;
    let second = store.put_if_version(key, b"second".to_vec(), read).await.map_err(|e| e.to_string())?;
    expect(first && !second, "of two writes at one version, exactly the first succeeds")?;
    expect(versioned(store, key).await? == Some((b"first".to_vec(), read + 1)), "the loser changes nothing")?;
    let absent = store.put_if_version(key, b"late".to_vec(), 0).await.map_err(|e| e.to_string())?;
    expect(!absent, "a write expecting the key absent loses to one that created it")?;
    Ok(())
}

async fn deleted_keys_can_be_created_again<S: Store>(store: &S, key: &str) -> Result<(), String> {
    store.delete(key).await.map_err(|e| e.to_string())?;
    expect(versioned(store, key).await?.is_none(), "a deleted key reads as nothing")?;
    let created = store.put_if_absent(key, b"again".to_vec()).await.map_err(|e| e.to_string())?;
    expect(created, "a deleted key can be created again")?;
    expect(versioned(store, key).await? == Some((b"again".to_vec(), 1)), "a re-created key starts at version 1")?;
    Ok(())
}

async fn plain_writes_overwrite<S: Store>(store: &S, key: &str) -> Result<(), String> {
    store.put(key, b"a".to_vec()).await.map_err(|e| e.to_string())?;
    store.put(key, b"b".to_vec()).await.map_err(|e| e.to_string())?;
    let read = store.get(key).await.map_err(|e| e.to_string())?;
    expect(read.as_deref() == Some(b"b".as_slice()), "the last plain write wins")
}

async fn listing_sees_its_prefix_only<S: Store>(store: &S, scratch: &str) -> Result<(), String> {
    let (inside, beside) = (format!("{scratch}list/a"), format!("{scratch}listed"));
    store.put(&inside, Vec::new()).await.map_err(|e| e.to_string())?;
    store.put(&beside, Vec::new()).await.map_err(|e| e.to_string())?;
    let listed = store.list(&format!("{scratch}list/")).await.map_err(|e| e.to_string())?;
    expect(listed == vec![inside], "a listing holds every key under its prefix and no other")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemoryStore;

    #[test]
    fn the_memory_store_keeps_the_contract() {
        let store = MemoryStore::default();
        pollster::block_on(check(&store, "check/")).unwrap();
        assert!(pollster::block_on(store.list("")).unwrap().is_empty(), "the scratch keys are gone");
    }
}
