//! Absolute URLs for `Location` headers, honouring the IoT Edge API proxy's forwarded headers.

use actix_web::HttpRequest;

/// `scheme://host` as the client addressed us, or `None` when the request carries no host.
pub fn origin(req: &HttpRequest) -> Option<String> {
    let headers = req.headers();
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()))
    };
    let host = first("x-forwarded-host").or_else(|| first("host"))?;
    let proto = first("x-forwarded-proto")
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| req.connection_info().scheme().to_owned());
    Some(format!("{proto}://{host}"))
}

/// An absolute URL for `path` (which starts with `/`), or the path alone without a host.
pub fn absolute(req: &HttpRequest, path: &str) -> String {
    match origin(req) {
        Some(o) => format!("{o}{path}"),
        None => path.to_owned(),
    }
}
