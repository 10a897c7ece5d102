//! The HTTP adapter of Trellis: axum routers per domain under `/v1`, authentication
//! extractors, RFC 9457 problem responses, request ids, tracing, CORS, body limits,
//! Prometheus metrics, health probes and the OpenAPI document with Swagger UI.
//!
//! The app builds an [`AppState`] from the domain services it wired and calls
//! [`router`]; nothing here chooses adapters. [`serve`] runs the router with
//! graceful shutdown and the peer address available for login throttling.

pub mod auth;
pub mod extract;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod state;
pub mod validate;

pub use auth::{PlatformAuth, TenantAuth};
pub use metrics::{Metrics, MetricsSource};
pub use problem::{ApiError, FieldError, Problem, ProblemType};
pub use state::{AlwaysReady, AppParts, AppState, DEFAULT_BODY_LIMIT_BYTES, HttpConfig, Readiness};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::Uri;
use std::future::Future;
use std::net::SocketAddr;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa_swagger_ui::SwaggerUi;

/// Every route of the API with its middleware, ready to serve.
///
/// Layers, outermost first: request id → metrics → tracing span → problem finaliser →
/// CORS (only with configured origins) → body limit → routes.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit_bytes;
    // Multipart framing adds a little to the file itself.
    let upload_limit = state
        .rag
        .as_ref()
        .map_or(body_limit, |r| {
            usize::try_from(r.config().max_upload_bytes)
                .unwrap_or(usize::MAX)
                .saturating_add(64 * 1024)
        })
        .max(body_limit);
    let file_limit = state
        .files
        .as_ref()
        .map_or(body_limit, |f| {
            usize::try_from(f.max_file_bytes())
                .unwrap_or(usize::MAX)
                .saturating_add(64 * 1024)
        })
        .max(body_limit);
    let cors = middleware::cors(&state.config.cors_allowed_origins);
    let metrics = state.metrics.clone();

    let routes = Router::new()
        .merge(routes::auth::router())
        .merge(routes::platform::router())
        .merge(routes::tenancy::router())
        .merge(routes::users::router())
        .merge(routes::guests::router())
        .merge(routes::api_keys::router())
        .merge(routes::rag::router())
        .merge(routes::content::router())
        .merge(routes::tools::router())
        .merge(routes::files::router())
        .merge(routes::quotas::router())
        .merge(routes::ops::router())
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi::openapi()))
        // One limit for everything but uploads, enforced by the layer (which checks
        // Content-Length up front and caps streamed bodies); axum's own 2 MB default
        // would otherwise silently cap a larger configured limit.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(body_limit))
        .merge(
            routes::rag::upload_router()
                .layer(DefaultBodyLimit::disable())
                .layer(RequestBodyLimitLayer::new(upload_limit)),
        )
        .merge(
            routes::files::upload_router()
                .layer(DefaultBodyLimit::disable())
                .layer(RequestBodyLimitLayer::new(file_limit)),
        )
        // Brings its own body limit, inside the layer that adds OpenAI-style errors.
        .merge(routes::openai::router(body_limit))
        .fallback(not_found);
    let routes = match cors {
        Some(cors) => routes.layer(cors),
        None => routes,
    };
    routes
        .layer(axum::middleware::from_fn(middleware::problems))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                // One line per response at INFO was the largest avoidable cost per
                // request (formatting plus a write to stdout, ~10% of the server's CPU
                // at load; docs/benchmarks.md). `/metrics` already counts and times
                // every request, and 5xx are still logged at ERROR by `on_failure`;
                // `TRELLIS_LOG=info,tower_http=debug` brings the lines back.
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(state)
}

/// The span every request's logs are recorded in. `tenant_id` is filled in by the
/// auth extractors once the caller is known. Every field is recorded with `%`: the log
/// formatter writes a `&str` field through `Debug`, quoting and escaping it character
/// by character, and that cost every request a few microseconds even when nothing was
/// logged.
fn make_span(req: &Request) -> tracing::Span {
    let request_id = req
        .extensions()
        .get::<middleware::RequestId>()
        .map_or("-", |r| r.0.as_str());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("-", MatchedPath::as_str);
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        route = %route,
        request_id = %request_id,
        tenant_id = tracing::field::Empty,
    )
}

/// The fallback for paths no route matches.
async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no resource at {}", uri.path()))
}

/// Serves `router` on `listener` until `shutdown` completes, then lets in-flight
/// requests finish. Connections carry the peer address, which login throttling uses.
///
/// # Errors
/// When accepting connections fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_from(listener, router, shutdown).await
}

/// [`serve`] over any source of TCP connections (one that is handed connections
/// accepted elsewhere, say), with Nagle's algorithm turned off on every connection.
/// Otherwise a response that leaves in more than one write (a streamed answer's
/// events, a body larger than one write takes) holds each later part back until the
/// client acknowledges the earlier one, and clients delay acknowledgements by up to
/// 40 ms.
///
/// # Errors
/// As [`serve`].
pub async fn serve_from<L>(
    listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr>,
{
    axum::serve(
        accepting(listener),
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// `listener` with Nagle's algorithm turned off on every connection it gives.
fn accepting<L>(listener: L) -> axum::serve::TapIo<L, fn(&mut tokio::net::TcpStream)>
where
    L: axum::serve::Listener<Io = tokio::net::TcpStream>,
{
    use axum::serve::ListenerExt as _;
    listener.tap_io(no_delay)
}

fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not turn off Nagle's algorithm on a connection");
    }
}

/// Completes on Ctrl-C or, on Unix, SIGTERM (what orchestrators send). If a signal
/// handler cannot be installed, that signal is simply never awaited.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener as _;

    #[tokio::test]
    async fn accepted_connections_send_each_write_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepting = accepting(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server_side, peer) = accepting.accept().await;
        assert!(peer.ip().is_loopback());
        assert!(server_side.nodelay().unwrap(), "Nagle's algorithm is off");
    }
}
