//! Whole-repo downloads into the standard Hugging Face cache.
//!
//! One listing request (`GET {endpoint}/api/models/{id}/revision/{rev}?blobs=true`) gives the commit and, per file,
//! its size, git blob id and — for LFS files — its sha256. The files a model needs ([`crate::select`]) are then
//! fetched from `{endpoint}/{id}/resolve/{commit}/{path}`, several at a time, each into
//! `blobs/<sha256 or blob id>.incomplete` (resumed with a `Range` request when a previous run was cut off), checked
//! against the listed size and sha256, and only then renamed to `blobs/<id>` and linked from
//! `snapshots/<commit>/<path>`. `refs/<revision>` is written last. A per-repo lock keeps two processes apart.
//! `.mlmodelc.zip` files are unpacked beside themselves in the snapshot. The layout (folder names, URL scheme) is
//! hf-hub's; hf-hub 0.5's own downloader is not used because it neither verifies hashes nor reads `HF_HUB_CACHE`,
//! `HF_HUB_OFFLINE` or the LFS metadata, and downloads one file at a time.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{io_err, HubError, Result};
use crate::lock::RepoLock;
use crate::resolve::{is_repo_id, ResolveOptions};
use crate::select::select_model_files;
use crate::settings::{model_repo, HubSettings};

/// Folder (inside a repo's cache folder) holding the list of files each downloaded commit needs.
pub const MANIFEST_DIR: &str = ".candle-coreml";

/// Suffix of partial downloads in `blobs/` (the same as Python's `huggingface_hub`, so either can resume).
const INCOMPLETE: &str = "incomplete";

/// A model snapshot available on disk.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Repo id (`org/name`).
    pub repo_id: String,
    /// The revision asked for.
    pub revision: String,
    /// The commit it resolved to.
    pub commit: String,
    /// `<cache>/models--org--name/snapshots/<commit>`.
    pub dir: PathBuf,
    /// The files of the model (relative paths), as listed by the hub or recorded at download time.
    pub files: Vec<String>,
    /// The files transferred by this call (empty when everything was already cached).
    pub transferred: Vec<String>,
    /// Bytes received by this call.
    pub bytes_transferred: u64,
}

/// One file of a repo listing, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteFile {
    /// Path in the repo.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// The blob name in the cache: the LFS sha256, else the git blob id.
    pub blob: String,
    /// LFS sha256 (lower-case hex), when the file is stored with LFS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    repo: String,
    commit: String,
    files: Vec<RemoteFile>,
}

#[derive(Debug, Deserialize)]
struct Listing {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, rename = "blobId")]
    blob_id: Option<String>,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(Debug, Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether a revision is a full commit hash.
pub fn is_commit_hash(revision: &str) -> bool {
    is_hex(revision, 40)
}

/// Whether a revision (branch, tag, `refs/pr/N` or commit) is safe to use in URLs and under `refs/`.
pub fn is_valid_revision(revision: &str) -> bool {
    !revision.is_empty()
        && revision.len() <= 256
        && revision
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        && revision
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

fn checked_revision(options: &ResolveOptions) -> Result<&str> {
    let revision = options.revision.as_deref().unwrap_or("main");
    if is_valid_revision(revision) {
        Ok(revision)
    } else {
        Err(HubError::InvalidRevision {
            revision: revision.to_string(),
        })
    }
}

/// Whether a repo path is safe to place under a snapshot: relative, `/`-separated, no `.`/`..`/empty components.
fn is_safe_repo_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && !path.contains('\0')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Percent-encodes one URL path segment.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An HTTP client for one hub.
struct Client {
    agent: ureq::Agent,
    token: Option<String>,
}

impl Client {
    fn new(settings: &HubSettings) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .timeout_connect(Some(Duration::from_secs(30)))
            .user_agent(format!("candle-coreml/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client {
            agent,
            token: settings.token.clone(),
        }
    }

    /// Sends a GET; an HTTP error status becomes [`HubError::Http`] with the server's message.
    fn get(&self, url: &str, range_start: u64) -> Result<ureq::http::Response<ureq::Body>> {
        let mut request = self.agent.get(url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if range_start > 0 {
            request = request.header("Range", format!("bytes={range_start}-"));
        }
        let mut response = request.call().map_err(|e| HubError::Connect {
            url: url.to_string(),
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        if status >= 400 {
            let header_message = response
                .headers()
                .get("x-error-message")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = response
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_string()
                .unwrap_or_default();
            let body_message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
            return Err(HubError::Http {
                url: url.to_string(),
                status,
                message: header_message.or(body_message),
            });
        }
        Ok(response)
    }
}

/// Lists a repo at a revision: the commit and the files a model needs.
fn list_repo(
    client: &Client,
    settings: &HubSettings,
    repo_id: &str,
    revision: &str,
) -> Result<(String, Vec<RemoteFile>)> {
    let repo = model_repo(repo_id, revision);
    let url = format!("{}/api/{}?blobs=true", settings.endpoint, repo.api_url());
    let mut response = client.get(&url, 0)?;
    let text = response
        .body_mut()
        .with_config()
        .limit(256 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| HubError::Protocol {
            url: url.clone(),
            message: format!("cannot read the listing: {e}"),
        })?;
    let listing: Listing = serde_json::from_str(&text).map_err(|e| HubError::Protocol {
        url: url.clone(),
        message: format!("the listing is not the expected JSON: {e}"),
    })?;
    let protocol = |message: String| HubError::Protocol {
        url: url.clone(),
        message,
    };
    if !is_commit_hash(&listing.sha) {
        return Err(protocol(format!(
            "commit `{}` is not a 40-digit hex hash",
            listing.sha
        )));
    }
    let wanted = select_model_files(listing.siblings.iter().map(|s| s.rfilename.as_str()));
    let mut files = Vec::with_capacity(wanted.len());
    for sibling in &listing.siblings {
        if wanted.binary_search(&sibling.rfilename).is_err() {
            continue;
        }
        let path = &sibling.rfilename;
        if !is_safe_repo_path(path) {
            return Err(protocol(format!(
                "file name `{path}` is not a safe relative path"
            )));
        }
        let file = match &sibling.lfs {
            Some(lfs) => {
                let sha = lfs.sha256.to_ascii_lowercase();
                if !is_hex(&sha, 64) {
                    return Err(protocol(format!(
                        "`{path}`: LFS sha256 `{}` is not 64 hex digits",
                        lfs.sha256
                    )));
                }
                RemoteFile {
                    path: path.clone(),
                    size: lfs.size,
                    blob: sha.clone(),
                    sha256: Some(sha),
                }
            }
            None => {
                let blob = sibling
                    .blob_id
                    .as_deref()
                    .filter(|b| is_hex(b, 40))
                    .ok_or_else(|| {
                        protocol(format!(
                            "`{path}` has no git blob id (`blobId`) in the listing"
                        ))
                    })?;
                let size = sibling
                    .size
                    .ok_or_else(|| protocol(format!("`{path}` has no size in the listing")))?;
                RemoteFile {
                    path: path.clone(),
                    size,
                    blob: blob.to_ascii_lowercase(),
                    sha256: None,
                }
            }
        };
        files.push(file);
    }
    if files.is_empty() {
        return Err(HubError::NoModelFiles {
            repo: repo_id.to_string(),
            revision: revision.to_string(),
        });
    }
    Ok((listing.sha.to_ascii_lowercase(), files))
}

/// Writes `contents` to `path` through a temporary file and a rename, so readers see the old or the new file.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let temp = temp_sibling(path);
    fs::write(&temp, contents).map_err(io_err(&temp))?;
    fs::rename(&temp, path).map_err(io_err(path))
}

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Whether the snapshot already holds `file` complete (its link resolves to a file of the listed size).
fn is_placed(snapshot: &Path, file: &RemoteFile) -> bool {
    fs::metadata(snapshot.join(&file.path)).is_ok_and(|m| m.is_file() && m.len() == file.size)
}

/// Links `snapshots/<commit>/<path>` to `blobs/<blob>` (a relative symlink; a copy where symlinks are unavailable),
/// replacing any previous entry atomically.
fn link_into_snapshot(repo_dir: &Path, snapshot: &Path, file: &RemoteFile) -> Result<()> {
    let pointer = snapshot.join(&file.path);
    let parent = pointer.parent().unwrap_or(snapshot);
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let temp = temp_sibling(&pointer);
    let _ = fs::remove_file(&temp);
    let blob = repo_dir.join("blobs").join(&file.blob);
    #[cfg(unix)]
    {
        let depth = file.path.split('/').count() + 1;
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(&file.blob);
        std::os::unix::fs::symlink(&target, &temp).map_err(io_err(&temp))?;
    }
    #[cfg(not(unix))]
    {
        fs::copy(&blob, &temp).map_err(io_err(&temp))?;
    }
    fs::rename(&temp, &pointer).map_err(io_err(&pointer))?;
    if !is_placed(snapshot, file) {
        return Err(HubError::Io {
            path: pointer,
            source: std::io::Error::other(format!("link to {} does not resolve", blob.display())),
        });
    }
    Ok(())
}

/// Progress display: one bar for the whole download and one per file in flight.
struct Progress {
    multi: MultiProgress,
    overall: ProgressBar,
}

impl Progress {
    fn new(visible: bool, total_bytes: u64, files: usize) -> Progress {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(total_bytes));
        overall.set_style(bar_style(
            "{msg:>32} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} ({eta})",
        ));
        overall.set_message(format!("total ({files} files)"));
        Progress { multi, overall }
    }

    fn file_bar(&self, name: &str, size: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(bar_style(
            "{msg:>32} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec}",
        ));
        let short: String = if name.chars().count() > 32 {
            let tail: Vec<char> = name.chars().rev().take(30).collect();
            format!("..{}", tail.into_iter().rev().collect::<String>())
        } else {
            name.to_string()
        };
        bar.set_message(short);
        bar
    }
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Hashes the first bytes of a partial download (to continue the sha256 across a resume).
fn hash_existing(file: &mut File, path: &Path, hasher: &mut Sha256) -> Result<u64> {
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` answer.
fn content_range_start(response: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let value = response.headers().get("content-range")?.to_str().ok()?;
    let range = value.trim().strip_prefix("bytes")?.trim();
    range.split('-').next()?.trim().parse().ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What one transfer attempt ended with.
enum Attempt {
    /// Complete and verified; bytes received by this attempt.
    Done(u64),
    /// The connection broke (partial file kept); bytes received by this attempt, and the error.
    Cut(u64, HubError),
}

/// One file to fetch, with what fetching it needs.
struct Job<'a> {
    client: &'a Client,
    url: String,
    repo_id: &'a str,
    file: &'a RemoteFile,
    bar: &'a ProgressBar,
    overall: &'a ProgressBar,
}

/// Downloads one file into `blobs/<blob>` (verified), resuming a partial file, retrying cut connections. Returns the
/// bytes received.
fn fetch_blob(job: &Job, repo_dir: &Path, retries: usize) -> Result<u64> {
    let file = job.file;
    let blobs = repo_dir.join("blobs");
    fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
    let blob = blobs.join(&file.blob);
    let partial = blobs.join(format!("{}.{INCOMPLETE}", file.blob));
    let mut received = 0u64;
    let mut attempt = 0usize;
    loop {
        match transfer(job, &partial)? {
            Attempt::Done(n) => {
                received += n;
                break;
            }
            Attempt::Cut(n, err) => {
                received += n;
                if attempt >= retries {
                    return Err(err);
                }
                attempt += 1;
                tracing::warn!("{err}; retrying ({attempt}/{retries})");
                std::thread::sleep(Duration::from_millis(200 * attempt as u64));
            }
        }
    }
    fs::rename(&partial, &blob).map_err(io_err(&blob))?;
    Ok(received)
}

/// One GET of a file into its `.incomplete` file, continuing from what is already there. Returns the bytes received
/// once the file is complete and verified, [`Attempt::Cut`] when the connection broke (partial file kept), or an
/// error (HTTP status, corrupt content: the partial file is then deleted).
fn transfer(job: &Job, partial: &Path) -> Result<Attempt> {
    let Job {
        client,
        url,
        repo_id,
        file,
        bar,
        overall,
    } = job;
    let mut out = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(partial)
        .map_err(io_err(partial))?;
    let mut hasher = Sha256::new();
    let mut have = if file.sha256.is_some() {
        hash_existing(&mut out, partial, &mut hasher)?
    } else {
        out.metadata().map_err(io_err(partial))?.len()
    };
    if have > file.size {
        out.set_len(0).map_err(io_err(partial))?;
        hasher = Sha256::new();
        have = 0;
    }
    if have == file.size {
        if let Some(expected) = &file.sha256 {
            // A complete partial file (the process stopped before renaming it) only needs its hash checked.
            if &hex(&hasher.clone().finalize()) == expected {
                out.sync_all().map_err(io_err(partial))?;
                return Ok(Attempt::Done(0));
            }
        }
    }
    let start = if have == file.size { 0 } else { have };
    if start == 0 && have > 0 {
        // A complete-looking partial file that cannot be verified is fetched again.
        out.set_len(0).map_err(io_err(partial))?;
        hasher = Sha256::new();
        have = 0;
    }
    let mut response = match client.get(url, start) {
        Ok(r) => r,
        Err(HubError::Http { status: 416, .. }) if start > 0 => {
            // The server has fewer bytes than the partial file: start over.
            out.set_len(0).map_err(io_err(partial))?;
            return Ok(Attempt::Cut(
                0,
                HubError::Interrupted {
                    repo: repo_id.to_string(),
                    file: file.path.clone(),
                    received: 0,
                    expected: file.size,
                    message: format!("the server refused to resume from byte {start}"),
                },
            ));
        }
        Err(HubError::Connect { url, message }) => {
            return Ok(Attempt::Cut(
                0,
                HubError::Interrupted {
                    repo: repo_id.to_string(),
                    file: file.path.clone(),
                    received: have,
                    expected: file.size,
                    message: format!("cannot reach {url}: {message}"),
                },
            ))
        }
        Err(e) => return Err(e),
    };
    if start > 0
        && response.status().as_u16() == 206
        && content_range_start(&response) != Some(start)
    {
        out.set_len(0).map_err(io_err(partial))?;
        return Ok(Attempt::Cut(
            0,
            HubError::Interrupted {
                repo: repo_id.to_string(),
                file: file.path.clone(),
                received: 0,
                expected: file.size,
                message: format!(
                    "the server answered a resume from byte {start} with another range"
                ),
            },
        ));
    }
    if start > 0 && response.status().as_u16() != 206 {
        // The server ignored the range: start over with the full body it is sending.
        out.set_len(0).map_err(io_err(partial))?;
        hasher = Sha256::new();
        have = 0;
    }
    out.seek(SeekFrom::Start(have)).map_err(io_err(partial))?;
    bar.set_length(file.size);
    bar.set_position(have);
    overall.inc(have);
    let mut reader = response.body_mut().with_config().reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut received = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                out.flush().map_err(io_err(partial))?;
                overall.set_position(overall.position().saturating_sub(have + received));
                return Ok(Attempt::Cut(
                    received,
                    HubError::Interrupted {
                        repo: repo_id.to_string(),
                        file: file.path.clone(),
                        received: have + received,
                        expected: file.size,
                        message: e.to_string(),
                    },
                ));
            }
        };
        if have + received + n as u64 > file.size {
            drop(out);
            let _ = fs::remove_file(partial);
            return Err(HubError::Integrity {
                repo: repo_id.to_string(),
                file: file.path.clone(),
                expected: format!("{} bytes", file.size),
                actual: "more bytes".to_string(),
            });
        }
        out.write_all(&buf[..n]).map_err(io_err(partial))?;
        if file.sha256.is_some() {
            hasher.update(&buf[..n]);
        }
        received += n as u64;
        bar.inc(n as u64);
        overall.inc(n as u64);
    }
    out.sync_all().map_err(io_err(partial))?;
    let total = have + received;
    if total < file.size {
        overall.set_position(overall.position().saturating_sub(total));
        return Ok(Attempt::Cut(
            received,
            HubError::Interrupted {
                repo: repo_id.to_string(),
                file: file.path.clone(),
                received: total,
                expected: file.size,
                message: "the connection closed early".to_string(),
            },
        ));
    }
    if let Some(expected) = &file.sha256 {
        let actual = hex(&hasher.finalize());
        if &actual != expected {
            drop(out);
            let _ = fs::remove_file(partial);
            return Err(HubError::Integrity {
                repo: repo_id.to_string(),
                file: file.path.clone(),
                expected: format!("sha256 {expected}"),
                actual: format!("sha256 {actual}"),
            });
        }
    }
    Ok(Attempt::Done(received))
}

/// Downloads what a model needs from hub repo `repo_id` (see the module documentation), or, in offline mode, finds
/// it in the cache. Returns the snapshot.
pub fn download_repo(repo_id: &str, options: &ResolveOptions) -> Result<Snapshot> {
    let settings = &options.settings;
    let revision = checked_revision(options)?;
    if !is_repo_id(repo_id) {
        return Err(HubError::InvalidModelSpec {
            spec: repo_id.to_string(),
        });
    }
    if settings.offline {
        return cached_snapshot(repo_id, revision, settings);
    }
    let client = Client::new(settings);
    let (commit, files) = list_repo(&client, settings, repo_id, revision)?;
    let repo = model_repo(repo_id, revision);
    let repo_dir = settings.cache_dir.join(repo.folder_name());
    let lock_path = RepoLock::path_for(&settings.cache_dir, &repo.folder_name());
    let _lock = RepoLock::acquire(&lock_path, options.lock_timeout, || {
        tracing::warn!(
            "waiting for another process downloading {repo_id} (lock {})",
            lock_path.display()
        );
    })?;
    let manifest = Manifest {
        repo: repo_id.to_string(),
        commit: commit.clone(),
        files: files.clone(),
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(|e| HubError::Protocol {
        url: settings.endpoint.clone(),
        message: format!("cannot serialise the manifest: {e}"),
    })?;
    write_atomically(
        &repo_dir.join(MANIFEST_DIR).join(format!("{commit}.json")),
        &manifest_json,
    )?;

    let snapshot = repo_dir.join("snapshots").join(&commit);
    fs::create_dir_all(&snapshot).map_err(io_err(&snapshot))?;
    let mut pending = VecDeque::new();
    for file in &files {
        if is_placed(&snapshot, file) {
            continue;
        }
        let blob = repo_dir.join("blobs").join(&file.blob);
        if fs::metadata(&blob).is_ok_and(|m| m.is_file() && m.len() == file.size) {
            link_into_snapshot(&repo_dir, &snapshot, file)?;
        } else {
            pending.push_back(file);
        }
    }
    // Files with the same contents share one blob: fetch it once, link every path.
    let mut by_blob: BTreeMap<&str, Vec<&RemoteFile>> = BTreeMap::new();
    for file in pending {
        by_blob.entry(file.blob.as_str()).or_default().push(file);
    }
    let groups: VecDeque<Vec<&RemoteFile>> = by_blob.into_values().collect();
    let total: u64 = groups
        .iter()
        .filter_map(|g| g.first())
        .map(|f| f.size)
        .sum();
    let progress = Progress::new(options.progress, total, groups.len());
    let workers = options.parallel.clamp(1, groups.len().max(1));
    let queue = Mutex::new(groups);
    let done: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<HubError>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                let Some(group) = next else { break };
                let Some(&file) = group.first() else { continue };
                let url = format!(
                    "{}/{}/resolve/{}/{}",
                    settings.endpoint,
                    repo.url(),
                    commit,
                    file.path
                        .split('/')
                        .map(encode_segment)
                        .collect::<Vec<_>>()
                        .join("/")
                );
                let bar = progress.file_bar(&file.path, file.size);
                let job = Job {
                    client: &client,
                    url,
                    repo_id,
                    file,
                    bar: &bar,
                    overall: &progress.overall,
                };
                let result = fetch_blob(&job, &repo_dir, options.retries).and_then(|n| {
                    for f in &group {
                        link_into_snapshot(&repo_dir, &snapshot, f)?;
                    }
                    Ok(n)
                });
                bar.finish_and_clear();
                match result {
                    Ok(n) => {
                        let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
                        for (i, f) in group.iter().enumerate() {
                            done.push((f.path.clone(), if i == 0 { n } else { 0 }));
                        }
                    }
                    Err(e) => errors.lock().unwrap_or_else(|e| e.into_inner()).push(e),
                }
            });
        }
    });
    progress.overall.finish_and_clear();
    let mut errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    if !errors.is_empty() {
        let count = errors.len();
        let first = errors.remove(0);
        return Err(if count == 1 {
            first
        } else {
            HubError::Several {
                count,
                first: Box::new(first),
            }
        });
    }
    if !is_commit_hash(revision) {
        write_atomically(&repo_dir.join("refs").join(revision), commit.as_bytes())?;
    }
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort();
    let files: Vec<String> = files.into_iter().map(|f| f.path).collect();
    unpack_zips(&snapshot, &files)?;
    Ok(Snapshot {
        repo_id: repo_id.to_string(),
        revision: revision.to_string(),
        commit,
        dir: snapshot,
        files,
        bytes_transferred: done.iter().map(|(_, n)| n).sum(),
        transferred: done.into_iter().map(|(p, _)| p).collect(),
    })
}

/// Unpacks each `.mlmodelc.zip` of the snapshot beside itself (safely: see
/// [`candle_coreml_format::container::extract_mlmodelc_zip`]); an already unpacked bundle is kept.
fn unpack_zips(snapshot: &Path, files: &[String]) -> Result<()> {
    for path in files {
        if !path.to_ascii_lowercase().ends_with(".mlmodelc.zip") {
            continue;
        }
        let zip = snapshot.join(path);
        let parent = zip.parent().unwrap_or(snapshot).to_path_buf();
        candle_coreml_format::container::extract_mlmodelc_zip(&zip, &parent)?;
    }
    Ok(())
}

/// The cached snapshot of a repo at a revision, without any network access: the revision's commit comes from
/// `refs/<revision>` (or is the revision itself), and the files the model needs from the manifest written when it
/// was downloaded; a snapshot without a manifest (e.g. filled by Python) is taken as it is.
pub fn cached_snapshot(repo_id: &str, revision: &str, settings: &HubSettings) -> Result<Snapshot> {
    if !is_valid_revision(revision) {
        return Err(HubError::InvalidRevision {
            revision: revision.to_string(),
        });
    }
    let repo = model_repo(repo_id, revision);
    let repo_dir = settings.cache_dir.join(repo.folder_name());
    let not_cached = || HubError::OfflineNotCached {
        repo: repo_id.to_string(),
        revision: revision.to_string(),
        cache: settings.cache_dir.clone(),
    };
    let commit = if is_commit_hash(revision) {
        revision.to_ascii_lowercase()
    } else {
        let text =
            fs::read_to_string(repo_dir.join("refs").join(revision)).map_err(|_| not_cached())?;
        let commit = text.trim().to_string();
        if !is_commit_hash(&commit) {
            return Err(not_cached());
        }
        commit
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(not_cached());
    }
    let manifest_path = repo_dir.join(MANIFEST_DIR).join(format!("{commit}.json"));
    let files = match fs::read_to_string(&manifest_path) {
        Ok(text) => {
            let manifest: Manifest =
                serde_json::from_str(&text).map_err(|e| HubError::Protocol {
                    url: manifest_path.display().to_string(),
                    message: format!("unreadable download manifest: {e}"),
                })?;
            let missing: Vec<String> = manifest
                .files
                .iter()
                .filter(|f| !is_safe_repo_path(&f.path) || !is_placed(&snapshot, f))
                .map(|f| f.path.clone())
                .collect();
            if !missing.is_empty() {
                return Err(HubError::OfflineIncomplete {
                    repo: repo_id.to_string(),
                    snapshot,
                    missing,
                });
            }
            manifest.files.into_iter().map(|f| f.path).collect()
        }
        Err(_) => {
            tracing::warn!(
                "{} has no download manifest; using it without checking that it is complete",
                snapshot.display()
            );
            Vec::new()
        }
    };
    unpack_zips(&snapshot, &files)?;
    Ok(Snapshot {
        repo_id: repo_id.to_string(),
        revision: revision.to_string(),
        commit,
        dir: snapshot,
        files,
        transferred: Vec::new(),
        bytes_transferred: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a\\b", "./a"] {
            assert!(!is_safe_repo_path(bad), "{bad}");
        }
        assert!(is_safe_repo_path("a.mlmodelc/weights/weight.bin"));
    }

    #[test]
    fn revisions() {
        for good in [
            "main",
            "v1.0",
            "refs/pr/1",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert!(is_valid_revision(good), "{good}");
        }
        for bad in [
            "", "../x", "a//b", "/main", "main/", "a b", "a?b", "a%2Fb", ".",
        ] {
            assert!(!is_valid_revision(bad), "{bad}");
        }
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("a b+c.bin"), "a%20b%2Bc.bin");
    }
}
