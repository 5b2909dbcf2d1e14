//! The request-metrics middleware: every request is counted by method, handler and status, and
//! timed until its response headers, with atomic operations only.

use std::future::Future;
use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{web, Error};

use super::AppState;
use crate::metrics::http::Kind;

/// Wraps one request (for `App::wrap_fn`).
pub fn measure<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<B>, Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody,
{
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let kind = Kind::of(req.method().as_str(), req.path());
    let received = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let started = Instant::now();
    let fut = srv.call(req);
    async move {
        let Some(m) = metrics else {
            return fut.await;
        };
        // The handler's future does nothing until polled: in flight from here.
        let flight = m.http.begin(kind);
        let res = fut.await;
        let (code, sent) = match &res {
            Ok(r) => (
                r.status().as_u16(),
                match r.response().body().size() {
                    BodySize::Sized(n) => Some(n),
                    _ => None,
                },
            ),
            Err(e) => (e.as_response_error().status_code().as_u16(), None),
        };
        flight.finish(code, started.elapsed(), received, sent);
        res
    }
}
