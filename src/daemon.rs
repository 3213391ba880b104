//! The whole daemon as one future: the HTTP server on its listeners and the lifecycle
//! timer, until `shutdown`. The binary and the integration tests run exactly this.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api::{self, Listeners};
use crate::lifecycle;
use crate::service::Service;

/// Serves until `shutdown` completes, then drains requests and stops the lifecycle.
pub async fn run(listeners: Listeners, service: Arc<Service>, shutdown: impl Future<Output = ()>) {
    let stop = CancellationToken::new();
    let timer = tokio::spawn(lifecycle::run(service.clone(), stop.clone()));
    api::serve(listeners, service, shutdown).await;
    stop.cancel();
    let _ = timer.await;
}
