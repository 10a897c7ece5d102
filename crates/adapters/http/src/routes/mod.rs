//! The `/v1` routers, one per domain area, plus pieces they share: paging query
//! parameters, list envelopes and the `201 Created` response with its `Location`.

pub mod api_keys;
pub mod auth;
pub mod content;
pub mod files;
pub mod guests;
pub mod openai;
pub mod ops;
pub mod platform;
pub mod quotas;
pub mod rag;
pub mod tenancy;
pub mod tools;
pub mod users;

use crate::extract::Json;
use crate::problem::ApiError;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use trellis_kernel::PageRequest;
use utoipa::IntoParams;

/// `?limit=&cursor=` for plain lists.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Items per page, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// # Errors
    /// 400 when the limit is out of range or the cursor is not one we handed out.
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        Ok(PageRequest::new(self.limit, self.cursor.as_deref())?)
    }
}

/// Defines a `{items, next_cursor}` list envelope for one item type. Concrete types
/// (rather than one generic) give each list a readable name in the OpenAPI document.
macro_rules! list_response {
    ($(#[$meta:meta])* $name:ident, $item:ty) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `cursor` to get the next page; `null` on the last page.
            pub next_cursor: Option<String>,
        }

        impl $name {
            pub fn from_page<T>(page: trellis_kernel::Page<T>, f: impl FnMut(T) -> $item) -> Self {
                let page = page.map(f);
                Self {
                    items: page.items,
                    next_cursor: page.next_cursor,
                }
            }
        }
    };
}
pub(crate) use list_response;

/// `201 Created` with `Location` pointing at the new resource.
pub fn created<T: Serialize>(location: String, body: T) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

/// Headers for responses that carry tokens: they must never be cached (RFC 6749 §5.1).
pub const NO_STORE: [(header::HeaderName, &str); 2] = [
    (header::CACHE_CONTROL, "no-store"),
    (header::PRAGMA, "no-cache"),
];
