//! Listing and cleaning caches: Core ML's compile caches (`<user cache dir>/[<app>/]com.apple.e5rt.e5bundlecache`,
//! which macOS fills when a model is compiled for a device) and our own cache (`<user cache dir>/candle-coreml`,
//! or `CANDLE_COREML_CACHE`). Deletion is refused for anything that is not one of those entries: a path outside the
//! roots, a root itself, a symlink, or an entry at an unexpected depth or with an unexpected name.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{io_err, HubError, Result};

/// Name of the directory Core ML's E5 runtime keeps compiled model bundles in.
pub const COREML_CACHE_NAME: &str = "com.apple.e5rt.e5bundlecache";

/// Name of our own cache folder inside the user cache directory.
pub const OUR_CACHE_NAME: &str = "candle-coreml";

/// Deepest directory level walked when measuring an entry.
const MAX_WALK_DEPTH: usize = 64;

/// The directories cache entries are looked for in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRoots {
    /// The user cache directory (`~/Library/Caches` on macOS), holding Core ML compile caches.
    pub user_cache_dir: PathBuf,
    /// Our own cache.
    pub ours: PathBuf,
}

impl CacheRoots {
    /// Roots under one user cache directory: Core ML caches in it, ours at `<dir>/candle-coreml`.
    pub fn under(user_cache_dir: impl Into<PathBuf>) -> CacheRoots {
        let user_cache_dir = user_cache_dir.into();
        CacheRoots {
            ours: user_cache_dir.join(OUR_CACHE_NAME),
            user_cache_dir,
        }
    }

    /// The platform's user cache directory, with ours overridden by `CANDLE_COREML_CACHE` when set; `None` when the
    /// platform has no user cache directory.
    pub fn from_env() -> Option<CacheRoots> {
        let mut roots = CacheRoots::under(dirs::cache_dir()?);
        if let Some(ours) = std::env::var_os("CANDLE_COREML_CACHE").filter(|v| !v.is_empty()) {
            roots.ours = PathBuf::from(ours);
        }
        Some(roots)
    }
}

/// What kind of cache an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CacheKind {
    /// A Core ML compile cache (`com.apple.e5rt.e5bundlecache`).
    CoreMlCompile,
    /// An entry of our own cache.
    Ours,
}

impl CacheKind {
    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            CacheKind::CoreMlCompile => "coreml",
            CacheKind::Ours => "candle-coreml",
        }
    }
}

/// One removable cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// Its kind.
    pub kind: CacheKind,
    /// The directory (or file) to remove.
    pub path: PathBuf,
    /// Total size of its files.
    pub bytes: u64,
    /// Newest modification time of its files (of the entry itself when it holds none).
    pub modified: SystemTime,
}

fn is_plain_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Size and newest file modification time of a file or directory tree, without following symlinks.
fn measure(path: &Path) -> Result<(u64, SystemTime)> {
    let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
    let own_time = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if !meta.is_dir() {
        return Ok((meta.len(), own_time));
    }
    let mut bytes = 0u64;
    let mut newest: Option<SystemTime> = None;
    let mut stack = vec![(path.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let p = entry.path();
            let m = fs::symlink_metadata(&p).map_err(io_err(&p))?;
            if m.is_dir() {
                if depth < MAX_WALK_DEPTH {
                    stack.push((p, depth + 1));
                }
            } else {
                bytes += m.len();
                let t = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
    }
    Ok((bytes, newest.unwrap_or(own_time)))
}

fn entry(kind: CacheKind, path: PathBuf) -> Result<CacheEntry> {
    let (bytes, modified) = measure(&path)?;
    Ok(CacheEntry {
        kind,
        path,
        bytes,
        modified,
    })
}

fn children(dir: &Path) -> Result<Vec<PathBuf>> {
    if !is_plain_dir(dir) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        out.push(e.map_err(io_err(dir))?.path());
    }
    out.sort();
    Ok(out)
}

/// Every cache entry under the roots: `<user cache>/com.apple.e5rt.e5bundlecache`,
/// `<user cache>/<app>/com.apple.e5rt.e5bundlecache`, and in our cache each `<ours>/<category>/<item>` (or a file
/// directly in `<ours>`). Symlinks are never followed or listed.
pub fn list(roots: &CacheRoots) -> Result<Vec<CacheEntry>> {
    let mut entries = Vec::new();
    let direct = roots.user_cache_dir.join(COREML_CACHE_NAME);
    if is_plain_dir(&direct) {
        entries.push(entry(CacheKind::CoreMlCompile, direct)?);
    }
    for app in children(&roots.user_cache_dir)? {
        if !is_plain_dir(&app) || app == roots.ours {
            continue;
        }
        let cache = app.join(COREML_CACHE_NAME);
        if is_plain_dir(&cache) {
            entries.push(entry(CacheKind::CoreMlCompile, cache)?);
        }
    }
    for child in children(&roots.ours)? {
        let meta = fs::symlink_metadata(&child).map_err(io_err(&child))?;
        if meta.is_file() {
            entries.push(entry(CacheKind::Ours, child)?);
        } else if meta.is_dir() {
            for item in children(&child)? {
                if !fs::symlink_metadata(&item)
                    .map_err(io_err(&item))?
                    .file_type()
                    .is_symlink()
                {
                    entries.push(entry(CacheKind::Ours, item)?);
                }
            }
        }
    }
    Ok(entries)
}

/// The entries older than `older_than` (by newest file modification; all entries when `None`).
pub fn select_older_than(
    entries: Vec<CacheEntry>,
    older_than: Option<Duration>,
    now: SystemTime,
) -> Vec<CacheEntry> {
    entries
        .into_iter()
        .filter(|e| {
            older_than.is_none_or(|age| {
                now.duration_since(e.modified)
                    .is_ok_and(|elapsed| elapsed >= age)
            })
        })
        .collect()
}

/// Refuses a root that is the filesystem root or the home directory, or that cannot be resolved.
fn canonical_root(root: &Path) -> Result<PathBuf> {
    let canonical = fs::canonicalize(root).map_err(io_err(root))?;
    let refuse = |reason: &str| HubError::UnsafeCachePath {
        path: root.to_path_buf(),
        reason: reason.to_string(),
    };
    if canonical.parent().is_none() {
        return Err(refuse("a cache root cannot be the filesystem root"));
    }
    if dirs::home_dir()
        .and_then(|h| fs::canonicalize(h).ok())
        .as_deref()
        == Some(canonical.as_path())
    {
        return Err(refuse("a cache root cannot be the home directory"));
    }
    Ok(canonical)
}

/// Checks that `path` is a removable entry of kind `kind` under `roots` (see the module documentation).
pub fn check_removable(path: &Path, kind: CacheKind, roots: &CacheRoots) -> Result<()> {
    let refuse = |reason: String| HubError::UnsafeCachePath {
        path: path.to_path_buf(),
        reason,
    };
    let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
    if meta.file_type().is_symlink() {
        return Err(refuse("it is a symlink".into()));
    }
    let canonical = fs::canonicalize(path).map_err(io_err(path))?;
    let root = match kind {
        CacheKind::CoreMlCompile => canonical_root(&roots.user_cache_dir)?,
        CacheKind::Ours => canonical_root(&roots.ours)?,
    };
    let relative = canonical
        .strip_prefix(&root)
        .map_err(|_| refuse(format!("it is outside the cache root {}", root.display())))?;
    let parts: Vec<Component> = relative.components().collect();
    if parts.is_empty() || !parts.iter().all(|c| matches!(c, Component::Normal(_))) {
        return Err(refuse(format!(
            "it is the cache root {} itself",
            root.display()
        )));
    }
    match kind {
        CacheKind::CoreMlCompile => {
            let named = canonical
                .file_name()
                .is_some_and(|n| n == COREML_CACHE_NAME);
            if !named || parts.len() > 2 {
                return Err(refuse(format!(
                    "a Core ML compile cache is `{COREML_CACHE_NAME}` directly in {} or one folder below it",
                    root.display()
                )));
            }
        }
        CacheKind::Ours => {
            if parts.len() > 2 {
                return Err(refuse(format!(
                    "it is deeper than an entry of {}",
                    root.display()
                )));
            }
        }
    }
    Ok(())
}

/// Removes `entries` after checking each with [`check_removable`] (all are checked before anything is removed).
/// Returns the bytes freed.
pub fn remove(entries: &[CacheEntry], roots: &CacheRoots) -> Result<u64> {
    for e in entries {
        check_removable(&e.path, e.kind, roots)?;
    }
    let mut freed = 0;
    for e in entries {
        let meta = fs::symlink_metadata(&e.path).map_err(io_err(&e.path))?;
        if meta.is_dir() {
            fs::remove_dir_all(&e.path).map_err(io_err(&e.path))?;
        } else {
            fs::remove_file(&e.path).map_err(io_err(&e.path))?;
        }
        freed += e.bytes;
    }
    Ok(freed)
}

/// Parses an age such as `90s`, `30m`, `12h`, `7d` or `2w`.
pub fn parse_age(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| HubError::InvalidDuration(text.to_string()))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(HubError::InvalidDuration(text.to_string())),
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| HubError::InvalidDuration(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_age("30m").unwrap(), Duration::from_secs(1800));
        for bad in ["", "7", "d", "7y", "-1d", "1.5h"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }
}
