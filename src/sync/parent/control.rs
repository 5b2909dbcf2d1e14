//! Requests to a connected-registry parent's control plane (`/acr/v1/…`): JSON in and out,
//! with the sync token's Basic credentials (the control plane authorises by the token's
//! gateway permissions, which bearer tokens do not carry), held open as long as the parent
//! likes up to a deadline.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_TYPE};

use super::error::ParentError;
use super::request::read_limited;
use super::ParentClient;

/// Largest control-plane answer read (a configuration with many tokens is still small).
const ANSWER_MAX: usize = 16 * 1024 * 1024;

/// A control-plane answer: its status, headers and body.
#[derive(Debug)]
pub struct ControlAnswer {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body (JSON).
    pub body: Bytes,
}

impl ParentClient {
    /// POSTs `body` (JSON) to `path` on the parent, waiting at most `deadline` for the whole
    /// answer. Any HTTP status is an answer; only a failed link is an error.
    pub async fn control_post(
        &self,
        path: &str,
        body: Vec<u8>,
        deadline: Duration,
    ) -> Result<ControlAnswer, ParentError> {
        let url = format!("{}{path}", self.inner.base);
        let resp = self
            .inner
            .long_poll
            .post(&url)
            .basic_auth(&self.inner.username, Some(&self.inner.password))
            .header(CONTENT_TYPE, "application/json")
            .timeout(deadline)
            .body(body)
            .send()
            .await
            .map_err(|e| ParentError::transport(&e).redact(&self.inner.password))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_limited(resp, ANSWER_MAX).await?;
        Ok(ControlAnswer {
            status,
            headers,
            body,
        })
    }
}
