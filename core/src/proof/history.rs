//! Operation histories: what each client invoked, when, and what came back — or "unknown" when
//! it timed out or failed ambiguously. Exportable as JSON lines; checked by [`crate::proof::checker`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// What was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpInput {
    Get,
    Put {
        value: Vec<u8>,
    },
    Delete,
    Append {
        value: Vec<u8>,
    },
    Cas {
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
}

impl OpOutput {
    /// Whether the operation returned a result (it neither failed nor ended unknown).
    pub fn is_acknowledged(&self) -> bool {
        !matches!(self, OpOutput::Unknown { .. } | OpOutput::Failed { .. })
    }
}

impl OpInput {
    pub fn is_read(&self) -> bool {
        matches!(self, OpInput::Get)
    }
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum OpOutput {
    Value {
        value: Option<Vec<u8>>,
    },
    Put,
    Deleted {
        existed: bool,
    },
    Appended {
        new_len: u64,
    },
    Cas {
        success: bool,
        current: Option<Vec<u8>>,
    },
    /// Timed out or failed ambiguously: it may or may not have taken effect.
    Unknown {
        error: String,
    },
    /// Failed for certain without taking effect (e.g. refused input).
    Failed {
        error: String,
    },
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub client: u64,
    pub key: Vec<u8>,
    pub input: OpInput,
    /// Nanoseconds since the history started.
    pub invoke_ns: u64,
    pub return_ns: u64,
    pub output: OpOutput,
    /// For an operation that ended in an error: its kind ([`Error::kind`], e.g. `timeout`,
    /// `unknown_node`), so failures can be counted by cause. Absent in older histories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
}

/// A shared, append-only record of operations. Clones share it.
#[derive(Debug, Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Operation>>>,
    next_client: Arc<AtomicU64>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    pub fn new() -> Self {
        History {
            start: Instant::now(),
            ops: Arc::new(Mutex::new(Vec::new())),
            next_client: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Tells histories apart: clones of one history share it.
    pub fn identity(&self) -> usize {
        Arc::as_ptr(&self.ops) as usize
    }

    /// A fresh client id for this history.
    pub fn new_client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn push(&self, op: Operation) {
        if let Ok(mut ops) = self.ops.lock() {
            ops.push(op);
        }
    }

    /// Every operation recorded so far, in completion order.
    pub fn operations(&self) -> Vec<Operation> {
        self.ops.lock().map(|o| o.clone()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.ops.lock().map(|o| o.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The history as JSON lines, one operation per line.
    pub fn to_jsonl(&self) -> String {
        Self::jsonl_of(&self.operations())
    }

    /// Operations as JSON lines (as [`to_jsonl`](Self::to_jsonl) writes them).
    pub fn jsonl_of(ops: &[Operation]) -> String {
        let mut out = String::new();
        for op in ops {
            if let Ok(line) = serde_json::to_string(op) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }

    /// Parses JSON lines written by [`to_jsonl`](Self::to_jsonl).
    pub fn from_jsonl(text: &str) -> Result<Vec<Operation>, Error> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .map_err(|e| Error::InvalidArgument(format!("bad history line: {e}")))
            })
            .collect()
    }
}

/// A recording switch shared by many clients (an embedded cluster's): while it holds a
/// history, every client made with it records its operations there, whenever it was made.
#[derive(Debug, Clone, Default)]
pub struct RecordSwitch(Arc<RwLock<Option<History>>>);

impl RecordSwitch {
    /// Starts recording into a new history (replacing one in progress) and returns it.
    pub fn start(&self) -> History {
        let history = History::new();
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(history.clone());
        }
        history
    }

    /// Stops recording; returns the history that was being recorded, if any.
    pub fn stop(&self) -> Option<History> {
        self.0.write().ok()?.take()
    }

    /// The history being recorded into, if recording is on.
    pub fn current(&self) -> Option<History> {
        self.0.read().ok()?.clone()
    }
}

/// How an error ends an operation: a definite failure (it took no effect) or unknown. A read
/// has no effect either way. A write is a definite failure only when it was refused before it
/// could be applied anywhere (invalid input, a closed client); any other error, a routing one
/// included, may come after an earlier attempt that was applied, so its outcome is unknown.
pub fn output_of_error(e: &Error, is_read: bool) -> OpOutput {
    match e {
        Error::InvalidArgument(_) | Error::Closed(_) => OpOutput::Failed {
            error: e.to_string(),
        },
        _ if is_read => OpOutput::Failed {
            error: e.to_string(),
        },
        _ => OpOutput::Unknown {
            error: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_failing_on_a_removed_node_is_unknown_not_a_definite_failure() {
        let removed = Error::UnknownNode(5);
        assert!(matches!(
            output_of_error(&removed, false),
            OpOutput::Unknown { .. }
        ));
        assert!(matches!(
            output_of_error(&Error::InvalidArgument("too big".into()), false),
            OpOutput::Failed { .. }
        ));
        assert!(matches!(
            output_of_error(&removed, true),
            OpOutput::Failed { .. }
        ));
    }

    #[test]
    fn error_kind_is_an_optional_field_that_old_readers_never_see() {
        let history = History::new();
        history.push(Operation {
            client: 1,
            key: b"k".to_vec(),
            input: OpInput::Get,
            invoke_ns: 1,
            return_ns: 2,
            output: OpOutput::Value { value: None },
            error_kind: None,
        });
        let line = history.to_jsonl();
        assert!(!line.contains("error_kind"), "{line}");
        let ops = History::from_jsonl(&line).expect("parse");
        assert_eq!(ops[0].error_kind, None);
    }
}
