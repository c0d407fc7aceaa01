//! `connect` (the server crate's transport.rs): a client of a remote cluster over gRPC; TLS
//! settings come as PEM contents, as Node's own `tls` module takes them.

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use scalestore::ClientOptions;
use scalestore_server::{Dialing, TlsPem};

use crate::args::millis;
use crate::client::NativeClient;
use crate::error::{invalid, server_to_js, to_js};

#[napi(object)]
pub struct TlsJs {
    pub ca: Option<Buffer>,
    pub cert: Option<Buffer>,
    pub key: Option<Buffer>,
    pub server_name: Option<String>,
}

/// How to dial the nodes the map names, and how long to pause between attempts.
#[napi(object)]
pub struct DialJs {
    /// `ADVERTISED=REACHABLE` entries (the JS layer makes them from `addressMap`).
    pub address_map: Vec<String>,
    pub backoff_initial_ms: Option<f64>,
    pub backoff_max_ms: Option<f64>,
}

#[napi]
pub async fn connect(
    endpoints: Vec<String>,
    timeout_ms: f64,
    tls: Option<TlsJs>,
    connect_timeout_ms: Option<f64>,
    attempt_timeout_ms: Option<f64>,
    dial: Option<DialJs>,
) -> napi::Result<NativeClient> {
    let endpoints = scalestore_server::transport::split_endpoints(&endpoints);
    if endpoints.is_empty() {
        return Err(invalid("no endpoint given"));
    }
    let optional = |t: Option<f64>, what| t.map(|t| millis(t, what)).transpose();
    let dial = dial.unwrap_or(DialJs {
        address_map: Vec::new(),
        backoff_initial_ms: None,
        backoff_max_ms: None,
    });
    let options = ClientOptions::for_connect(
        millis(timeout_ms, "timeoutMs")?,
        optional(connect_timeout_ms, "connectTimeoutMs")?,
        optional(attempt_timeout_ms, "attemptTimeoutMs")?,
    )
    .with_backoff(
        optional(dial.backoff_initial_ms, "backoffInitialMs")?,
        optional(dial.backoff_max_ms, "backoffMaxMs")?,
    )
    .map_err(to_js)?;
    let mut dialing = Dialing {
        address_map: Dialing::parse_address_map(&dial.address_map).map_err(server_to_js)?,
        tls_server_name: None,
    };
    let pem = match tls {
        None => None,
        Some(tls) => {
            let ca = tls
                .ca
                .ok_or_else(|| invalid("tls needs the cluster's CA (tls.ca)"))?;
            if tls.cert.is_some() != tls.key.is_some() {
                return Err(invalid(
                    "a client certificate needs its key (tls.cert and tls.key go together)",
                ));
            }
            dialing.tls_server_name = tls.server_name;
            Some(TlsPem {
                ca: ca.to_vec(),
                cert: tls.cert.map(|c| c.to_vec()),
                key: tls.key.map(|k| k.to_vec()),
            })
        }
    };
    let client = scalestore_server::connect_with(&endpoints, options, pem.as_ref(), &dialing)
        .await
        .map_err(server_to_js)?;
    Ok(NativeClient::new(client))
}
