//! An exclusive per-repo lock, so two processes never download into the same repo folder at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{io_err, HubError, Result};

/// How often a waiting process retries the lock.
const POLL: Duration = Duration::from_millis(100);

/// A held lock; released when dropped (and by the OS when the process dies).
#[derive(Debug)]
pub struct RepoLock {
    file: File,
    path: PathBuf,
}

impl RepoLock {
    /// The lock file of a repo folder name (`models--org--name`): `<cache>/.locks/<folder>/candle-coreml.lock`,
    /// beside the per-blob locks of Python's `huggingface_hub`.
    pub fn path_for(cache_dir: &Path, repo_folder: &str) -> PathBuf {
        cache_dir
            .join(".locks")
            .join(repo_folder)
            .join("candle-coreml.lock")
    }

    /// Takes the lock at `path`, waiting up to `timeout` (`None`: as long as it takes). `on_wait` is called once
    /// if another process holds it.
    pub fn acquire(
        path: &Path,
        timeout: Option<Duration>,
        on_wait: impl FnOnce(),
    ) -> Result<RepoLock> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        let start = Instant::now();
        let mut on_wait = Some(on_wait);
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(RepoLock {
                        file,
                        path: path.to_path_buf(),
                    })
                }
                Err(TryLockError::WouldBlock) => {
                    if let Some(f) = on_wait.take() {
                        f();
                    }
                    if timeout.is_some_and(|t| start.elapsed() >= t) {
                        return Err(HubError::Locked {
                            path: path.to_path_buf(),
                            waited_ms: start.elapsed().as_millis(),
                        });
                    }
                    std::thread::sleep(POLL);
                }
                Err(TryLockError::Error(e)) => return Err(io_err(path)(e)),
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        // Unlocking cannot meaningfully fail; closing the file releases the lock anyway.
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_times_out_then_succeeds_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = RepoLock::path_for(dir.path(), "models--a--b");
        let first = RepoLock::acquire(&path, Some(Duration::ZERO), || {}).unwrap();
        let mut waited = false;
        let err = RepoLock::acquire(&path, Some(Duration::from_millis(150)), || waited = true)
            .unwrap_err();
        assert!(waited);
        assert!(matches!(err, HubError::Locked { .. }), "{err}");
        drop(first);
        RepoLock::acquire(&path, Some(Duration::ZERO), || {}).unwrap();
    }
}
