//! cipher routes.

use std::sync::Arc;

use axum::Router;

use crate::state::Nexus;

/// The cipher routes, merged into the `/v1` router.
pub(super) fn routes() -> Router<Arc<Nexus>> {
    Router::new()
}
