//! Optional per-op-type timing of plan runs, off by default (`candle-coreml bench --profile-ops` turns it on):
//! where a decode step spends its time, op type by op type.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<Option<HashMap<String, OpTiming>>> = Mutex::new(None);

/// Time spent in one op type since the last [`take`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpTiming {
    /// Op type (`conv`, `mul`, ...).
    pub op_type: String,
    /// Number of runs.
    pub calls: u64,
    /// Total time.
    pub total: Duration,
}

/// Turns recording on or off for every plan in this process.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// True while recording.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Adds one run of `op_type` that took `elapsed`.
pub fn record(op_type: &str, elapsed: Duration) {
    let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let entry = totals
        .get_or_insert_with(HashMap::new)
        .entry(op_type.to_string())
        .or_insert_with(|| OpTiming {
            op_type: op_type.to_string(),
            ..OpTiming::default()
        });
    entry.calls += 1;
    entry.total += elapsed;
}

/// The timings recorded so far, slowest op type first, and a fresh start.
pub fn take() -> Vec<OpTiming> {
    let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<OpTiming> = totals.take().unwrap_or_default().into_values().collect();
    out.sort_by(|a, b| b.total.cmp(&a.total).then(a.op_type.cmp(&b.op_type)));
    out
}
