//! Passwords: generated with the OS CSPRNG, stored only as argon2id hashes.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;

use super::AuthError;

/// argon2id cost: OWASP's 7 MiB / 5 passes setting, equivalent in strength to the crate's
/// 19 MiB / 2 default but small enough for a gateway's memory budget. (Passwords are 256-bit
/// random anyway; hashes made with other costs keep verifying: the cost is in each hash.)
const MEMORY_KIB: u32 = 7 * 1024;
const PASSES: u32 = 5;

fn argon2() -> Result<Argon2<'static>, AuthError> {
    let params = Params::new(MEMORY_KIB, PASSES, 1, None)
        .map_err(|e| AuthError::Internal(format!("argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Random bytes behind a generated password (256 bits).
const PASSWORD_BYTES: usize = 32;

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), AuthError> {
    getrandom::fill(buf).map_err(|e| AuthError::Internal(format!("no system randomness: {e}")))
}

/// A new password: 32 random bytes, URL-safe base64 (43 characters, no padding, shell-safe).
pub fn generate() -> Result<String, AuthError> {
    let mut b = [0u8; PASSWORD_BYTES];
    random_bytes(&mut b)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// The argon2id hash (PHC string, salted) of a password.
pub fn hash(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    random_bytes(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Internal(e.to_string()))?;
    argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("hashing failed: {e}")))
}

/// Whether `password` matches the stored hash (constant-time inside argon2).
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_unique_and_verify() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        let h = hash(&a).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{h}");
        assert!(!h.contains(&a));
        assert!(verify(&a, &h));
        assert!(!verify(&b, &h));
        assert!(!verify(&a, "not a hash"));
        assert_ne!(hash(&a).unwrap(), h, "salted");
    }

    #[test]
    fn hashes_made_with_the_earlier_default_cost_still_verify() {
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let old = Argon2::default()
            .hash_password(b"secret", &salt)
            .unwrap()
            .to_string();
        assert!(old.contains("m=19456"), "{old}");
        assert!(verify("secret", &old));
        assert!(!verify("other", &old));
    }
}
