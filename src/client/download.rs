//! [`Client::download_outputs`]: every output of a job, under the names the
//! CLI gives them, with fresh links when the stored ones have expired.

use std::borrow::Cow;
use std::path::Path;
use std::time::SystemTime;

use super::Client;
use crate::download::{self, Download, DownloadOptions};
use crate::error::Error;
use crate::model::{JobDetail, JobOutput};
use crate::query::JobQuery;

impl Client {
    /// Saves every output of `job` into the folder `dir`, as
    /// `<img_uuid>_<n>.<ext>` ([`output_file_name`](crate::download::output_file_name)),
    /// one after the other; returns them in the job's order.
    ///
    /// Made for a job known some time ago (a completion delivered again by
    /// a tracker, a detail read back from a store):
    ///
    /// - **Expired links.** When an output's link has expired (its
    ///   `link_expired_at` has passed, or the storage host answers 403), the
    ///   job is fetched once more for fresh links, and the outputs from
    ///   there on use them. At most one such fetch per call.
    /// - **Resumed across calls.** Each output is written to a partial file
    ///   named by job and output (`dir/.<img_uuid>_<n>.part`), which an
    ///   error leaves in place with a record of the `ETag` (or date) its
    ///   bytes came under. The next call, in this process or after a
    ///   restart, resumes it with `Range` and `If-Range`, so only the
    ///   missing bytes are sent, and a file that changed starts over. Call
    ///   [`discard_partial_outputs`](crate::download::discard_partial_outputs)
    ///   once the job is done with.
    /// - **Already saved.** An output already at its name is not fetched
    ///   again (a file gets its name only once complete and synced): its
    ///   [`Download`] has no content type.
    ///
    /// Everything else is as [`download`](Self::download): the checks on
    /// the URL and its redirects, retries, the deadline and the size cap of
    /// each output.
    ///
    /// # Errors
    ///
    /// The first output that fails ends the call, with the error of
    /// [`download`](Self::download); the outputs saved before it stay, and
    /// so does its partial file. Also [`Error::is_invalid_input`] for a job
    /// id that could not name a file (nothing is sent), and the error of
    /// the fetch for fresh links.
    ///
    /// ```
    /// # #[cfg(feature = "fake")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use goenhance_jobs::fake::{FakeFile, FakeServer, Timeline};
    /// use goenhance_jobs::Client;
    ///
    /// let server = FakeServer::builder()
    ///     .api_key("my-key")
    ///     .file("/out/clip.mp4", FakeFile::new(10_000).content_type("video/mp4"))
    ///     .start()
    ///     .await?;
    /// server.add_job(
    ///     "job-7",
    ///     Timeline::new("video-to-video").succeed("video", server.file_url("/out/clip.mp4")),
    /// );
    /// let client = Client::builder().base_url(server.base_url()).api_key("my-key").build()?;
    /// let job = client.wait("job-7").await?;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let saved = client.download_outputs(&job, dir.path()).await?;
    /// assert_eq!(saved[0].path(), dir.path().join("job-7_0.mp4"));
    /// assert_eq!(saved[0].bytes(), 10_000);
    /// goenhance_jobs::download::discard_partial_outputs(dir.path(), "job-7").await?;
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "fake"))]
    /// # fn main() {}
    /// ```
    pub async fn download_outputs(
        &self,
        job: &JobDetail,
        dir: impl AsRef<Path>,
    ) -> Result<Vec<Download>, Error> {
        self.download_outputs_with(job, dir, DownloadOptions::default())
            .await
    }

    /// [`download_outputs`](Self::download_outputs) with progress reports
    /// (each output's in turn), another idle timeout, deadline or size cap
    /// (each applies to each output).
    ///
    /// # Errors
    ///
    /// As [`download_outputs`](Self::download_outputs).
    pub async fn download_outputs_with(
        &self,
        job: &JobDetail,
        dir: impl AsRef<Path>,
        options: DownloadOptions,
    ) -> Result<Vec<Download>, Error> {
        let dir = dir.as_ref();
        // The id names the files: only what a query accepts.
        let query = JobQuery::new(job.img_uuid())?;
        let id = query.img_uuid().to_owned();
        let mut current: Cow<'_, JobDetail> = Cow::Borrowed(job);
        let mut refreshed = false;
        let mut saved = Vec::with_capacity(job.outputs().len());
        for index in 0..job.outputs().len() {
            let url = output_of(&current, index)?.url();
            if let Some(done) = download::in_place(dir, &id, index, url).await {
                saved.push(done);
                continue;
            }
            if !refreshed && expired(output_of(&current, index)?) {
                current = Cow::Owned(self.fresh_links(&query).await?);
                refreshed = true;
            }
            let dl = &self.inner.downloader;
            let result =
                download::run_output(dl, output_of(&current, index)?, dir, &id, index, &options)
                    .await;
            let done = match result {
                Err(e) if e.is_expired() && !refreshed => {
                    tracing::debug!(
                        index,
                        "output link expired; fetching the job for fresh links"
                    );
                    current = Cow::Owned(self.fresh_links(&query).await?);
                    refreshed = true;
                    let output = output_of(&current, index)?;
                    download::run_output(dl, output, dir, &id, index, &options).await?
                }
                other => other?,
            };
            saved.push(done);
        }
        Ok(saved)
    }

    /// The job once more, for its fresh links.
    async fn fresh_links(&self, query: &JobQuery) -> Result<JobDetail, Error> {
        (self.inner.get)(query.clone()).await
    }
}

fn output_of(job: &JobDetail, index: usize) -> Result<&JobOutput, Error> {
    job.outputs().get(index).ok_or_else(|| {
        Error::expired(
            None,
            format!(
                "the job's fresh detail has {} outputs, not {}",
                job.outputs().len(),
                index + 1
            ),
        )
    })
}

fn expired(output: &JobOutput) -> bool {
    output
        .expires_at()
        .is_some_and(|at| at <= SystemTime::now())
}
