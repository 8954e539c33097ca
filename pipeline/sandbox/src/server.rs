//! The accept loop every sandbox shares: TLS, then HTTP/2 only (APNs) or HTTP/1.1 and HTTP/2
//! (FCM, web push), each request handed to the provider's handler with its body read whole.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A request with its body read.
pub type Call = Request<Bytes>;
/// The token of an `Authorization: Bearer <token>` header; the scheme is matched without regard
/// to case (RFC 9110 §11.1), as Apple writes `bearer` and Google `Bearer`.
pub fn bearer_token(call: &Call) -> Option<&str> {
    let value = call.headers().get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// What a handler answers.
pub type Reply = Response<Full<Bytes>>;
/// A provider's request handler.
pub type Handler = Arc<dyn Fn(Call) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// A JSON answer.
pub fn json(status: u16, body: &serde_json::Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body.to_string())));
    *reply.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    reply.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    reply
}

/// An empty answer.
pub fn empty(status: u16) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    reply
}

/// Serves `handler` on `listener` until the task is aborted; counts connections.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, http2_only: bool, handler: Handler, connections: Arc<AtomicU64>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else { continue };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else { return };
            connection(TokioIo::new(stream), peer, http2_only, handler).await;
        });
    }
}

async fn connection<I>(io: I, peer: SocketAddr, http2_only: bool, handler: Handler)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let handler = handler.clone();
        async move {
            let (parts, body) = request.into_parts();
            let reply = match body.collect().await {
                Ok(body) => handler(Request::from_parts(parts, body.to_bytes())).await,
                Err(_) => empty(400),
            };
            Ok::<_, std::convert::Infallible>(reply)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(1000);
    let builder = if http2_only { builder.http2_only() } else { builder };
    if let Err(error) = builder.serve_connection(io, service).await {
        tracing::debug!(%error, %peer, "A sandbox connection ended with an error.");
    }
}
