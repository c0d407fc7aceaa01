//! The public KV service. Any node answers any call: the node's own client routes it to the
//! shard's leader (or a replica, for stale reads), so a plain gRPC client needs one endpoint.

use std::future::Future;
use std::time::Instant;

use scalestore::{Error, ScanOptions};
use tonic::{Request, Response, Status};

use crate::convert;
use crate::proto::kv_server::Kv;
use crate::proto::{
    AppendRequest, AppendResponse, BatchGetRequest, BatchGetResponse, BatchPutRequest,
    BatchPutResponse, CompareAndSwapRequest, CompareAndSwapResponse, DeleteRequest, DeleteResponse,
    GetRequest, GetResponse, KeyValue, OptionalValue, PutRequest, PutResponse, ScanRequest,
    ScanResponse,
};
use crate::serve::ServiceContext;

/// Pairs per scan page when the request names no limit.
const DEFAULT_PAGE: usize = 1000;

pub struct KvService {
    context: ServiceContext,
}

impl KvService {
    pub fn new(context: ServiceContext) -> Self {
        KvService { context }
    }

    fn status(&self, e: &Error) -> Status {
        convert::status(e, self.context.node.map().as_deref())
    }

    /// Runs one request, counting it and its latency by outcome ("ok" or the error's kind).
    async fn timed<T>(&self, op: &'static str, call: impl Future<Output = Reply<T>>) -> Reply<T> {
        let started = Instant::now();
        let result = call.await;
        if let Some(m) = &self.context.metrics {
            let outcome = match &result {
                Ok(_) => "ok",
                Err(s) if s.code() == tonic::Code::ResourceExhausted => "busy",
                Err(s) => convert::from_status(s).kind(),
            };
            m.observe(op, outcome, started.elapsed());
        }
        result
    }

    /// A slot among the requests served at once, or `Busy` (RESOURCE_EXHAUSTED) with a hint.
    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.context
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| convert::busy(BUSY_BACKOFF_MS))
    }
}

/// How long a client told `Busy` should wait before retrying.
const BUSY_BACKOFF_MS: u64 = 20;

type Reply<T> = Result<Response<T>, Status>;

impl KvService {
    async fn get_inner(&self, request: Request<GetRequest>) -> Reply<GetResponse> {
        let _slot = self.admit()?;
        let r = request.into_inner();
        let consistency = convert::consistency(r.consistency)?;
        match self.context.client.get_with(&r.key, consistency).await {
            Ok(v) => Ok(Response::new(GetResponse {
                found: v.is_some(),
                value: v.unwrap_or_default(),
            })),
            Err(e) => Err(self.status(&e)),
        }
    }

    async fn put_inner(&self, request: Request<PutRequest>) -> Reply<PutResponse> {
        let _slot = self.admit()?;
        let r = request.into_inner();
        match self.context.client.put(&r.key, &r.value).await {
            Ok(()) => Ok(Response::new(PutResponse {})),
            Err(e) => Err(self.status(&e)),
        }
    }

    async fn delete_inner(&self, request: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        let _slot = self.admit()?;
        let r = request.into_inner();
        match self.context.client.delete(&r.key).await {
            Ok(existed) => Ok(Response::new(DeleteResponse { existed })),
            Err(e) => Err(self.status(&e)),
        }
    }

    async fn append_inner(&self, request: Request<AppendRequest>) -> Reply<AppendResponse> {
        let _slot = self.admit()?;
        let r = request.into_inner();
        match self.context.client.append(&r.key, &r.value).await {
            Ok(length) => Ok(Response::new(AppendResponse { length })),
            Err(e) => Err(self.status(&e)),
        }
    }

    async fn compare_and_swap_inner(
        &self,
        request: Request<CompareAndSwapRequest>,
    ) -> Reply<CompareAndSwapResponse> {
        let _slot = self.admit()?;
        let r = request.into_inner();
        match self
            .context
            .client
            .cas(&r.key, r.expected.as_deref(), &r.new_value)
            .await
        {
            Ok(outcome) => Ok(Response::new(CompareAndSwapResponse {
                swapped: outcome.success,
                current: if outcome.success {
                    None
                } else {
                    outcome.current
                },
            })),
            Err(e) => Err(self.status(&e)),
        }
    }

    async fn scan_inner(&self, request: Request<ScanRequest>) -> Reply<ScanResponse> {
        let _slot = self.admit()?;
        let r = request.into_inner();
        let options = ScanOptions {
            start: (!r.start.is_empty()).then_some(r.start),
            end: r.end,
            prefix: (!r.prefix.is_empty()).then_some(r.prefix),
            limit: if r.limit == 0 {
                DEFAULT_PAGE
            } else {
                r.limit as usize
            },
            consistency: convert::consistency(r.consistency)?,
            cursor: None,
        };
        match self.context.client.scan(&options).await {
            Ok(page) => {
                let next_start = page
                    .cursor
                    .as_ref()
                    .map(|c| {
                        // The smallest key after the last one returned.
                        let mut next = c.clone();
                        next.push(0);
                        next
                    })
                    .unwrap_or_default();
                Ok(Response::new(ScanResponse {
                    more: page.cursor.is_some(),
                    next_start,
                    items: page
                        .items
                        .into_iter()
                        .map(|(key, value)| KeyValue { key, value })
                        .collect(),
                }))
            }
            Err(e) => Err(self.status(&e)),
        }
    }

    async fn batch_get_inner(&self, request: Request<BatchGetRequest>) -> Reply<BatchGetResponse> {
        let _slot = self.admit()?;
        let r = request.into_inner();
        let consistency = convert::consistency(r.consistency)?;
        match self.context.client.batch_get(&r.keys, consistency).await {
            Ok(values) => Ok(Response::new(BatchGetResponse {
                values: values
                    .into_iter()
                    .map(|v| OptionalValue {
                        found: v.is_some(),
                        value: v.unwrap_or_default(),
                    })
                    .collect(),
            })),
            Err(e) => Err(self.status(&e)),
        }
    }

    async fn batch_put_inner(&self, request: Request<BatchPutRequest>) -> Reply<BatchPutResponse> {
        let _slot = self.admit()?;
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = request
            .into_inner()
            .items
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        match self.context.client.batch_put(&pairs).await {
            Ok(()) => Ok(Response::new(BatchPutResponse {})),
            Err(e) => Err(self.status(&e)),
        }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, request: Request<GetRequest>) -> Reply<GetResponse> {
        self.timed("get", self.get_inner(request)).await
    }

    async fn put(&self, request: Request<PutRequest>) -> Reply<PutResponse> {
        self.timed("put", self.put_inner(request)).await
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        self.timed("delete", self.delete_inner(request)).await
    }

    async fn append(&self, request: Request<AppendRequest>) -> Reply<AppendResponse> {
        self.timed("append", self.append_inner(request)).await
    }

    async fn compare_and_swap(
        &self,
        request: Request<CompareAndSwapRequest>,
    ) -> Reply<CompareAndSwapResponse> {
        self.timed("compare_and_swap", self.compare_and_swap_inner(request))
            .await
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Reply<ScanResponse> {
        self.timed("scan", self.scan_inner(request)).await
    }

    async fn batch_get(&self, request: Request<BatchGetRequest>) -> Reply<BatchGetResponse> {
        self.timed("batch_get", self.batch_get_inner(request)).await
    }

    async fn batch_put(&self, request: Request<BatchPutRequest>) -> Reply<BatchPutResponse> {
        self.timed("batch_put", self.batch_put_inner(request)).await
    }
}
