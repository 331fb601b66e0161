//! The admin console reached through the virtual database `pgbouncer` / `shardbouncer`.

use crate::app::{App, ClientHandle};
use crate::client::login::LoginError;
use crate::client::ClientStream;
use crate::protocol::sqlstate;
use std::sync::Arc;

/// Serve a logged-in console client.
pub async fn serve(
    _app: &Arc<App>,
    _stream: &mut ClientStream,
    _handle: &Arc<ClientHandle>,
) -> Result<(), LoginError> {
    Err(LoginError::new(
        sqlstate::INSUFFICIENT_PRIVILEGE,
        "the admin console is not available in this build",
    ))
}
