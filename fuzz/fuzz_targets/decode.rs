//! The body decoder: any bytes into `JobDetail::from_json`.
//!
//! Never panics; a decoded detail is self-consistent; a refusal is a decode
//! or API error.
#![no_main]

use goenhance_jobs::{JobDetail, JobStatus};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match JobDetail::from_json(data) {
        Ok(d) => {
            assert_eq!(
                d.is_terminal(),
                matches!(d.status(), JobStatus::Succeeded | JobStatus::Failed)
            );
            if let (Some(start), Some(end)) = (d.start_time(), d.end_time()) {
                assert_eq!(d.run_time().is_some(), end >= start);
            }
            for out in d.outputs() {
                let _ = (out.kind().as_str(), out.url());
            }
            let _ = format!("{d:?}");
        }
        Err(e) => {
            assert!(e.is_decode() || e.is_api(), "{e:?}");
            assert_eq!(e.is_api(), e.api_code().is_some(), "{e:?}");
            assert!(!e.to_string().is_empty());
            let _ = format!("{e:?}");
        }
    }
});
