//! OCI distribution-spec v1.1 conformance against the real binary (end-1 … end-13).

#[path = "../common/mod.rs"]
mod common;

mod acr_tags;
mod content;
mod discovery;
mod edges;
mod errors;
mod pull;
mod push;

use reqwest::blocking::{Client, Response};

/// A started registry with a client, shared by the checks of one test.
pub struct Env {
    /// The running registry.
    pub reg: common::Registry,
    /// HTTP client.
    pub c: Client,
}

impl Env {
    /// Starts a fresh registry.
    pub fn start() -> Self {
        Env {
            reg: common::Registry::start(),
            c: common::http(),
        }
    }

    /// Absolute URL for a path.
    pub fn u(&self, path: &str) -> String {
        format!("{}{}", self.reg.url(), path)
    }

    /// GET a path.
    pub fn get(&self, path: &str) -> Response {
        self.c
            .get(self.u(path))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// HEAD a path.
    pub fn head(&self, path: &str) -> Response {
        self.c
            .head(self.u(path))
            .send()
            .unwrap_or_else(|e| panic!("HEAD {path}: {e}"))
    }

    /// DELETE a path.
    pub fn delete(&self, path: &str) -> Response {
        self.c
            .delete(self.u(path))
            .send()
            .unwrap_or_else(|e| panic!("DELETE {path}: {e}"))
    }
}

/// A header as text ("" when absent).
pub fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The first error code of a spec-shaped error body.
pub fn error_code(r: Response) -> String {
    let v: serde_json::Value = r
        .json()
        .unwrap_or_else(|e| panic!("error body not JSON: {e}"));
    v["errors"][0]["code"].as_str().unwrap_or("").to_owned()
}
