//! SAS tokens for edgeHub: `SharedAccessSignature sr=…&sig=…&se=…`, signed by the workload API
//! or, in local development, with the module's key. What is signed is the `sr` exactly as sent,
//! a newline and the expiry (reference §1.3): `sr` is the audience percent-encoded as a whole
//! (`/` too, as the Python SDK does) and `sig` is percent-encoded, since edgeHub URL-decodes it
//! (a raw `+` would become a space).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;

use super::workload::{WorkloadClient, WorkloadError};

/// Everything but letters, digits and `-_.~` is encoded (RFC 3986 unreserved kept).
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Who signs the module's tokens.
#[derive(Debug, Clone)]
pub enum Signer {
    /// The workload API (the key stays in the IoT Edge daemon).
    Workload(WorkloadClient),
    /// The module's own key (local development).
    Key(Vec<u8>),
}

impl Signer {
    /// HMAC-SHA256 of `data` with the module's key.
    pub async fn sign(&self, data: &[u8]) -> Result<Vec<u8>, WorkloadError> {
        match self {
            Signer::Workload(w) => w.sign(data).await,
            Signer::Key(key) => Ok(hmac_sha256(key, data)),
        }
    }
}

/// HMAC-SHA256 (any key length is valid for HMAC).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, ENCODE).to_string()
}

/// The module's token audience, as it appears in `sr`.
pub fn audience(hub_host: &str, device_id: &str, module_id: &str) -> String {
    encode(&format!(
        "{hub_host}/devices/{device_id}/modules/{module_id}"
    ))
}

/// The string whose HMAC is the signature.
pub fn string_to_sign(sr: &str, expiry: u64) -> String {
    format!("{sr}\n{expiry}")
}

/// A signed token for `sr` valid until `expiry` (Unix seconds).
pub async fn token(signer: &Signer, sr: &str, expiry: u64) -> Result<String, WorkloadError> {
    let digest = signer.sign(string_to_sign(sr, expiry).as_bytes()).await?;
    let sig = base64::engine::general_purpose::STANDARD.encode(digest);
    Ok(format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expiry}",
        encode(&sig)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audience_is_encoded_as_a_whole() {
        assert_eq!(
            audience("hub.azure-devices.net", "dev 1", "connected-registry"),
            "hub.azure-devices.net%2Fdevices%2Fdev%201%2Fmodules%2Fconnected-registry"
        );
    }

    #[tokio::test]
    async fn the_signature_is_over_sr_and_expiry_and_percent_encoded() {
        let signer = Signer::Key(b"secret".to_vec());
        let sr = audience("h", "d", "m");
        let t = token(&signer, &sr, 1_700_000_000).await.unwrap();
        let sig = t.split("&sig=").nth(1).unwrap().split('&').next().unwrap();
        assert!(!sig.contains(['+', '/', '=']), "{sig}");
        let raw = percent_encoding::percent_decode_str(sig)
            .decode_utf8()
            .unwrap();
        let expected = hmac_sha256(b"secret", format!("{sr}\n1700000000").as_bytes());
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(raw.as_bytes())
                .unwrap(),
            expected
        );
        assert!(t.starts_with("SharedAccessSignature sr=h%2Fdevices%2Fd%2Fmodules%2Fm&sig="));
        assert!(t.ends_with("&se=1700000000"));
    }
}
