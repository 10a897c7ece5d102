//! Operational endpoints outside `/v1`: liveness, readiness and Prometheus metrics.
//! They need no authentication, so orchestrators and scrapers can reach them.

use crate::extract::Json;
use crate::metrics::Metrics;
use crate::problem::{ApiError, Problem, ProblemType};
use crate::state::{AppState, Readiness};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// `{"status":"ok"}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusResponse {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process answers. Never checks dependencies, so a database outage
/// does not make an orchestrator restart healthy processes.
#[utoipa::path(
    get, path = "/healthz", tag = "ops",
    responses((status = 200, body = StatusResponse))
)]
pub async fn healthz() -> Json<StatusResponse> {
    Json(StatusResponse { status: "ok" })
}

/// Readiness: the app's dependencies answer, so traffic may be routed here.
#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, body = StatusResponse),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(
    State(readiness): State<Arc<dyn Readiness>>,
) -> Result<Json<StatusResponse>, ApiError> {
    if readiness.is_ready().await {
        Ok(Json(StatusResponse { status: "ok" }))
    } else {
        Err(ApiError::new(
            ProblemType::NotReady,
            "a dependency is not available yet",
        ))
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"))
)]
pub async fn metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics.render(),
    )
}
