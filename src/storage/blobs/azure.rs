//! Azure Blob Storage as the blob backend: the container named by `az://<container>`, with the
//! account and credentials `object_store` reads from the usual `AZURE_*` environment variables
//! (`AZURE_STORAGE_USE_EMULATOR=true` and `AZURITE_BLOB_STORAGE_URL` for Azurite).
//!
//! `object_store` works inside a container but cannot create one, so the container is created
//! here with one Shared Key request when the account key is known; with other credentials it
//! must exist already (the first request says so if not).

use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, Mac};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use sha2::Sha256;

use super::object::ObjectBlobs;
use crate::storage::error::{Result, StorageError};

/// The storage service version our one hand-made request speaks.
const API_VERSION: &str = "2021-08-06";
/// Azurite's account and its well-known key (published by Microsoft for the emulator).
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Opens the blob backend in Azure container `container`, creating the container if needed.
pub fn open(container: &str) -> Result<ObjectBlobs> {
    open_with(MicrosoftAzureBuilder::from_env(), container)
}

/// Opens the blob backend in `container` with the account `builder` is set up for.
fn open_with(builder: MicrosoftAzureBuilder, container: &str) -> Result<ObjectBlobs> {
    let builder = builder.with_container_name(container);
    let account = ContainerAccess::from(&builder, container);
    let store = builder
        .build()
        .map_err(|e| StorageError::Config(format!("Azure blob store {container}: {e}")))?;
    let blobs = ObjectBlobs::new(Arc::new(store), format!("az://{container}"))?;
    if let Some(access) = account {
        blobs.run(access.create())??;
    }
    Ok(blobs)
}

/// What creating the container takes: its URL, the account and its key.
struct ContainerAccess {
    url: String,
    /// The resource as Shared Key signs it.
    resource: String,
    account: String,
    key: Vec<u8>,
}

impl ContainerAccess {
    /// From the builder's settings, when they include an account key (or name the emulator).
    fn from(builder: &MicrosoftAzureBuilder, container: &str) -> Option<Self> {
        let value = |k: AzureConfigKey| builder.get_config_value(&k);
        let emulator = value(AzureConfigKey::UseEmulator).is_some_and(|v| v == "true");
        let (account, key, url) = if emulator {
            let endpoint = std::env::var("AZURITE_BLOB_STORAGE_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:10000".into());
            let account = value(AzureConfigKey::AccountName).unwrap_or(EMULATOR_ACCOUNT.into());
            let key = value(AzureConfigKey::AccessKey).unwrap_or(EMULATOR_KEY.into());
            let url = format!("{}/{account}/{container}", endpoint.trim_end_matches('/'));
            (account, key, url)
        } else {
            let account = value(AzureConfigKey::AccountName)?;
            let key = value(AzureConfigKey::AccessKey)?;
            let endpoint = value(AzureConfigKey::Endpoint)
                .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
            let url = format!("{}/{container}", endpoint.trim_end_matches('/'));
            (account, key, url)
        };
        let key = base64::engine::general_purpose::STANDARD
            .decode(key.trim())
            .ok()?;
        let path = url.splitn(4, '/').nth(3).unwrap_or_default().to_owned();
        Some(ContainerAccess {
            resource: format!("/{account}/{path}"),
            url,
            account,
            key,
        })
    }

    /// Creates the container; one that exists already is fine.
    async fn create(self) -> Result<()> {
        let date = httpdate_now();
        // Shared Key: the verb, eleven standard headers (all empty here), the x-ms- headers
        // and the resource with its query parameters.
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{API_VERSION}\n{}\nrestype:container",
            self.resource
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .map_err(|e| StorageError::Config(format!("Azure account key: {e}")))?;
        mac.update(to_sign.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let failed = |e: String| {
            StorageError::io(
                format!("creating Azure container {}", self.url),
                std::io::Error::other(e),
            )
        };
        let resp = reqwest::Client::new()
            .put(format!("{}?restype=container", self.url))
            .header("x-ms-date", &date)
            .header("x-ms-version", API_VERSION)
            .header("Content-Length", "0")
            .header(
                "Authorization",
                format!("SharedKey {}:{signature}", self.account),
            )
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        match resp.status().as_u16() {
            201 | 409 => Ok(()),
            s => {
                let body = resp.text().await.unwrap_or_default();
                Err(failed(format!("status {s}: {body}")))
            }
        }
    }
}

/// The current time as HTTP dates write it (`Tue, 01 Dec 2026 10:00:00 GMT`).
fn httpdate_now() -> String {
    chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::BlobBackend;
    use crate::testing::Azurite;

    #[test]
    fn the_azure_backend_conforms_on_azurite() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let azurite = Azurite::start(dir.path());
        let builder = MicrosoftAzureBuilder::new()
            .with_account(EMULATOR_ACCOUNT)
            .with_access_key(EMULATOR_KEY)
            .with_endpoint(azurite.account_url(EMULATOR_ACCOUNT))
            .with_allow_http(true);
        let blobs = open_with(builder.clone(), "registry").unwrap_or_else(|e| panic!("{e}"));
        // A second start finds the container there.
        drop(open_with(builder, "registry").unwrap_or_else(|e| panic!("{e}")));
        let staging = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        super::super::conformance::run(&blobs, staging.path());

        // Called the ways the registry calls its store: from the blocking pool, and from an
        // async worker that stepped out with `block_in_place` (sync's `local`).
        let blobs = Arc::new(blobs);
        let d = crate::registry::Digest::sha256_of(b"same bytes");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let b = blobs.clone();
        let pooled = rt.block_on(async move {
            tokio::task::spawn_blocking(move || b.size(&d).ok().flatten()).await
        });
        assert_eq!(pooled.ok().flatten(), Some(10));
        let b = blobs.clone();
        let d = crate::registry::Digest::sha256_of(b"same bytes");
        let stepped_out =
            rt.block_on(async move { tokio::task::block_in_place(|| b.size(&d).ok().flatten()) });
        assert_eq!(stepped_out, Some(10));
    }
}
