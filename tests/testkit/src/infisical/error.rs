//! The server's error body `{reqId, statusCode, message, error}` (§1.2) and
//! the error classes it uses, with their real `error` names.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// An error answer.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) message: Value,
}

pub(crate) fn req_id() -> String {
    use rand::Rng as _;
    let suffix: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(14)
        .map(char::from)
        .collect();
    format!("req-{suffix}")
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: Value::String(message.into()),
        }
    }
    /// `BadRequestError`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
    /// `UnauthorizedError`.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UnauthorizedError", message)
    }
    /// `ForbiddenRequestError` (default name).
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "ForbiddenError", message)
    }
    /// A CASL permission failure.
    pub(crate) fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "PermissionDenied", message)
    }
    /// A jsonwebtoken error on the Infisical access token: 403 `TokenError`.
    pub(crate) fn token_error(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "TokenError", message)
    }
    /// `NotFoundError`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }
    /// Fastify's own 404 for a route that does not exist (`error` with a space).
    pub(crate) fn no_route(method: &str, uri: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Not Found",
            format!("Route {method}:{uri} not found"),
        )
    }
    /// A zod failure: 422 with an array of issues.
    pub(crate) fn validation(issues: Vec<Value>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: "ValidationFailure",
            message: Value::Array(issues),
        }
    }
    /// Anything unexpected.
    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Something went wrong",
        )
    }
    /// The JSON body.
    pub(crate) fn body(&self) -> Value {
        json!({
            "reqId": req_id(),
            "statusCode": self.status.as_u16(),
            "message": self.message,
            "error": self.error,
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}
