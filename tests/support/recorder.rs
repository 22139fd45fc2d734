//! Metrics in a test: a runtime whose every metric goes to a debugging
//! recorder local to the test.

use std::future::Future;

use metrics_util::debugging::DebuggingRecorder;

/// Runs `test` on a current-thread runtime (its clock paused when
/// `paused`), every metric going to `recorder`; the runtime (and with it
/// every task left, the hub's scheduler included) is shut down before the
/// recorder is let go.
pub fn with_recorder<T, F: Future<Output = T>>(
    recorder: &DebuggingRecorder,
    paused: bool,
    test: impl FnOnce() -> F,
) -> T {
    metrics::with_local_recorder(recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(paused)
            .build()
            .unwrap();
        let out = rt.block_on(test());
        drop(rt);
        out
    })
}
