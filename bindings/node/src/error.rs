//! The one place errors cross into JavaScript. Every core and server error becomes a napi
//! error whose message starts with its code and the core's kind in brackets
//! (`[UNAVAILABLE:not_leader] no leader ...`); the JavaScript layer (node/lib/error.js) turns
//! that into a `ScaleStoreError` with `.code` and `.kind`.

use napi::{Error, Status};
use scalestore_server::ServerError;

/// The codes of the public API, one per kind of failure a caller can act on.
fn code_of(e: &scalestore::Error) -> &'static str {
    use scalestore::Error as E;
    match e {
        E::NotLeader { .. }
        | E::WrongShard { .. }
        | E::GroupNotHosted { .. }
        | E::WrongNode { .. }
        | E::Unavailable(_) => "UNAVAILABLE",
        E::Timeout { .. } => "TIMEOUT",
        E::InvalidArgument(_) | E::UnknownNode(_) => "INVALID_ARGUMENT",
        E::Closed(_) => "CLOSED",
        E::DataDir { .. } => "DATA_DIR",
        E::SessionExpired { .. } => "SESSION_EXPIRED",
        E::Storage(_) => "STORAGE",
        // A group stopped by an internal failure is restarted by its node: retry. A kind
        // added to the core later is reported by its own `kind` until it gets a code here.
        E::Fatal { .. } | _ => "UNAVAILABLE",
    }
}

pub fn to_js(e: scalestore::Error) -> Error {
    coded_kind(code_of(&e), e.kind(), with_causes(&e))
}

pub fn server_to_js(e: ServerError) -> Error {
    let (code, kind) = match &e {
        ServerError::Core(core) => (code_of(core), core.kind()),
        ServerError::Unreachable { .. } => ("UNAVAILABLE", "unreachable"),
        ServerError::Transport(_) => ("UNAVAILABLE", "transport"),
        ServerError::Config(_) => ("INVALID_ARGUMENT", "config"),
        ServerError::DataDir { .. } => ("DATA_DIR", "data_dir"),
        ServerError::Io(_) => ("STORAGE", "io"),
        _ => ("UNAVAILABLE", "server"),
    };
    coded_kind(code, kind, with_causes(&e))
}

/// A blocking task that panicked or was cancelled (the runtime is shutting down).
pub fn stopped(e: tokio::task::JoinError) -> Error {
    coded(
        "UNAVAILABLE",
        format!("the task stopped before it finished: {e}"),
    )
}

pub fn closed(what: &str) -> Error {
    coded("CLOSED", what.to_string())
}

pub fn invalid(message: impl Into<String>) -> Error {
    coded("INVALID_ARGUMENT", message.into())
}

/// The message and every cause under it: "cannot reach node 2: transport error: connection
/// refused".
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

fn coded(code: &str, message: String) -> Error {
    Error::new(Status::GenericFailure, format!("[{code}] {message}"))
}

fn coded_kind(code: &str, kind: &str, message: String) -> Error {
    Error::new(Status::GenericFailure, format!("[{code}:{kind}] {message}"))
}
