//! `NativeClient`: the core `Client` (routing/client.rs), the same type for an embedded cluster
//! and a remote one. Every call is an async fn: it runs on the tokio runtime and resolves a
//! Promise, so the event loop never waits on the store.

use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use scalestore::{History, ScanOptions};

use crate::args::{
    buffer, consistency, events_js, optional_millis, position, shard_id, status_js, EventJs,
    StatusJs,
};
use crate::error::{closed, invalid, to_js};
use crate::history::NativeHistory;

#[napi]
pub struct NativeClient {
    client: scalestore::Client,
    /// This client's own recording, as a recording handle of `client`.
    recording: Arc<Mutex<Option<scalestore::Client>>>,
}

/// Pairs as two parallel arrays (cheaper to cross than an array of arrays); `cursor` is where
/// the next page starts (null: no more).
#[napi(object)]
pub struct PageJs {
    pub keys: Vec<Buffer>,
    pub values: Vec<Buffer>,
    pub cursor: Option<Buffer>,
}

/// A cas's outcome: whether it wrote, and the value after it (`next` on success, the value
/// that did not match otherwise; null: absent).
#[napi(object)]
pub struct CasJs {
    pub success: bool,
    pub current: Option<Buffer>,
}

#[napi(object)]
pub struct ScanArgs {
    pub start: Option<Buffer>,
    pub end: Option<Buffer>,
    pub prefix: Option<Buffer>,
    pub limit: Option<f64>,
    pub consistency: Option<String>,
    pub cursor: Option<Buffer>,
    pub page_size: Option<u32>,
}

impl NativeClient {
    pub fn new(client: scalestore::Client) -> Self {
        NativeClient {
            client,
            recording: Arc::new(Mutex::new(None)),
        }
    }

    /// The client a call uses: the recording handle while recording, with the call's timeout.
    fn handle(&self, timeout_ms: Option<f64>) -> napi::Result<scalestore::Client> {
        if self.client.is_closed() {
            return Err(closed("client is closed"));
        }
        let base = self
            .recording
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| self.client.clone());
        Ok(match optional_millis(timeout_ms, "timeoutMs")? {
            Some(t) => base.with_timeout(t),
            None => base,
        })
    }
}

fn page_js(items: Vec<(Vec<u8>, Vec<u8>)>, cursor: Option<Vec<u8>>) -> PageJs {
    let (keys, values) = items
        .into_iter()
        .map(|(k, v)| (buffer(k), buffer(v)))
        .unzip();
    PageJs {
        keys,
        values,
        cursor: cursor.map(buffer),
    }
}

fn scan_options(args: &ScanArgs, page: usize) -> napi::Result<ScanOptions> {
    let bytes = |b: &Option<Buffer>| b.as_ref().map(|b| b.to_vec());
    Ok(ScanOptions {
        start: bytes(&args.start),
        end: bytes(&args.end),
        prefix: bytes(&args.prefix),
        limit: page,
        consistency: consistency(args.consistency.clone())?,
        cursor: bytes(&args.cursor),
    })
}

#[napi]
impl NativeClient {
    #[napi]
    pub async fn put(
        &self,
        key: Buffer,
        value: Buffer,
        timeout_ms: Option<f64>,
    ) -> napi::Result<()> {
        let c = self.handle(timeout_ms)?;
        c.put(key.to_vec(), value.to_vec()).await.map_err(to_js)
    }

    #[napi]
    pub async fn get(
        &self,
        key: Buffer,
        consistency: Option<String>,
        timeout_ms: Option<f64>,
    ) -> napi::Result<Option<Buffer>> {
        let read = crate::args::consistency(consistency)?;
        let c = self.handle(timeout_ms)?;
        let value = c.get_with(key.to_vec(), read).await.map_err(to_js)?;
        Ok(value.map(buffer))
    }

    #[napi]
    pub async fn delete(&self, key: Buffer, timeout_ms: Option<f64>) -> napi::Result<bool> {
        let c = self.handle(timeout_ms)?;
        c.delete(key.to_vec()).await.map_err(to_js)
    }

    /// Deletes every key starting with `prefix`; the count (per shard atomic).
    #[napi]
    pub async fn delete_prefix(
        &self,
        prefix: Buffer,
        timeout_ms: Option<f64>,
    ) -> napi::Result<f64> {
        let c = self.handle(timeout_ms)?;
        let count = c.delete_prefix(prefix.to_vec()).await.map_err(to_js)?;
        Ok(count as f64)
    }

    #[napi]
    pub async fn append(
        &self,
        key: Buffer,
        value: Buffer,
        timeout_ms: Option<f64>,
    ) -> napi::Result<f64> {
        let c = self.handle(timeout_ms)?;
        let len = c
            .append(key.to_vec(), value.to_vec())
            .await
            .map_err(to_js)?;
        Ok(len as f64)
    }

    #[napi]
    pub async fn cas(
        &self,
        key: Buffer,
        expected: Option<Buffer>,
        next: Buffer,
        timeout_ms: Option<f64>,
    ) -> napi::Result<CasJs> {
        let c = self.handle(timeout_ms)?;
        let expected = expected.map(|e| e.to_vec());
        let outcome = c
            .cas(key.to_vec(), expected.as_deref(), next.to_vec())
            .await
            .map_err(to_js)?;
        Ok(CasJs {
            success: outcome.success,
            current: outcome.current.map(buffer),
        })
    }

    /// Every matching pair (up to `limit`) in key order, or one page when `pageSize` is given.
    #[napi]
    pub async fn scan(&self, args: ScanArgs, timeout_ms: Option<f64>) -> napi::Result<PageJs> {
        let c = self.handle(timeout_ms)?;
        match args.page_size {
            Some(page) => {
                if page == 0 {
                    return Err(invalid("pageSize must be at least 1"));
                }
                let options = scan_options(&args, page as usize)?;
                let page = c.scan(&options).await.map_err(to_js)?;
                Ok(page_js(page.items, page.cursor))
            }
            None => {
                let limit = args
                    .limit
                    .map(|l| crate::args::whole(l, "limit"))
                    .transpose()?
                    .map(|l| l as usize);
                let options = scan_options(&args, 1000)?;
                let items = c.scan_up_to(&options, limit).await.map_err(to_js)?;
                Ok(page_js(items, None))
            }
        }
    }

    #[napi]
    pub async fn get_many(
        &self,
        keys: Vec<Buffer>,
        consistency: Option<String>,
        timeout_ms: Option<f64>,
    ) -> napi::Result<Vec<Option<Buffer>>> {
        let read = crate::args::consistency(consistency)?;
        let c = self.handle(timeout_ms)?;
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        let values = c.batch_get(&keys, read).await.map_err(to_js)?;
        Ok(values.into_iter().map(|v| v.map(buffer)).collect())
    }

    /// Writes `keys[i] = values[i]`; every pair is checked before anything is written, then
    /// the core splits the batch into chunks under the store's caps.
    #[napi]
    pub async fn put_many(
        &self,
        keys: Vec<Buffer>,
        values: Vec<Buffer>,
        timeout_ms: Option<f64>,
    ) -> napi::Result<()> {
        if keys.len() != values.len() {
            return Err(invalid("putMany needs as many values as keys"));
        }
        let c = self.handle(timeout_ms)?;
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = keys
            .iter()
            .zip(values.iter())
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        c.put_many(&pairs).await.map_err(to_js)
    }

    #[napi]
    pub async fn status(&self, timeout_ms: Option<f64>) -> napi::Result<StatusJs> {
        let c = self.handle(timeout_ms)?;
        let status = c.cluster_status().await.map_err(to_js)?;
        Ok(status_js(&status))
    }

    /// Splits `shard` at ring position `at` (a decimal string; none: the middle of its largest
    /// range); the new shard's id.
    #[napi]
    pub async fn split(
        &self,
        shard: u32,
        at: Option<String>,
        timeout_ms: Option<f64>,
    ) -> napi::Result<u32> {
        let at = position(at)?;
        let c = self.handle(timeout_ms)?;
        let done = c.split(u64::from(shard), at).await.map_err(to_js)?;
        shard_id(done.child)
    }

    #[napi]
    pub async fn events(&self, timeout_ms: Option<f64>) -> napi::Result<Vec<EventJs>> {
        let c = self.handle(timeout_ms)?;
        let events = c.events().await.map_err(to_js)?;
        Ok(events_js(&events))
    }

    /// Starts recording this client's operations into a new history.
    #[napi]
    pub fn start_recording(&self) -> NativeHistory {
        let history = History::new();
        if let Ok(mut r) = self.recording.lock() {
            *r = Some(self.client.recording(&history));
        }
        NativeHistory::from(history)
    }

    #[napi]
    pub fn stop_recording(&self) {
        if let Ok(mut r) = self.recording.lock() {
            *r = None;
        }
    }

    /// The node this client is pinned to (null: any).
    #[napi(getter)]
    pub fn node(&self) -> Option<u32> {
        self.client.pinned_node().map(|n| n as u32)
    }

    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Later calls reject with CLOSED. Safe to call twice.
    #[napi]
    pub fn close(&self) {
        self.client.close();
    }
}
