//! `download`, `cache` and `config` subcommands, and `generate`/`chat` with hub repo ids and ModelConfig files,
//! against a loopback mock hub and temporary cache roots.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use candle_coreml_hub::mock_hub::{MockHub, MockRepo};
use candle_coreml_hub::ModelConfig;

const REPO: &str = "anemll/tiny-qwen3";
const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn set_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/anemll/qwen3-tiny-fp16-c1"
    ))
}

fn seed_config() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../hub/tests/data/seed-qwen3-tiny-fp16-c1.json"
    ))
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(set_dir().join("expected.json")).unwrap()).unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        fs::copy(from, to).unwrap();
    }
}

/// The set's parts and tokenizer (no meta.yaml) with a second fixture model's parts beside them.
fn ambiguous_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let decoy = set_dir().with_file_name("llama-tiny-fp16-c2");
    for (set, keep_support_files) in [(set_dir(), true), (decoy, false)] {
        for entry in fs::read_dir(set).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_part = name.ends_with(".mlpackage");
            if name == "meta.yaml" || name == "expected.json" || !(is_part || keep_support_files) {
                continue;
            }
            copy_tree(&entry.path(), &dir.path().join(&name));
        }
    }
    dir
}

fn cli(hub: &MockHub, cache: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_candle-coreml"));
    command
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HUB_CACHE", cache)
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN");
    command
}

#[test]
fn download_prints_the_snapshot_and_a_second_run_fetches_nothing() {
    let hub = MockHub::start(vec![MockRepo::from_dir(REPO, COMMIT, &set_dir()).unwrap()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = cli(&hub, cache.path())
        .args(["download", REPO, "--no-progress"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert_eq!(
        dir,
        cache
            .path()
            .join("models--anemll--tiny-qwen3/snapshots")
            .join(COMMIT)
    );
    assert_eq!(
        fs::read(dir.join("meta.yaml")).unwrap(),
        fs::read(set_dir().join("meta.yaml")).unwrap()
    );
    hub.clear_requests();
    let out = cli(&hub, cache.path())
        .args(["download", REPO, "--no-progress"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("up to date"));
    assert!(hub.requests().iter().all(|r| !r.is_file()));

    let offline = cli(&hub, cache.path())
        .env("HF_HUB_OFFLINE", "1")
        .args(["download", "org/absent", "--no-progress"])
        .output()
        .unwrap();
    assert!(!offline.status.success());
    assert!(String::from_utf8_lossy(&offline.stderr).contains("offline mode"));
}

#[test]
fn cache_clean_dry_run_lists_exactly_the_planted_dirs_and_deletes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let planted = [
        root.path().join("com.apple.e5rt.e5bundlecache"),
        root.path()
            .join("com.example.app/com.apple.e5rt.e5bundlecache"),
        root.path().join("candle-coreml/compiled/part.mlmodelc"),
    ];
    for dir in &planted {
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/data.bin"), [7u8; 64]).unwrap();
    }
    fs::create_dir_all(root.path().join("com.example.other")).unwrap();
    fs::write(root.path().join("com.example.other/keep.db"), b"keep").unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_candle-coreml"))
        .args(["cache", "clean", "--dry-run", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut listed: Vec<PathBuf> = stdout
        .lines()
        .filter_map(|l| l.split("  ").last())
        .map(|p| PathBuf::from(p.trim()))
        .collect();
    listed.sort();
    let mut expected = planted.to_vec();
    expected.sort();
    assert_eq!(listed, expected, "{stdout}");
    for dir in &planted {
        assert!(dir.join("sub/data.bin").exists());
    }

    let out = Command::new(env!("CARGO_BIN_EXE_candle-coreml"))
        .args(["cache", "clean", "--kind", "coreml", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!planted[0].exists() && !planted[1].exists());
    assert!(planted[2].exists(), "--kind coreml keeps our own cache");
    assert!(root.path().join("com.example.other/keep.db").exists());
}

#[test]
fn config_writes_a_file_that_loads_back_to_the_generated_config() {
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("model_config.json");
    let out = Command::new(env!("CARGO_BIN_EXE_candle-coreml"))
        .arg("config")
        .arg(set_dir())
        .arg("-o")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loaded = ModelConfig::load(&file).unwrap();
    assert_eq!(loaded, ModelConfig::generate(set_dir(), None).unwrap());
    assert_eq!(loaded.shapes.vocab_size, 3072);

    let check = Command::new(env!("CARGO_BIN_EXE_candle-coreml"))
        .args(["config", "--check"])
        .arg(&file)
        .arg(set_dir())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn a_downloaded_snapshot_generates_the_reference_tokens() {
    let hub = MockHub::start(vec![MockRepo::from_dir(REPO, COMMIT, &set_dir()).unwrap()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = cli(&hub, cache.path())
        .args(["download", REPO, "--no-progress"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let expected: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(set_dir().join("expected.json")).unwrap())
            .unwrap();
    let out = cli(&hub, cache.path())
        .env("HF_HUB_OFFLINE", "1")
        .args(["generate", "--model", &dir, "--prompt"])
        .arg(expected["prompt"]["user_message"].as_str().unwrap())
        .args(["-n", "24", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["generated_ids"], expected["decode"]["greedy_ids"]);
}

#[test]
fn generate_takes_a_repo_id_and_a_revision() {
    let hub = MockHub::start(vec![MockRepo::from_dir(REPO, COMMIT, &set_dir()).unwrap()]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let expected = expected();
    let prompt = expected["prompt"]["user_message"].as_str().unwrap();
    let out = cli(&hub, cache.path())
        .args(["generate", "--model", REPO, "--prompt", prompt])
        .args(["-n", "24", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["prompt_ids"], expected["prompt"]["ids"]);
    assert_eq!(json["generated_ids"], expected["decode"]["greedy_ids"]);
    assert!(cache
        .path()
        .join("models--anemll--tiny-qwen3/snapshots")
        .join(COMMIT)
        .join("meta.yaml")
        .is_file());

    // The pinned commit is served from the cache without the hub.
    hub.clear_requests();
    let out = cli(&hub, cache.path())
        .env("HF_HUB_OFFLINE", "1")
        .args(["generate", "--model", REPO, "--revision", COMMIT])
        .args(["--prompt", prompt, "-n", "24", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["generated_ids"], expected["decode"]["greedy_ids"]);
    assert!(hub.requests().is_empty());

    let out = cli(&hub, cache.path())
        .args(["generate", "--model", REPO, "--revision", "no-such-branch"])
        .args(["--prompt", prompt, "-n", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(REPO) && stderr.contains("no-such-branch"),
        "{stderr}"
    );
}

#[test]
fn generate_and_chat_find_the_parts_through_a_model_config() {
    let hub = MockHub::start(Vec::new()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let dir = ambiguous_dir();
    let expected = expected();
    let prompt = expected["prompt"]["user_message"].as_str().unwrap();

    // Two models' parts side by side: file names and descriptions cannot tell them apart.
    let out = cli(&hub, cache.path())
        .arg("generate")
        .arg("--model")
        .arg(dir.path())
        .args(["--prompt", prompt, "-n", "24"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("embeddings"));

    let out = cli(&hub, cache.path())
        .arg("generate")
        .arg("--model")
        .arg(dir.path())
        .arg("--config")
        .arg(seed_config())
        .args(["--prompt", prompt, "-n", "24", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["generated_ids"], expected["decode"]["greedy_ids"]);

    let mut child = cli(&hub, cache.path())
        .arg("chat")
        .arg("--model")
        .arg(dir.path())
        .arg("--config")
        .arg(seed_config())
        .args(["-n", "24"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{prompt}\n/exit\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", expected["decode"]["greedy_text"].as_str().unwrap())
    );

    // A config whose prefill and infer are separate files is refused.
    let mut split = ModelConfig::load(seed_config()).unwrap();
    split.ffn_execution = Some("split".to_string());
    let split_file = cache.path().join("split.json");
    split.save(&split_file).unwrap();
    let out = cli(&hub, cache.path())
        .arg("generate")
        .arg("--model")
        .arg(dir.path())
        .arg("--config")
        .arg(&split_file)
        .args(["--prompt", prompt, "-n", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("multifunction"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
