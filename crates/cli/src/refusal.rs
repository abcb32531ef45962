//! Errors the server reports asynchronously (`-ERR` after a PUB or SUB it refused, such as a
//! permissions violation) reach the user: commands watch the connection's events and fail
//! with the server's own words instead of claiming success or waiting forever.

use rnats_client::Event;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::Failure;

/// The first `-ERR` text the server sent since the last look, without waiting.
pub fn pending(events: &mut Receiver<Event>) -> Option<String> {
    loop {
        match events.try_recv() {
            Ok(Event::ServerError(text)) => return Some(text),
            Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
            Err(_) => return None,
        }
    }
}

/// Waits for the next `-ERR` (never resolves once the connection is gone).
pub async fn next(events: &mut Receiver<Event>) -> String {
    loop {
        match events.recv().await {
            Ok(Event::ServerError(text)) => return text,
            Ok(_) | Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// The failure for `what` (e.g. `the publish to "x"`) refused with `text`.
pub fn refused(what: &str, text: &str) -> Failure {
    let hint = if text.starts_with("Permissions Violation") {
        ": this user may not do that; check the permissions of the user you connect as (--user, --creds)"
    } else {
        ""
    };
    Failure(format!("the server refused {what}: -ERR '{text}'{hint}"))
}
