//! A client of the IoT Edge workload API (HTTP/1.1 on a Unix socket): signs the module's SAS
//! tokens (the module never sees its key), hands out the trust bundle and issues server
//! certificates. Errors carry the daemon's `{"message": …}`.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::{json, Value};

/// Longest the daemon may take to answer (it answers slowly under load, or closes throttled
/// connections without a reply).
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read (a trust bundle of many certificates fits easily).
const MAX_BODY: usize = 1 << 20;

/// Why a workload API call failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The socket could not be reached or the connection broke (also: throttled, closed).
    #[error("workload API at {socket}: {message}")]
    Io {
        /// The socket.
        socket: String,
        /// What happened.
        message: String,
    },
    /// The daemon answered with an error.
    #[error("workload API {path}: {status} {message}")]
    Status {
        /// The request path (without the query).
        path: String,
        /// HTTP status.
        status: u16,
        /// The daemon's message.
        message: String,
    },
    /// The daemon's answer is not what the API describes.
    #[error("workload API {path}: unexpected answer: {message}")]
    Answer {
        /// The request path.
        path: String,
        /// What was wrong.
        message: String,
    },
}

/// A server certificate issued by the workload API.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// The certificate chain (PEM).
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
    /// When it expires (RFC 3339, as given).
    pub expiration: String,
}

/// The workload API of one module.
#[derive(Debug, Clone)]
pub struct WorkloadClient {
    socket: PathBuf,
    module_id: String,
    generation_id: String,
    api_version: String,
}

#[derive(Deserialize)]
struct Message {
    message: String,
}

impl WorkloadClient {
    /// A client for `module_id` (generation `generation_id`) on `socket`.
    pub fn new(socket: PathBuf, module_id: &str, generation_id: &str, api_version: &str) -> Self {
        WorkloadClient {
            socket,
            module_id: module_id.to_owned(),
            generation_id: generation_id.to_owned(),
            api_version: api_version.to_owned(),
        }
    }

    fn module_path(&self, what: &str) -> String {
        let seg = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        format!(
            "/modules/{}/genid/{}/{what}",
            seg(&self.module_id),
            seg(&self.generation_id)
        )
    }

    /// HMAC-SHA256 of `data` with the module's primary key.
    pub async fn sign(&self, data: &[u8]) -> Result<Vec<u8>, WorkloadError> {
        #[derive(Deserialize)]
        struct Signed {
            digest: String,
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let path = self.module_path("sign");
        let body = json!({"keyId": "primary", "algo": "HMACSHA256", "data": b64.encode(data)});
        let signed: Signed = self.call("POST", &path, Some(body), 200).await?;
        b64.decode(signed.digest.as_bytes())
            .map_err(|_| answer(&path, "digest is not base64"))
    }

    /// The CA certificates (PEM) modules trust: edgeHub's and the parent's chains end there.
    pub async fn trust_bundle(&self) -> Result<String, WorkloadError> {
        #[derive(Deserialize)]
        struct Bundle {
            certificate: String,
        }
        let b: Bundle = self.call("GET", "/trust-bundle", None, 200).await?;
        Ok(b.certificate)
    }

    /// A server certificate for `common_name` (the daemon adds the module id as a name).
    pub async fn server_cert(
        &self,
        common_name: &str,
        expiration: &str,
    ) -> Result<ServerCert, WorkloadError> {
        #[derive(Deserialize)]
        struct Key {
            bytes: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Issued {
            private_key: Key,
            certificate: String,
            expiration: String,
        }
        let path = self.module_path("certificate/server");
        let body = json!({"commonName": common_name, "expiration": expiration});
        let issued: Issued = self.call("POST", &path, Some(body), 201).await?;
        let key_pem = issued
            .private_key
            .bytes
            .ok_or_else(|| answer(&path, "no private key bytes"))?;
        Ok(ServerCert {
            cert_pem: issued.certificate,
            key_pem,
            expiration: issued.expiration,
        })
    }

    /// One request; the answer's JSON when the status is `ok`, else the daemon's message.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        ok: u16,
    ) -> Result<T, WorkloadError> {
        let (status, bytes) = tokio::time::timeout(TIMEOUT, self.send(method, path, body))
            .await
            .map_err(|_| self.io(format!("no answer within {} s", TIMEOUT.as_secs())))??;
        if status != ok {
            let message = serde_json::from_slice::<Message>(&bytes)
                .map(|m| m.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(WorkloadError::Status {
                path: path.to_owned(),
                status,
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| answer(path, &e.to_string()))
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Bytes), WorkloadError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.io(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.io(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let uri = format!("{path}?api-version={}", self.api_version);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::HOST, "localhost");
        let payload = match body {
            Some(v) => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| self.io(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.io(format!("connection closed without an answer ({e})")))?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| self.io(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }

    fn io(&self, message: String) -> WorkloadError {
        WorkloadError::Io {
            socket: self.socket.display().to_string(),
            message,
        }
    }
}

fn answer(path: &str, message: &str) -> WorkloadError {
    WorkloadError::Answer {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}
