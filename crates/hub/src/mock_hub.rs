//! A loopback mock of the Hugging Face hub (feature `mock-hub`), for tests: the listing endpoint
//! `GET /api/models/{org}/{name}/revision/{rev}` (with `sha`, and `siblings[]` carrying `rfilename`, `size`, `blobId`
//! and `lfs {sha256, size}`) and the file endpoint `GET /{org}/{name}/resolve/{rev}/{path}` (with `Range`, `ETag`,
//! `X-Repo-Commit`). It listens on 127.0.0.1 only, answers one request per connection, can inject faults, records
//! every request, and stops when dropped or after [`MAX_LIFETIME`].

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The server stops by itself after this long, even if never dropped.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);

/// One repo served by the mock.
#[derive(Debug, Clone)]
pub struct MockRepo {
    /// Repo id `org/name`.
    pub id: String,
    /// Its (only) commit, 40 hex digits; `main` resolves to it.
    pub commit: String,
    /// Path in the repo → contents.
    pub files: BTreeMap<String, Vec<u8>>,
    /// When set, every request must carry `Authorization: Bearer <token>` (401 otherwise).
    pub token: Option<String>,
}

impl MockRepo {
    /// An empty repo.
    pub fn new(id: &str, commit: &str) -> MockRepo {
        MockRepo {
            id: id.to_string(),
            commit: commit.to_string(),
            files: BTreeMap::new(),
            token: None,
        }
    }

    /// A repo holding every file under `dir` (recursively; paths relative to `dir`, `/`-separated).
    pub fn from_dir(id: &str, commit: &str, dir: &Path) -> io::Result<MockRepo> {
        let mut repo = MockRepo::new(id, commit);
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(dir) {
                    let name = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/");
                    repo.files.insert(name, std::fs::read(&path)?);
                }
            }
        }
        Ok(repo)
    }

    /// Adds (or replaces) a file.
    pub fn with_file(mut self, path: &str, contents: Vec<u8>) -> MockRepo {
        self.files.insert(path.to_string(), contents);
        self
    }

    /// Requires a bearer token.
    pub fn with_token(mut self, token: &str) -> MockRepo {
        self.token = Some(token.to_string());
        self
    }
}

/// Whether the mock lists a file as stored with LFS (with its sha256): weight-like extensions or 64 KiB and more.
pub fn is_lfs(path: &str, size: usize) -> bool {
    let lower = path.to_ascii_lowercase();
    size >= 64 * 1024
        || [".bin", ".zip", ".mlmodel"]
            .iter()
            .any(|e| lower.ends_with(e))
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The mock's stand-in for a git blob id: 40 hex digits derived from the contents.
pub fn blob_id(bytes: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"blob ");
    hasher.update(bytes);
    hasher
        .finalize()
        .iter()
        .take(20)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A misbehaviour injected for one file (keyed by `org/name/path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Announce the full length, send this many body bytes, then close the connection (once; then cleared).
    CutAfter(usize),
    /// Serve the file with its last byte flipped (the listing keeps the true hash).
    Corrupt,
    /// Answer with this HTTP status.
    Status(u16),
    /// Ignore `Range` headers and always send the whole file with status 200.
    IgnoreRange,
}

/// A request the mock received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Request path (with query).
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

impl Request {
    /// Whether this was a file download (`/resolve/`).
    pub fn is_file(&self) -> bool {
        self.path.contains("/resolve/")
    }
}

#[derive(Default)]
struct State {
    repos: Vec<MockRepo>,
    faults: BTreeMap<String, Fault>,
    requests: Vec<Request>,
}

/// A running mock hub.
pub struct MockHub {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    thread: Option<JoinHandle<()>>,
}

impl MockHub {
    /// Starts serving `repos` on an ephemeral port of 127.0.0.1.
    pub fn start(repos: Vec<MockRepo>) -> io::Result<MockHub> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State {
            repos,
            ..State::default()
        }));
        let thread = {
            let stop = stop.clone();
            let state = state.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut handlers = Vec::new();
                while !stop.load(Ordering::SeqCst) && started.elapsed() < MAX_LIFETIME {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let state = state.clone();
                            handlers.push(std::thread::spawn(move || {
                                // A failed exchange only affects that client, which sees the error itself.
                                let _ = serve(stream, &state);
                            }));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                for handler in handlers {
                    let _ = handler.join();
                }
            })
        };
        Ok(MockHub {
            addr,
            stop,
            state,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`, for `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Injects a fault for `org/name/path`.
    pub fn set_fault(&self, repo_id: &str, path: &str, fault: Fault) {
        self.state()
            .faults
            .insert(format!("{repo_id}/{path}"), fault);
    }

    /// Removes all faults.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let value = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = value {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    cut_after: Option<usize>,
}

impl Answer {
    fn error(status: u16, message: &str) -> Answer {
        Answer {
            status,
            headers: vec![
                ("X-Error-Message".into(), message.into()),
                ("Content-Type".into(), "application/json".into()),
            ],
            body: serde_json::json!({ "error": message })
                .to_string()
                .into_bytes(),
            cut_after: None,
        }
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let request = Request {
        path: target.clone(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
    };
    let answer = {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        state.requests.push(request.clone());
        if method != "GET" {
            Answer::error(405, "only GET is served")
        } else {
            route(&mut state, &request)
        }
    };
    let mut stream = stream;
    let mut head = format!("HTTP/1.1 {} {}\r\n", answer.status, reason(answer.status));
    for (k, v) in &answer.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        answer.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    let body = match answer.cut_after {
        Some(n) => &answer.body[..n.min(answer.body.len())],
        None => &answer.body[..],
    };
    stream.write_all(body)?;
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn route(state: &mut State, request: &Request) -> Answer {
    let path = request
        .path
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["api", "models", org, name, "revision", rev] = segments.as_slice() {
        let id = format!("{org}/{name}");
        let Some(repo) = state.repos.iter().find(|r| r.id == id) else {
            return Answer::error(404, "Repository not found");
        };
        if let Some(answer) = check_token(repo, request) {
            return answer;
        }
        let rev = percent_decode(rev);
        if rev != "main" && rev != repo.commit {
            return Answer::error(404, &format!("Invalid rev id: {rev}"));
        }
        let siblings: Vec<serde_json::Value> = repo
            .files
            .iter()
            .map(|(p, bytes)| {
                let mut v = serde_json::json!({
                    "rfilename": p,
                    "size": bytes.len(),
                    "blobId": blob_id(bytes),
                });
                if is_lfs(p, bytes.len()) {
                    v["lfs"] = serde_json::json!({
                        "sha256": sha256_hex(bytes),
                        "size": bytes.len(),
                        "pointerSize": 134,
                    });
                }
                v
            })
            .collect();
        let body = serde_json::json!({ "id": repo.id, "sha": repo.commit, "siblings": siblings });
        return Answer {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            cut_after: None,
        };
    }
    if let [org, name, "resolve", rev, rest @ ..] = segments.as_slice() {
        let id = format!("{org}/{name}");
        let Some(repo) = state.repos.iter().find(|r| r.id == id) else {
            return Answer::error(404, "Repository not found");
        };
        if let Some(answer) = check_token(repo, request) {
            return answer;
        }
        let rev = percent_decode(rev);
        if rev != "main" && rev != repo.commit {
            return Answer::error(404, &format!("Invalid rev id: {rev}"));
        }
        let file_path = rest
            .iter()
            .map(|s| percent_decode(s))
            .collect::<Vec<_>>()
            .join("/");
        let Some(contents) = repo.files.get(&file_path) else {
            return Answer::error(404, &format!("Entry not found: {file_path}"));
        };
        let mut contents = contents.clone();
        let etag = if is_lfs(&file_path, contents.len()) {
            sha256_hex(&contents)
        } else {
            blob_id(&contents)
        };
        let commit = repo.commit.clone();
        let key = format!("{id}/{file_path}");
        let fault = state.faults.get(&key).copied();
        let mut cut_after = None;
        let mut honour_range = true;
        match fault {
            Some(Fault::Status(status)) => return Answer::error(status, "injected failure"),
            Some(Fault::Corrupt) => {
                if let Some(last) = contents.last_mut() {
                    *last ^= 0xff;
                }
            }
            Some(Fault::CutAfter(n)) => {
                cut_after = Some(n);
                state.faults.remove(&key);
            }
            Some(Fault::IgnoreRange) => honour_range = false,
            None => {}
        }
        let total = contents.len();
        let mut headers = vec![
            ("ETag".to_string(), format!("\"{etag}\"")),
            ("X-Repo-Commit".to_string(), commit),
            ("Accept-Ranges".to_string(), "bytes".to_string()),
        ];
        let start = request
            .range
            .as_deref()
            .filter(|_| honour_range)
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse::<usize>().ok());
        let (status, body) = match start {
            Some(s) if s >= total => return Answer::error(416, "range not satisfiable"),
            Some(s) => {
                headers.push((
                    "Content-Range".into(),
                    format!("bytes {s}-{}/{total}", total.saturating_sub(1)),
                ));
                (206, contents[s..].to_vec())
            }
            None => (200, contents),
        };
        return Answer {
            status,
            headers,
            body,
            cut_after,
        };
    }
    Answer::error(404, "no such endpoint")
}

fn check_token(repo: &MockRepo, request: &Request) -> Option<Answer> {
    let token = repo.token.as_ref()?;
    if request.authorization.as_deref() == Some(&format!("Bearer {token}")) {
        None
    } else {
        Some(Answer::error(
            401,
            "Invalid credentials in Authorization header",
        ))
    }
}
