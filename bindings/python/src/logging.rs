//! The core's `tracing` events, forwarded to Python's `logging` (loggers named after the Rust
//! module: `scalestore.placement.manager`, `scalestore.openraft...`). Runtime threads never
//! take the GIL: events go through a bounded queue to one thread that does (a full queue drops
//! events rather than slow the store). `SCALESTORE_LOG` (an `EnvFilter`, default `info` for
//! ScaleStore and `warn` for its dependencies) chooses what is forwarded at all.

use std::fmt::Write as _;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Mutex;

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

struct Record {
    logger: String,
    level: u8,
    message: String,
}

/// The queue to the logging thread, remade in a forked child (whose thread stayed behind).
struct Forwarder {
    queue: Mutex<Option<(u32, SyncSender<Record>)>>,
}

impl Forwarder {
    fn send(&self, record: Record) {
        let Ok(mut queue) = self.queue.lock() else {
            return;
        };
        let pid = std::process::id();
        if queue.as_ref().map(|(p, _)| *p) != Some(pid) {
            *queue = spawn_thread().map(|tx| (pid, tx));
        }
        if let Some((_, tx)) = queue.as_ref() {
            if let Err(TrySendError::Disconnected(_)) = tx.try_send(record) {
                *queue = None;
            }
        }
    }
}

fn spawn_thread() -> Option<SyncSender<Record>> {
    let (tx, rx) = sync_channel::<Record>(10_000);
    std::thread::Builder::new()
        .name("scalestore-log".into())
        .spawn(move || {
            while let Ok(record) = rx.recv() {
                Python::with_gil(|py| {
                    let emit = || -> PyResult<()> {
                        let logger = py
                            .import("logging")?
                            .call_method1("getLogger", (record.logger.as_str(),))?;
                        logger.call_method1("log", (record.level, record.message.as_str()))?;
                        Ok(())
                    };
                    let _ = emit();
                });
            }
        })
        .ok()?;
    Some(tx)
}

struct PythonLogging {
    forwarder: Forwarder,
}

#[derive(Default)]
struct Message {
    text: String,
    fields: String,
}

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for PythonLogging {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => 40,
            Level::WARN => 30,
            Level::INFO => 20,
            Level::DEBUG => 10,
            Level::TRACE => 5,
        };
        let mut message = Message::default();
        event.record(&mut message);
        let target = meta.target().replace("::", ".");
        let logger = if target.starts_with("scalestore") {
            target
        } else {
            format!("scalestore.{target}")
        };
        self.forwarder.send(Record {
            logger,
            level,
            message: format!("{}{}", message.text, message.fields),
        });
    }
}

/// Installs the forwarding as the process's tracing subscriber, unless one is already set.
pub fn install() {
    let filter = EnvFilter::try_from_env("SCALESTORE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,scalestore=info,scalestore_server=info"));
    let layer = PythonLogging {
        forwarder: Forwarder {
            queue: Mutex::new(None),
        },
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
}
