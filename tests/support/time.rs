//! Times as the API writes them, for bodies made by tests and benches.

use std::time::SystemTime;

/// `t` as `2024-07-12T12:49:12.541Z`: UTC, milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}
