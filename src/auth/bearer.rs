//! Signed bearer tokens (JWT, HS256) for the Docker token flow, with a key kept in the data
//! directory. Only HS256 is accepted: `alg: none` and every other algorithm are refused.

use std::io::Write;
use std::path::Path;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::password::random_bytes;
use super::scope::ScopeEntry;
use super::AuthError;
use crate::storage::metadata::Secrets;

/// Issuer written into and required from every token.
pub const ISSUER: &str = "connected-registry";
/// Lifetime of access tokens.
pub const ACCESS_TTL_SECS: i64 = 300;
/// Lifetime of refresh tokens (`offline_token=true`).
pub const REFRESH_TTL_SECS: i64 = 7 * 24 * 3600;

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Token name it was issued to.
    pub sub: String,
    /// Service (registry host) it is valid for.
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not before.
    pub nbf: i64,
    /// Issued at.
    pub iat: i64,
    /// Unique id.
    pub jti: String,
    /// `access` or `refresh`.
    pub typ: String,
    /// Which password slot (and generation) authenticated; rotation revokes the token.
    pub pwd: String,
    /// Granted scopes (access tokens).
    #[serde(default)]
    pub access: Vec<ScopeEntry>,
}

/// Name of the signing key among the shared secrets.
const SECRET_NAME: &str = "token-signing-key";
/// Where versions before shared metadata kept the key, under `<data-dir>/auth`.
const LEGACY_FILE: &str = "token-signing.key";

/// The signing key.
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Keys {
    /// The registry's signing key, kept in its metadata so every replica signs and verifies
    /// alike: 32 random bytes made by the first start, or, on a registry an earlier version
    /// started, its key file `<legacy_dir>/token-signing.key` (so its tokens stay valid).
    pub fn load_or_create(meta: &dyn Secrets, legacy_dir: &Path) -> Result<Self, AuthError> {
        let path = legacy_dir.join(LEGACY_FILE);
        let fresh = match std::fs::read(&path) {
            Ok(k) if k.len() >= 32 => k,
            Ok(_) => {
                return Err(AuthError::Internal(format!(
                    "{} is too short",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = vec![0u8; 32];
                random_bytes(&mut k)?;
                k
            }
            Err(e) => return Err(AuthError::Internal(format!("{}: {e}", path.display()))),
        };
        let key = meta.secret_or_insert(SECRET_NAME, &fresh)?;
        if key.len() < 32 {
            return Err(AuthError::Internal(
                "the stored token signing key is too short".into(),
            ));
        }
        Ok(Keys::from_secret(&key))
    }

    /// Keys from raw secret bytes.
    pub fn from_secret(key: &[u8]) -> Self {
        Keys {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
        }
    }

    /// Signs claims.
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| AuthError::Internal(format!("signing failed: {e}")))
    }

    /// Verifies signature, algorithm, issuer, audience, expiry and type.
    pub fn verify(&self, token: &str, audience: &str, typ: &str) -> Result<Claims, AuthError> {
        if token.len() > 8192 {
            return Err(AuthError::BadToken("token too long".into()));
        }
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&[audience]);
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = 30;
        let data = decode::<Claims>(token, &self.decoding, &v)
            .map_err(|e| AuthError::BadToken(e.to_string()))?;
        if data.claims.typ != typ {
            return Err(AuthError::BadToken(format!("not an {typ} token")));
        }
        Ok(data.claims)
    }
}

/// Writes a file only its owner can read, durably.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn claims(now: i64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "t".into(),
            aud: "reg:5000".into(),
            exp: now + 300,
            nbf: now,
            iat: now,
            jti: "j".into(),
            typ: "access".into(),
            pwd: "password1@1".into(),
            access: vec![],
        }
    }

    fn now() -> i64 {
        crate::storage::fsutil::now_secs()
    }

    #[test]
    fn round_trip_and_rejections() {
        let k = Keys::from_secret(&[7u8; 32]);
        let t = k.sign(&claims(now())).unwrap();
        assert_eq!(k.verify(&t, "reg:5000", "access").unwrap().sub, "t");
        assert!(
            k.verify(&t, "other:5000", "access").is_err(),
            "wrong audience"
        );
        assert!(k.verify(&t, "reg:5000", "refresh").is_err(), "wrong type");
        assert!(Keys::from_secret(&[8u8; 32])
            .verify(&t, "reg:5000", "access")
            .is_err());
        let mut old = claims(now() - 1000);
        old.exp = now() - 600;
        assert!(
            k.verify(&k.sign(&old).unwrap(), "reg:5000", "access")
                .is_err(),
            "expired"
        );

        // Tampered payload, same signature.
        let parts: Vec<&str> = t.split('.').collect();
        let mut c = claims(now());
        c.sub = "admin".into();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64.encode(serde_json::to_vec(&c).unwrap()),
            parts[2]
        );
        assert!(k.verify(&forged, "reg:5000", "access").is_err());

        // alg: none.
        let none = format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(serde_json::to_vec(&claims(now())).unwrap())
        );
        assert!(k.verify(&none, "reg:5000", "access").is_err());
        assert!(k.verify("garbage", "reg:5000", "access").is_err());
    }
}
