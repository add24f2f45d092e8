//! Background tasks tied to a scope.

/// Aborts a task when dropped: the heartbeat of a job stops however the job's run ends, a
/// panic included, so a dead run never keeps renewing its lease.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
