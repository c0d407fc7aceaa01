//! What every gRPC link of ScaleStore shares, clients' and nodes' alike: how a channel is
//! dialed, how core values travel in a frame, and the metadata a call carries.

use std::time::Duration;

use scalestore::{Error, Result};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Request;

/// Metadata naming the caller's cluster; a node refuses calls from another cluster.
pub const CLUSTER_HEADER: &str = "scalestore-cluster";
/// Metadata naming the calling node (peer streams only).
pub const NODE_HEADER: &str = "scalestore-node";
/// Metadata naming the version of the internal protocol (the encoding of the core's messages).
pub const PROTOCOL_HEADER: &str = "scalestore-protocol";
/// This build's internal protocol version: nodes and clients of another version are refused
/// rather than misread.
pub const PROTOCOL: &str = "4";

/// A plaintext channel to `address` (see [`channel_with`]).
pub fn channel(address: &str) -> Result<Channel> {
    channel_with(address, None)
}

/// A channel to `address` with the timeouts and keep-alives every ScaleStore link uses, over
/// TLS when `tls` is given.
pub fn channel_with(address: &str, tls: Option<&ClientTlsConfig>) -> Result<Channel> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| Error::InvalidArgument(format!("bad address {address:?}: {e}")))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| Error::InvalidArgument(format!("TLS settings for {address}: {e}")))?;
    }
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

/// Encodes a core value for a frame.
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Every type sent is plain data (no maps with non-string keys, no custom serializers that
    // can fail), so encoding cannot fail; an empty payload would be refused by the receiver.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Decodes a frame's payload.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::InvalidArgument(format!("undecodable message: {e}")))
}

pub(crate) fn set_header<T>(request: &mut Request<T>, name: &'static str, value: &str) {
    if let Ok(v) = MetadataValue::try_from(value) {
        request.metadata_mut().insert(name, v);
    }
}
