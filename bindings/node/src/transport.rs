//! `connect` (the server crate's transport.rs): a client of a remote cluster over gRPC; TLS
//! settings come as PEM contents, as Node's own `tls` module takes them.

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use scalestore::ClientOptions;
use scalestore_server::TlsPem;

use crate::args::millis;
use crate::client::NativeClient;
use crate::error::{invalid, server_to_js};

#[napi(object)]
pub struct TlsJs {
    pub ca: Option<Buffer>,
    pub cert: Option<Buffer>,
    pub key: Option<Buffer>,
}

#[napi]
pub async fn connect(
    endpoints: Vec<String>,
    timeout_ms: f64,
    tls: Option<TlsJs>,
    connect_timeout_ms: Option<f64>,
    attempt_timeout_ms: Option<f64>,
) -> napi::Result<NativeClient> {
    let endpoints = scalestore_server::transport::split_endpoints(&endpoints);
    if endpoints.is_empty() {
        return Err(invalid("no endpoint given"));
    }
    let optional = |t: Option<f64>, what| t.map(|t| millis(t, what)).transpose();
    let options = ClientOptions::for_connect(
        millis(timeout_ms, "timeoutMs")?,
        optional(connect_timeout_ms, "connectTimeoutMs")?,
        optional(attempt_timeout_ms, "attemptTimeoutMs")?,
    );
    let client = match tls {
        None => scalestore_server::connect(&endpoints, options).await,
        Some(tls) => {
            let ca = tls
                .ca
                .ok_or_else(|| invalid("tls needs the cluster's CA (tls.ca)"))?;
            if tls.cert.is_some() != tls.key.is_some() {
                return Err(invalid(
                    "a client certificate needs its key (tls.cert and tls.key go together)",
                ));
            }
            let pem = TlsPem {
                ca: ca.to_vec(),
                cert: tls.cert.map(|c| c.to_vec()),
                key: tls.key.map(|k| k.to_vec()),
            };
            scalestore_server::connect_tls_pem(&endpoints, options, &pem).await
        }
    }
    .map_err(server_to_js)?;
    Ok(NativeClient::new(client))
}
