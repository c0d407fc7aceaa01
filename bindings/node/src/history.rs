//! `NativeHistory`: a recorded history (proof/history.rs), live while its recording is open,
//! as JSON lines (the JavaScript layer parses them into objects).

use napi_derive::napi;
use scalestore::{History, Operation};

use crate::error::to_js;

#[napi]
pub struct NativeHistory {
    history: History,
    /// Operations read from JSON lines (a history recorded elsewhere).
    loaded: Option<Vec<Operation>>,
}

impl From<History> for NativeHistory {
    fn from(history: History) -> Self {
        NativeHistory {
            history,
            loaded: None,
        }
    }
}

impl NativeHistory {
    pub fn operations(&self) -> Vec<Operation> {
        match &self.loaded {
            Some(ops) => ops.clone(),
            None => self.history.operations(),
        }
    }
}

#[napi]
impl NativeHistory {
    /// A history read from JSON lines (as `toJsonl` writes them).
    #[napi(factory)]
    pub fn from_jsonl(text: String) -> napi::Result<NativeHistory> {
        let ops = History::from_jsonl(&text).map_err(to_js)?;
        Ok(NativeHistory {
            history: History::new(),
            loaded: Some(ops),
        })
    }

    /// One JSON object per line, one line per operation, in completion order.
    #[napi]
    pub fn to_jsonl(&self) -> String {
        match &self.loaded {
            Some(ops) => History::jsonl_of(ops),
            None => self.history.to_jsonl(),
        }
    }

    #[napi(getter)]
    pub fn length(&self) -> u32 {
        match &self.loaded {
            Some(ops) => ops.len() as u32,
            None => self.history.len() as u32,
        }
    }
}
