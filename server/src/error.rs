//! The server crate's one error type: the core's errors, plus what only a networked service
//! meets (bad configuration, unreachable endpoints).

use std::path::PathBuf;

/// Result alias of the server crate.
pub type ServerResult<T, E = ServerError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// An error of the store itself (not leader, timeout, invalid argument, ...).
    #[error(transparent)]
    Core(#[from] scalestore::Error),

    /// A flag, TOML setting or endpoint that cannot work; nothing was started.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The data dir holds another node's or cluster's data, or was bootstrapped differently.
    #[error("data dir {path:?}: {reason}")]
    DataDir { path: PathBuf, reason: String },

    /// No endpoint answered.
    #[error("cannot reach the cluster at {endpoints}: {reason}")]
    Unreachable { endpoints: String, reason: String },

    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl ServerError {
    /// The exit code the CLI and the server use for this error (documented in the README):
    /// 2 when the cluster cannot be reached, 64 for bad usage or configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ServerError::Unreachable { .. } | ServerError::Transport(_) => 2,
            ServerError::Core(scalestore::Error::Unavailable(_))
            | ServerError::Core(scalestore::Error::Timeout { .. }) => 2,
            ServerError::Config(_) | ServerError::DataDir { .. } => 64,
            ServerError::Core(scalestore::Error::InvalidArgument(_))
            | ServerError::Core(scalestore::Error::DataDir { .. }) => 64,
            _ => 1,
        }
    }
}
