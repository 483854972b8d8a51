//! Threads that sign, one per core, fed from one queue, so that signatures never run on the
//! async workers that answer everything else.
//!
//! Why not tokio's blocking pool behind a semaphore: there, a thread that finishes a signature
//! sleeps until an async worker has polled the grant that was waiting for the permit and handed
//! its job over; under load the CPU sat idle in those hand-offs (about a fifth of it in the
//! refresh benchmark). Here a thread takes the next queued job the moment it is done, and
//! only the answer crosses back, through a oneshot channel.
//!
//! The threads end when the last handle to the pool is dropped.

use std::panic::{AssertUnwindSafe, catch_unwind};

type Job = Box<dyn FnOnce() + Send>;

/// A handle to the signing threads; clones share them.
#[derive(Clone)]
pub(crate) struct Signers {
    jobs: flume::Sender<Job>,
}

impl std::fmt::Debug for Signers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signers").field("queued", &self.jobs.len()).finish()
    }
}

/// No signing thread could be started, or one went away with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SignersGone;

impl Signers {
    /// One thread per core (a signature is pure CPU).
    pub(crate) fn start() -> Signers {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (jobs, queue) = flume::unbounded::<Job>();
        for index in 0..threads {
            let queue = queue.clone();
            let started = std::thread::Builder::new().name(format!("signer-{index}")).spawn(move || {
                while let Ok(job) = queue.recv() {
                    // A panicking job loses its answer (its caller sees `SignersGone`), not
                    // the thread.
                    let _ = catch_unwind(AssertUnwindSafe(job));
                }
            });
            if let Err(err) = started {
                // The threads already started serve; with none, `run` answers `SignersGone`.
                tracing::error!(error = %err, "could not start a signing thread");
            }
        }
        Signers { jobs }
    }

    /// Runs `work` on a signing thread, after the jobs queued before it.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, SignersGone> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(work());
        });
        self.jobs.send(job).map_err(|_| SignersGone)?;
        answered.await.map_err(|_| SignersGone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_a_signing_thread_and_its_answer_comes_back() {
        let signers = Signers::start();
        let name = signers.run(|| std::thread::current().name().map(str::to_owned)).await;
        assert!(name.unwrap().unwrap().starts_with("signer-"));
    }

    #[tokio::test]
    async fn a_panicking_job_loses_its_answer_but_not_the_threads() {
        let signers = Signers::start();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for _ in 0..threads {
            assert_eq!(signers.run(|| -> u8 { panic!("a job that panics") }).await, Err(SignersGone));
        }
        assert_eq!(signers.run(|| 7).await, Ok(7));
    }
}
