//! Hashing and keyed hashing (SHA-256, HMAC-SHA256), the one place either is constructed:
//! hashed API keys, request ids from idempotency keys, inbox URL tokens, browser tokens and
//! webhook signatures all use these.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// An HMAC-SHA256 under `key`, to feed and finish.
pub fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    #[allow(clippy::expect_used)]
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length")
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut m = mac(key);
    m.update(message);
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answer() {
        assert_eq!(hex::encode(sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
