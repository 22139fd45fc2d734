//! A failed job as an error, for callers who want `?` to stop at it.

use std::time::Duration;

use super::{Error, Kind, WaitReport};
use crate::model::{JobDetail, JobStatus};

impl Error {
    /// A job that failed, as an error: the detail stays readable through
    /// [`last_detail`](Error::last_detail).
    fn job_failed(detail: JobDetail) -> Self {
        let message = format!("job {} ended with status failed", detail.img_uuid());
        let mut err = Error::new(Kind::JobFailed).with_message(message);
        err.inner.wait = Some(WaitReport {
            waited: Duration::ZERO,
            polls: 0,
            last_detail: Some(detail),
            history: Vec::new(),
            stalled_for: None,
        });
        err
    }
}

impl JobDetail {
    /// This detail, or an error when the job failed, for callers who want
    /// `?` to stop at a failed job. [`Client::wait`](crate::Client::wait)
    /// answers `Ok` for a failed job (it is an answer, not a fault of the
    /// wait); this turns it into an [`Error::is_job_failed`] whose
    /// [`last_detail`](Error::last_detail) is the detail. Any other status
    /// is `Ok`, unfinished ones included.
    ///
    /// ```
    /// use goenhance_jobs::{JobDetail, JobStatus};
    ///
    /// let done = JobDetail::new("a1", JobStatus::Succeeded).into_result();
    /// assert!(done.is_ok());
    /// let err = JobDetail::new("b2", JobStatus::Failed).into_result().unwrap_err();
    /// assert!(err.is_job_failed());
    /// assert_eq!(err.to_string(), "job failed: job b2 ended with status failed");
    /// assert_eq!(err.last_detail().map(|d| d.img_uuid()), Some("b2"));
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::is_job_failed`] when the status is [`JobStatus::Failed`].
    pub fn into_result(self) -> Result<JobDetail, Error> {
        if self.status == JobStatus::Failed {
            Err(Error::job_failed(self))
        } else {
            Ok(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failed_job_becomes_an_error() {
        for status in [
            JobStatus::Pending,
            JobStatus::Processing,
            JobStatus::Succeeded,
            JobStatus::Unknown("paused".into()),
        ] {
            let detail = JobDetail::new("a1", status.clone());
            assert_eq!(detail.clone().into_result().unwrap(), detail);
        }
        let err = JobDetail::new("b2", JobStatus::Failed)
            .into_result()
            .unwrap_err();
        assert_eq!(err.kind(), Kind::JobFailed);
        assert!(!err.is_transient());
        assert!(err.history().is_empty());
        assert_eq!(err.last_detail().unwrap().status(), &JobStatus::Failed);
    }
}
