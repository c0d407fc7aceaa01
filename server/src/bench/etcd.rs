//! etcd v3 as a load target: puts and reads through etcd's own gRPC KV API, so `scalestore
//! bench` measures etcd with the same loops, key space and concurrency as ScaleStore.
//!
//! Read guarantees map one to one: `Linearizable` is etcd's default range read (a ReadIndex
//! round through the leader), `Stale` its `serializable` read (the member asked answers from
//! its own state). etcd has no client-chosen lease read, so `Lease` is refused.

use std::time::Duration;

use scalestore::{Error, LoadTarget, ReadConsistency, Result};
use tonic::transport::Channel;

use crate::error::{ServerError, ServerResult};

/// The generated `etcdserverpb` subset (KV.Put and KV.Range).
pub mod proto {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("etcdserverpb");
}

use proto::kv_client::KvClient;
use proto::{PutRequest, RangeRequest};

/// One connection to one etcd member.
#[derive(Clone)]
pub struct EtcdTarget {
    kv: KvClient<Channel>,
    timeout: Duration,
}

impl EtcdTarget {
    /// `clients` connections, spread round-robin over `endpoints` (HOST:PORT), as etcd's own
    /// client balances; each is checked with a read before the load starts.
    pub async fn connect(
        endpoints: &[String],
        clients: usize,
        timeout: Duration,
    ) -> ServerResult<Vec<EtcdTarget>> {
        if endpoints.is_empty() {
            return Err(ServerError::Config("no etcd endpoint given".into()));
        }
        let mut targets = Vec::with_capacity(clients);
        for i in 0..clients.max(1) {
            let endpoint = &endpoints[i % endpoints.len()];
            crate::config::check_address(endpoint)?;
            let channel = crate::peer::channel_with(endpoint, None)?;
            let target = EtcdTarget {
                kv: KvClient::new(channel),
                timeout,
            };
            target
                .range(b"scalestore-bench-probe".to_vec(), false)
                .await
                .map_err(|e| ServerError::Unreachable {
                    endpoints: endpoint.clone(),
                    reason: e.to_string(),
                })?;
            targets.push(target);
        }
        Ok(targets)
    }

    /// The value of `key`, if any.
    pub async fn range(&self, key: Vec<u8>, serializable: bool) -> Result<Option<Vec<u8>>> {
        let mut request = tonic::Request::new(RangeRequest {
            key,
            serializable,
            ..Default::default()
        });
        request.set_timeout(self.timeout);
        let reply = self.kv.clone().range(request).await.map_err(to_error)?;
        Ok(reply.into_inner().kvs.into_iter().next().map(|kv| kv.value))
    }
}

impl LoadTarget for EtcdTarget {
    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        let mut request = tonic::Request::new(PutRequest {
            key,
            value,
            ..Default::default()
        });
        request.set_timeout(self.timeout);
        self.kv.clone().put(request).await.map_err(to_error)?;
        Ok(())
    }

    async fn get(&self, key: Vec<u8>, consistency: ReadConsistency) -> Result<()> {
        let serializable = match consistency {
            ReadConsistency::Linearizable => false,
            ReadConsistency::Stale => true,
            ReadConsistency::Lease => {
                return Err(Error::InvalidArgument(
                    "etcd has no lease reads: use linearizable or stale".into(),
                ))
            }
        };
        self.range(key, serializable).await.map(|_| ())
    }
}

fn to_error(status: tonic::Status) -> Error {
    let what = format!("etcd: {:?}: {}", status.code(), status.message());
    match status.code() {
        tonic::Code::DeadlineExceeded => Error::Timeout { what, waited_ms: 0 },
        tonic::Code::InvalidArgument => Error::InvalidArgument(what),
        _ => Error::Unavailable(what),
    }
}
