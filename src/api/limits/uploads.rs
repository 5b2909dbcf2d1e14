//! The cap on requests sending blob bytes at once: each holds disk bandwidth, a blocking thread
//! for its writes and a session lock, so a client pushing hundreds at once would starve pulls.

use std::sync::Arc;

use actix_web::HttpRequest;

use super::super::auth::client_ip;
use super::super::error::ApiResult;
use super::{too_many, Counter, Place};

/// Admits blob-sending requests up to the caps, in all and per client.
#[derive(Debug, Clone)]
pub struct UploadGate(Arc<Counter>);

impl UploadGate {
    /// A gate for `total` uploads at once, `per_client` from one address.
    pub fn new(total: usize, per_client: usize) -> Self {
        UploadGate(Counter::new(total, per_client))
    }

    /// A place for this request's upload, held until the handler returns; 429 when full.
    pub fn enter(&self, req: &HttpRequest) -> ApiResult<Place> {
        self.0
            .enter(client_ip(req))
            .map_err(|full| too_many(full, "uploads in progress"))
    }
}
