//! Request metrics, distribution's `registry_http_*` families: counted on every request with
//! atomic operations only. Every (method, handler, common status) combination gets its counter
//! handle once; rare status codes take the labelled family's lock.

use std::sync::atomic::AtomicI64;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// What a request was for: distribution's handler names where they exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags,
    /// `/v2/<name>/manifests/<reference>`
    Manifest,
    /// `/v2/<name>/blobs/<digest>`
    Blob,
    /// `/v2/<name>/blobs/uploads/…`
    BlobUpload,
    /// `/v2/<name>/referrers/<digest>`
    Referrers,
    /// The token service.
    Token,
    /// A child's exchange with this registry's control plane.
    Exchange,
    /// Health, status, sync and metrics under `/acr/v1`.
    Acr,
    /// Anything else.
    Other,
}

const HANDLERS: [Handler; 11] = [
    Handler::Base,
    Handler::Catalog,
    Handler::Tags,
    Handler::Manifest,
    Handler::Blob,
    Handler::BlobUpload,
    Handler::Referrers,
    Handler::Token,
    Handler::Exchange,
    Handler::Acr,
    Handler::Other,
];
const METHODS: [&str; 7] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OTHER"];
/// Status codes a registry answers often: their counters are resolved once.
const CODES: [u16; 22] = [
    200, 201, 202, 204, 206, 301, 302, 304, 307, 400, 401, 403, 404, 405, 408, 413, 416, 429, 431,
    500, 502, 503,
];

impl Handler {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Handler::Base => "base",
            Handler::Catalog => "catalog",
            Handler::Tags => "tags",
            Handler::Manifest => "manifest",
            Handler::Blob => "blob",
            Handler::BlobUpload => "blob_upload",
            Handler::Referrers => "referrers",
            Handler::Token => "token",
            Handler::Exchange => "exchange",
            Handler::Acr => "acr",
            Handler::Other => "other",
        }
    }

    /// The handler of a request path, read from its end as the router does (repository names
    /// have slashes), without validating anything.
    pub fn of(path: &str) -> Handler {
        if path == "/acr/oauth2/token" || path == "/oauth2/token" {
            return Handler::Token;
        }
        if let Some(acr) = path.strip_prefix("/acr/v1/") {
            return if acr.starts_with("connectedRegistries/") {
                Handler::Exchange
            } else {
                Handler::Acr
            };
        }
        let Some(rest) = path.strip_prefix("/v2") else {
            return Handler::Other;
        };
        if rest.is_empty() || rest == "/" {
            return Handler::Base;
        }
        if rest == "/_catalog" {
            return Handler::Catalog;
        }
        let mut tail = rest.rsplit('/');
        let last = tail.next().unwrap_or_default();
        let second = tail.next().unwrap_or_default();
        let third = tail.next().unwrap_or_default();
        match (third, second, last) {
            (_, "tags", "list") => Handler::Tags,
            ("blobs", "uploads", _) | (_, "blobs", "uploads") => Handler::BlobUpload,
            (_, "manifests", _) => Handler::Manifest,
            (_, "blobs", _) => Handler::Blob,
            (_, "referrers", _) => Handler::Referrers,
            _ => Handler::Other,
        }
    }

    fn index(self) -> usize {
        HANDLERS
            .iter()
            .position(|h| *h == self)
            .unwrap_or(HANDLERS.len() - 1)
    }
}

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    handler: &'static str,
    code: u16,
}

/// Labels of the per-handler families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabels {
    method: &'static str,
    handler: &'static str,
}

/// Labels of the in-flight gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InFlightLabels {
    handler: &'static str,
}

/// The request families and the handles resolved for the fast path.
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<HandlerLabels, Histogram>,
    request_bytes: Family<HandlerLabels, Counter>,
    response_bytes: Family<HandlerLabels, Counter>,
    in_flight: Family<InFlightLabels, Gauge>,
    request_handles: Vec<OnceLock<Counter>>,
    per_handler: Vec<OnceLock<PerHandler>>,
    in_flight_handles: Vec<OnceLock<Gauge>>,
}

/// The handles of one (method, handler).
struct PerHandler {
    duration: Histogram,
    request_bytes: Counter,
    response_bytes: Counter,
}

/// One request in progress: finishing it records it.
pub struct InFlight<'a> {
    metrics: &'a HttpMetrics,
    method: usize,
    handler: Handler,
    gauge: Gauge<i64, AtomicI64>,
}

fn method_index(method: &str) -> usize {
    METHODS
        .iter()
        .position(|m| *m == method)
        .unwrap_or(METHODS.len() - 1)
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let buckets = || Histogram::new(exponential_buckets(0.0005, 2.5, 14));
        HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(buckets),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            in_flight: Family::default(),
            request_handles: (0..METHODS.len() * HANDLERS.len() * CODES.len())
                .map(|_| OnceLock::new())
                .collect(),
            per_handler: (0..METHODS.len() * HANDLERS.len())
                .map(|_| OnceLock::new())
                .collect(),
            in_flight_handles: (0..HANDLERS.len()).map(|_| OnceLock::new()).collect(),
        }
    }
}

/// What a request is, read once from its method and path (no allocation).
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    method: usize,
    handler: Handler,
}

impl Kind {
    /// The kind of a request.
    pub fn of(method: &str, path: &str) -> Kind {
        Kind {
            method: method_index(method),
            handler: Handler::of(path),
        }
    }
}

impl HttpMetrics {
    /// Counts a request starting: it is in flight until [`InFlight::finish`].
    pub fn begin(&self, kind: Kind) -> InFlight<'_> {
        let handler = kind.handler;
        let gauge = self.in_flight_handles[handler.index()]
            .get_or_init(|| {
                self.in_flight
                    .get_or_create(&InFlightLabels {
                        handler: handler.as_str(),
                    })
                    .clone()
            })
            .clone();
        gauge.inc();
        InFlight {
            metrics: self,
            method: kind.method,
            handler,
            gauge,
        }
    }

    fn per_handler(&self, method: usize, handler: Handler) -> &PerHandler {
        let i = method * HANDLERS.len() + handler.index();
        self.per_handler[i].get_or_init(|| {
            let labels = HandlerLabels {
                method: METHODS[method],
                handler: handler.as_str(),
            };
            PerHandler {
                duration: self.duration.get_or_create(&labels).clone(),
                request_bytes: self.request_bytes.get_or_create(&labels).clone(),
                response_bytes: self.response_bytes.get_or_create(&labels).clone(),
            }
        })
    }

    fn count(&self, method: usize, handler: Handler, code: u16) {
        let labels = || RequestLabels {
            method: METHODS[method],
            handler: handler.as_str(),
            code,
        };
        match CODES.iter().position(|c| *c == code) {
            Some(ci) => {
                let i = (method * HANDLERS.len() + handler.index()) * CODES.len() + ci;
                self.request_handles[i]
                    .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                    .inc();
            }
            None => {
                self.requests.get_or_create(&labels()).inc();
            }
        }
    }

    /// Adds the request families to a registry being encoded.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "registry_http_requests",
            "Requests by method, handler and status code",
            self.requests.clone(),
        );
        r.register(
            "registry_http_request_duration_seconds",
            "Time until the response headers, by method and handler",
            self.duration.clone(),
        );
        r.register(
            "registry_http_request_bytes",
            "Request body bytes received (declared lengths), by method and handler",
            self.request_bytes.clone(),
        );
        r.register(
            "registry_http_response_bytes",
            "Response body bytes served (known lengths), by method and handler",
            self.response_bytes.clone(),
        );
        r.register(
            "registry_http_in_flight_requests",
            "Requests being handled, by handler",
            self.in_flight.clone(),
        );
    }
}

impl InFlight<'_> {
    /// Records the finished request: its status, time and body sizes.
    pub fn finish(self, code: u16, elapsed: Duration, received: u64, sent: Option<u64>) {
        let m = self.metrics;
        m.count(self.method, self.handler, code);
        let h = m.per_handler(self.method, self.handler);
        h.duration.observe(elapsed.as_secs_f64());
        if received > 0 {
            h.request_bytes.inc_by(received);
        }
        // A HEAD response declares the length of a body it does not send.
        let head = METHODS[self.method] == "HEAD";
        if let Some(n) = sent.filter(|n| *n > 0 && !head) {
            h.response_bytes.inc_by(n);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_are_read_from_the_end_of_the_path() {
        for (path, h) in [
            ("/v2/", Handler::Base),
            ("/v2", Handler::Base),
            ("/v2/_catalog", Handler::Catalog),
            ("/v2/a/b/tags/list", Handler::Tags),
            ("/v2/a/manifests/b/manifests/v1", Handler::Manifest),
            ("/v2/a/blobs/sha256:00", Handler::Blob),
            ("/v2/a/blobs/uploads/", Handler::BlobUpload),
            ("/v2/a/blobs/uploads/3f2a", Handler::BlobUpload),
            ("/v2/a/referrers/sha256:00", Handler::Referrers),
            ("/acr/oauth2/token", Handler::Token),
            ("/acr/v1/status", Handler::Acr),
            ("/acr/v1/connectedRegistries/x/exchange", Handler::Exchange),
            ("/favicon.ico", Handler::Other),
        ] {
            assert_eq!(Handler::of(path), h, "{path}");
        }
    }

    #[test]
    fn requests_are_counted_with_their_exact_code() {
        let m = HttpMetrics::default();
        for code in [200, 200, 404, 418] {
            let f = m.begin(Kind::of("GET", "/v2/a/manifests/v1"));
            f.finish(code, Duration::from_millis(2), 0, Some(10));
        }
        let mut r = Registry::default();
        m.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains(
                "registry_http_requests_total{method=\"GET\",handler=\"manifest\",code=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("code=\"418\"} 1"), "{text}");
        assert!(
            text.contains(
                "registry_http_response_bytes_total{method=\"GET\",handler=\"manifest\"} 40"
            ),
            "{text}"
        );
        assert!(
            text.contains("registry_http_in_flight_requests{handler=\"manifest\"} 0"),
            "{text}"
        );
        assert!(text.contains("registry_http_request_duration_seconds_count{method=\"GET\",handler=\"manifest\"} 4"), "{text}");
        let f = m.begin(Kind::of("HEAD", "/v2/a/blobs/sha256:00"));
        f.finish(200, Duration::from_millis(1), 0, Some(1 << 20));
        let mut r = Registry::default();
        m.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains("registry_http_response_bytes_total{method=\"HEAD\",handler=\"blob\"} 0"),
            "a HEAD sends no body: {text}"
        );
    }
}
