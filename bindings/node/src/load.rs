//! `NativeLoadRun` (load.rs): load generated and measured in Rust while JavaScript looks on.

use std::sync::Mutex;

use napi_derive::napi;
use scalestore::{LoadReport, LoadRun};

use crate::error::closed;

#[napi]
pub struct NativeLoadRun {
    run: Mutex<Option<LoadRun>>,
}

impl NativeLoadRun {
    pub fn new(run: LoadRun) -> Self {
        NativeLoadRun {
            run: Mutex::new(Some(run)),
        }
    }
}

#[napi(object)]
pub struct TimelineRowJs {
    /// Seconds since the start.
    pub t: f64,
    pub ops: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: f64,
}

#[napi(object)]
pub struct LoadReportJs {
    pub ops_per_s: f64,
    pub operations: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub errors: f64,
    pub seconds: f64,
    pub timeline: Vec<TimelineRowJs>,
}

fn report_js(r: LoadReport) -> LoadReportJs {
    LoadReportJs {
        ops_per_s: r.ops_per_s,
        operations: r.operations as f64,
        p50_ms: r.p50_ms,
        p90_ms: r.p90_ms,
        p99_ms: r.p99_ms,
        p999_ms: r.p999_ms,
        errors: r.errors as f64,
        seconds: r.seconds,
        timeline: r
            .timeline
            .into_iter()
            .map(|row| TimelineRowJs {
                t: row.t,
                ops: row.ops as f64,
                p50_ms: row.p50_ms,
                p99_ms: row.p99_ms,
                errors: row.errors as f64,
            })
            .collect(),
    }
}

#[napi]
impl NativeLoadRun {
    /// Stops the load and resolves its report. A second call rejects with CLOSED.
    #[napi]
    pub async fn stop(&self) -> napi::Result<LoadReportJs> {
        let run = self
            .run
            .lock()
            .ok()
            .and_then(|mut r| r.take())
            .ok_or_else(|| closed("this load run was already stopped"))?;
        Ok(report_js(run.stop().await))
    }

    /// Seconds since the load started.
    #[napi(getter)]
    pub fn elapsed(&self) -> f64 {
        self.run
            .lock()
            .ok()
            .and_then(|r| r.as_ref().map(|r| r.elapsed().as_secs_f64()))
            .unwrap_or(0.0)
    }

    #[napi(getter)]
    pub fn running(&self) -> bool {
        self.run.lock().map(|r| r.is_some()).unwrap_or(false)
    }
}
