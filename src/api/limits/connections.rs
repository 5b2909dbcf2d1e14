//! The connection cap: each accepted connection takes a place when it opens (actix's
//! `on_connect`) and gives it back when it closes (the connection's data is dropped with it).
//! A connection over the cap answers its first request with 429 and closes: the client learns
//! why at once, where refusing to accept would leave it hanging.

use std::any::Any;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Extensions, Service, ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::rt::net::TcpStream;
use actix_web::{Error, ResponseError};
use futures_util::future::{ready, Either};

use super::{too_many, Counter, Full, Place};

/// What a connection got when it opened: a place, or the cap that was full.
struct Ticket(Result<Place, Full>);

/// The `on_connect` callback: counts the connection against `counter` by its peer address.
pub fn on_connect(counter: Arc<Counter>) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync {
    move |io, ext| {
        let Some(peer) = peer_of(io) else {
            return;
        };
        ext.insert(Ticket(counter.enter(peer.ip())));
    }
}

/// The peer address of a plain or TLS connection.
fn peer_of(io: &dyn Any) -> Option<SocketAddr> {
    if let Some(tcp) = io.downcast_ref::<TcpStream>() {
        return tcp.peer_addr().ok();
    }
    let tls = io.downcast_ref::<TlsStream<TcpStream>>()?;
    tls.get_ref().0.peer_addr().ok()
}

/// Middleware (for `App::wrap_fn`): a request on a connection over the cap gets 429 with
/// `Retry-After`, and the connection closes after it.
pub fn admit<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<EitherBody<B>>, Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    S::Future: 'static,
    B: MessageBody,
{
    let refused = req
        .conn_data::<Ticket>()
        .and_then(|t| t.0.as_ref().err().copied());
    match refused {
        None => {
            let fut = srv.call(req);
            Either::Left(async move { fut.await.map(ServiceResponse::map_into_left_body) })
        }
        Some(full) => {
            let mut res = too_many(full, "connections").error_response();
            res.head_mut().set_connection_type(ConnectionType::Close);
            tracing::debug!(peer = ?req.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0])), "connection over the cap refused");
            Either::Right(ready(Ok(req.into_response(res).map_into_right_body())))
        }
    }
}
