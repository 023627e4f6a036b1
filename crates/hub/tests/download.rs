//! Downloads against a loopback mock hub serving the `qwen3-tiny-fp16-c1` fixture.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_coreml_hub::download::{cached_snapshot, download_repo};
use candle_coreml_hub::lock::RepoLock;
use candle_coreml_hub::mock_hub::{sha256_hex, Fault, MockHub, MockRepo};
use candle_coreml_hub::{resolve_model, HubError, HubSettings, ResolveOptions};

const REPO: &str = "anemll/tiny-qwen3";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const EMBED_WEIGHTS: &str = "qwen_embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin";
const HEAD_WEIGHTS: &str = "qwen_lm_head.mlpackage/Data/com.apple.CoreML/weights/weight.bin";

fn fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/anemll/qwen3-tiny-fp16-c1"
    ))
}

/// The fixture as a hub repo, plus files a model does not need.
fn fixture_repo() -> MockRepo {
    MockRepo::from_dir(REPO, COMMIT, &fixture())
        .unwrap()
        .with_file("README.md", b"# tiny\n".to_vec())
        .with_file("chat.py", b"print('hi')\n".to_vec())
        .with_file("tiny-qwen3_0.3.4.zip", vec![0u8; 100])
}

/// Files of the fixture a model needs (all but `expected.json`).
fn needed_files() -> Vec<String> {
    let mut files: Vec<String> = MockRepo::from_dir(REPO, COMMIT, &fixture())
        .unwrap()
        .files
        .into_keys()
        .filter(|p| p != "expected.json")
        .collect();
    files.sort();
    files
}

fn options(hub: &MockHub, cache: &Path) -> ResolveOptions {
    let mut options = ResolveOptions::with_settings(HubSettings::new(hub.endpoint(), cache));
    options.progress = false;
    options.retries = 0;
    options.lock_timeout = Some(Duration::from_secs(10));
    options
}

fn file_requests(hub: &MockHub) -> Vec<candle_coreml_hub::mock_hub::Request> {
    hub.requests().into_iter().filter(|r| r.is_file()).collect()
}

#[test]
fn fresh_download_uses_the_hf_layout_and_a_second_run_downloads_nothing() {
    let hub = MockHub::start(vec![fixture_repo()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let snapshot = download_repo(REPO, &options(&hub, cache.path())).unwrap();

    let repo_dir = cache.path().join("models--anemll--tiny-qwen3");
    assert_eq!(snapshot.dir, repo_dir.join("snapshots").join(COMMIT));
    assert_eq!(
        fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    assert_eq!(snapshot.files, needed_files());
    let mut transferred = snapshot.transferred.clone();
    transferred.sort();
    assert_eq!(transferred, needed_files());
    for file in needed_files() {
        let expected = fs::read(fixture().join(&file)).unwrap();
        assert_eq!(
            fs::read(snapshot.dir.join(&file)).unwrap(),
            expected,
            "{file}"
        );
    }
    for skipped in [
        "README.md",
        "chat.py",
        "tiny-qwen3_0.3.4.zip",
        "expected.json",
    ] {
        assert!(
            !snapshot.dir.join(skipped).exists(),
            "{skipped} should be skipped"
        );
    }
    // LFS files are stored under their sha256, and the snapshot entry is a link to the blob.
    let weights = fs::read(fixture().join(EMBED_WEIGHTS)).unwrap();
    let blob = repo_dir.join("blobs").join(sha256_hex(&weights));
    assert_eq!(fs::read(&blob).unwrap(), weights);
    #[cfg(unix)]
    assert!(fs::symlink_metadata(snapshot.dir.join(EMBED_WEIGHTS))
        .unwrap()
        .file_type()
        .is_symlink());
    let file_gets = file_requests(&hub).len();
    assert_eq!(file_gets, needed_files().len(), "one GET per needed file");

    hub.clear_requests();
    let again = download_repo(REPO, &options(&hub, cache.path())).unwrap();
    assert!(again.transferred.is_empty());
    assert_eq!(again.bytes_transferred, 0);
    assert!(
        file_requests(&hub).is_empty(),
        "second run fetched {:?}",
        file_requests(&hub)
    );
}

#[test]
fn a_cut_connection_is_resumed_with_a_range_request() {
    let hub = MockHub::start(vec![fixture_repo()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    hub.set_fault(REPO, EMBED_WEIGHTS, Fault::CutAfter(100_000));
    let err = download_repo(REPO, &options(&hub, cache.path())).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            HubError::Interrupted {
                received: 100_000,
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains(EMBED_WEIGHTS) && text.contains("resume"),
        "{text}"
    );
    let weights = fs::read(fixture().join(EMBED_WEIGHTS)).unwrap();
    let blobs = cache.path().join("models--anemll--tiny-qwen3/blobs");
    let partial = blobs.join(format!("{}.incomplete", sha256_hex(&weights)));
    assert_eq!(fs::metadata(&partial).unwrap().len(), 100_000);
    assert!(
        !blobs.join(sha256_hex(&weights)).exists(),
        "a partial file must never look complete"
    );
    let snapshot_dir = cache
        .path()
        .join("models--anemll--tiny-qwen3/snapshots")
        .join(COMMIT);
    assert!(!snapshot_dir.join(EMBED_WEIGHTS).exists());
    assert!(!cache
        .path()
        .join("models--anemll--tiny-qwen3/refs/main")
        .exists());

    hub.clear_requests();
    let snapshot = download_repo(REPO, &options(&hub, cache.path())).unwrap();
    assert_eq!(snapshot.transferred, vec![EMBED_WEIGHTS.to_string()]);
    assert_eq!(snapshot.bytes_transferred, weights.len() as u64 - 100_000);
    let requests = file_requests(&hub);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].range.as_deref(), Some("bytes=100000-"));
    assert_eq!(fs::read(snapshot.dir.join(EMBED_WEIGHTS)).unwrap(), weights);
    assert!(!partial.exists());
}

#[test]
fn retries_resume_within_one_run_and_a_server_ignoring_range_still_gives_the_right_file() {
    let hub = MockHub::start(vec![fixture_repo()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    hub.set_fault(REPO, HEAD_WEIGHTS, Fault::CutAfter(5_000));
    let mut opts = options(&hub, cache.path());
    opts.retries = 2;
    let snapshot = download_repo(REPO, &opts).unwrap();
    let weights = fs::read(fixture().join(HEAD_WEIGHTS)).unwrap();
    assert_eq!(fs::read(snapshot.dir.join(HEAD_WEIGHTS)).unwrap(), weights);
    assert!(file_requests(&hub)
        .iter()
        .any(|r| r.range.as_deref() == Some("bytes=5000-")));

    let cache = tempfile::tempdir().unwrap();
    hub.set_fault(REPO, HEAD_WEIGHTS, Fault::CutAfter(5_000));
    assert!(download_repo(REPO, &options(&hub, cache.path())).is_err());
    hub.set_fault(REPO, HEAD_WEIGHTS, Fault::IgnoreRange);
    let snapshot = download_repo(REPO, &options(&hub, cache.path())).unwrap();
    assert_eq!(fs::read(snapshot.dir.join(HEAD_WEIGHTS)).unwrap(), weights);
}

#[test]
fn a_corrupted_file_is_caught_by_its_sha256_and_deleted() {
    let hub = MockHub::start(vec![fixture_repo()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    hub.set_fault(REPO, HEAD_WEIGHTS, Fault::Corrupt);
    let err = download_repo(REPO, &options(&hub, cache.path())).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, HubError::Integrity { .. }), "{text}");
    let weights = fs::read(fixture().join(HEAD_WEIGHTS)).unwrap();
    assert!(
        text.contains(HEAD_WEIGHTS) && text.contains(&sha256_hex(&weights)),
        "{text}"
    );
    let repo_dir = cache.path().join("models--anemll--tiny-qwen3");
    assert!(!repo_dir.join("blobs").join(sha256_hex(&weights)).exists());
    assert!(!repo_dir
        .join("blobs")
        .join(format!("{}.incomplete", sha256_hex(&weights)))
        .exists());
    assert!(!repo_dir
        .join("snapshots")
        .join(COMMIT)
        .join(HEAD_WEIGHTS)
        .exists());
    // The other files were placed; once the server is fixed only the bad one is fetched.
    hub.clear_faults();
    hub.clear_requests();
    let snapshot = download_repo(REPO, &options(&hub, cache.path())).unwrap();
    assert_eq!(snapshot.transferred, vec![HEAD_WEIGHTS.to_string()]);
}

#[test]
fn http_errors_are_reported_clearly() {
    let private = MockRepo::new("org/private", COMMIT)
        .with_file("meta.yaml", b"model_info: {}\n".to_vec())
        .with_token("s3cret");
    let hub = MockHub::start(vec![fixture_repo(), private]).unwrap();
    let cache = tempfile::tempdir().unwrap();

    let err = download_repo("org/missing", &options(&hub, cache.path())).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, HubError::Http { status: 404, .. }), "{text}");
    assert!(
        text.contains("Repository not found")
            && text.contains("/api/models/org/missing/revision/main"),
        "{text}"
    );

    let mut opts = options(&hub, cache.path());
    opts.revision = Some("v9".into());
    let text = download_repo(REPO, &opts).unwrap_err().to_string();
    assert!(
        text.contains("404") && text.contains("Invalid rev id: v9"),
        "{text}"
    );

    let err = download_repo("org/private", &options(&hub, cache.path())).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, HubError::Http { status: 401, .. }) && text.contains("HF_TOKEN"),
        "{text}"
    );
    let mut opts = options(&hub, cache.path());
    opts.settings.token = Some("s3cret".into());
    hub.clear_requests();
    let snapshot = download_repo("org/private", &opts).unwrap();
    assert_eq!(
        fs::read_to_string(snapshot.dir.join("meta.yaml")).unwrap(),
        "model_info: {}\n"
    );
    let requests = hub.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer s3cret")));

    hub.set_fault(REPO, "meta.yaml", Fault::Status(503));
    let err = download_repo(REPO, &options(&hub, cache.path())).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, HubError::Http { status: 503, .. }), "{text}");
    assert!(
        text.contains("resolve") && text.contains("meta.yaml") && text.contains("try again later"),
        "{text}"
    );

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let opts = ResolveOptions {
        settings: HubSettings::new(format!("http://{closed}"), cache.path()),
        ..options(&hub, cache.path())
    };
    let err = download_repo(REPO, &opts).unwrap_err();
    assert!(matches!(err, HubError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn offline_mode_uses_the_cache_only_and_names_missing_files() {
    let hub = MockHub::start(vec![fixture_repo()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut offline = options(&hub, cache.path());
    offline.settings.offline = true;

    let err = resolve_model(REPO, &offline).unwrap_err();
    assert!(matches!(err, HubError::OfflineNotCached { .. }), "{err}");
    assert!(
        err.to_string().contains(REPO) && err.to_string().contains("main"),
        "{err}"
    );
    assert!(
        hub.requests().is_empty(),
        "offline mode must not touch the network"
    );

    let online = download_repo(REPO, &options(&hub, cache.path())).unwrap();
    hub.clear_requests();
    let dir = resolve_model(REPO, &offline).unwrap();
    assert_eq!(dir, online.dir);
    assert!(hub.requests().is_empty());
    let by_commit = cached_snapshot(REPO, COMMIT, &offline.settings).unwrap();
    assert_eq!(by_commit.dir, online.dir);

    fs::remove_file(online.dir.join(HEAD_WEIGHTS)).unwrap();
    fs::remove_file(online.dir.join("tokenizer.json")).unwrap();
    let err = resolve_model(REPO, &offline).unwrap_err();
    match &err {
        HubError::OfflineIncomplete { missing, .. } => {
            assert_eq!(
                missing,
                &vec![HEAD_WEIGHTS.to_string(), "tokenizer.json".to_string()]
            )
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains(HEAD_WEIGHTS), "{err}");
}

fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        writer
            .start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

#[test]
fn mlmodelc_zips_are_unpacked_next_to_themselves() {
    let mil = b"program(1.3)\n[buildInfo = dict<string, string>({})]\n{\n}\n";
    let weights = fs::read(fixture().join(EMBED_WEIGHTS)).unwrap();
    let archive = zip_bytes(&[
        ("qwen_embeddings.mlmodelc/model.mil", mil),
        ("qwen_embeddings.mlmodelc/weights/weight.bin", &weights),
    ]);
    let repo = MockRepo::new("org/zipped", COMMIT)
        .with_file("meta.yaml", b"model_info: {}\n".to_vec())
        .with_file("qwen_embeddings.mlmodelc.zip", archive);
    let hub = MockHub::start(vec![repo]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let snapshot = download_repo("org/zipped", &options(&hub, cache.path())).unwrap();
    let bundle = snapshot.dir.join("qwen_embeddings.mlmodelc");
    assert_eq!(fs::read(bundle.join("model.mil")).unwrap(), mil);
    assert_eq!(
        fs::read(bundle.join("weights/weight.bin")).unwrap(),
        weights
    );
}

#[test]
fn a_zip_with_parent_paths_is_refused() {
    let archive = zip_bytes(&[
        ("evil.mlmodelc/model.mil", b"program(1.3)\n"),
        ("../../../escaped.txt", b"gotcha"),
    ]);
    let repo = MockRepo::new("org/evil", COMMIT).with_file("evil.mlmodelc.zip", archive);
    let hub = MockHub::start(vec![repo]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = download_repo("org/evil", &options(&hub, cache.path())).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, HubError::Format(_)), "{text}");
    assert!(
        text.contains("evil.mlmodelc.zip") && text.contains(".."),
        "{text}"
    );
    let snapshot = cache
        .path()
        .join("models--org--evil/snapshots")
        .join(COMMIT);
    for dir in [
        snapshot.clone(),
        snapshot.join(".."),
        cache.path().join("models--org--evil"),
        cache.path().to_path_buf(),
    ] {
        assert!(
            !dir.join("escaped.txt").exists(),
            "escaped into {}",
            dir.display()
        );
    }
    assert!(!snapshot.join("evil.mlmodelc").exists());
}

#[test]
fn a_second_process_waits_for_the_repo_lock() {
    let hub = MockHub::start(vec![fixture_repo()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let lock_path = RepoLock::path_for(cache.path(), "models--anemll--tiny-qwen3");
    let held = RepoLock::acquire(&lock_path, Some(Duration::ZERO), || {}).unwrap();
    let mut opts = options(&hub, cache.path());
    opts.lock_timeout = Some(Duration::from_millis(300));
    let err = download_repo(REPO, &opts).unwrap_err();
    assert!(matches!(err, HubError::Locked { .. }), "{err}");
    assert!(file_requests(&hub).is_empty());
    drop(held);
    download_repo(REPO, &opts).unwrap();
}

#[test]
fn a_complete_partial_file_is_verified_and_kept_without_a_refetch() {
    let hub = MockHub::start(vec![fixture_repo()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let weights = fs::read(fixture().join(HEAD_WEIGHTS)).unwrap();
    let blobs = cache.path().join("models--anemll--tiny-qwen3/blobs");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(
        blobs.join(format!("{}.incomplete", sha256_hex(&weights))),
        &weights,
    )
    .unwrap();
    let snapshot = download_repo(REPO, &options(&hub, cache.path())).unwrap();
    assert_eq!(fs::read(snapshot.dir.join(HEAD_WEIGHTS)).unwrap(), weights);
    assert!(file_requests(&hub)
        .iter()
        .all(|r| !r.path.ends_with(HEAD_WEIGHTS)));
}

#[test]
fn an_unsafe_revision_is_refused_before_any_request() {
    let hub = MockHub::start(vec![fixture_repo()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(&hub, cache.path());
    opts.revision = Some("../../etc".into());
    let err = download_repo(REPO, &opts).unwrap_err();
    assert!(matches!(err, HubError::InvalidRevision { .. }), "{err}");
    assert!(hub.requests().is_empty());
}

#[test]
fn identical_files_share_one_blob_fetched_once() {
    let weights = fs::read(fixture().join(EMBED_WEIGHTS)).unwrap();
    let repo = MockRepo::new("org/twins", COMMIT)
        .with_file("meta.yaml", b"model_info: {}\n".to_vec())
        .with_file(
            "a.mlpackage/Data/com.apple.CoreML/weights/weight.bin",
            weights.clone(),
        )
        .with_file(
            "b.mlpackage/Data/com.apple.CoreML/weights/weight.bin",
            weights.clone(),
        );
    let hub = MockHub::start(vec![repo]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let snapshot = download_repo("org/twins", &options(&hub, cache.path())).unwrap();
    for part in ["a", "b"] {
        let path = snapshot.dir.join(format!(
            "{part}.mlpackage/Data/com.apple.CoreML/weights/weight.bin"
        ));
        assert_eq!(fs::read(path).unwrap(), weights);
    }
    assert_eq!(
        file_requests(&hub)
            .iter()
            .filter(|r| r.path.ends_with("weight.bin"))
            .count(),
        1
    );
    assert_eq!(
        snapshot.bytes_transferred,
        weights.len() as u64 + b"model_info: {}\n".len() as u64
    );
}
