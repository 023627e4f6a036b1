//! `candle-coreml bench` on a fixture set: the report has every field, the op profile included (timing values
//! are not checked), and the greedy tokens are the same in every repetition; impossible requests are refused.

use std::path::PathBuf;
use std::process::Command;

fn set_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/anemll/qwen3-tiny-fp16-c1"
    ))
}

#[test]
fn bench_reports_every_field() {
    let out = Command::new(env!("CARGO_BIN_EXE_candle-coreml"))
        .arg("bench")
        .arg("--model")
        .arg(set_dir())
        .args([
            "--prompt-len",
            "40",
            "--gen-len",
            "4",
            "--repeats",
            "2",
            "--threads",
            "1",
            "--profile-ops",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    for field in [
        "model: ",
        "threads: 1",
        "prompt_tokens: 40, generated_tokens: 5, repeats: 2 (+1 warm-up)",
        "load_time: ",
        "peak_resident_memory: ",
        "resident_memory_after_decode: ",
        "time_to_first_token: ",
        "prefill: ",
        "decode: ",
        "greedy_tokens: ",
        "op profile, prompt + first token: ",
        "op profile, decode: ",
        "  conv ",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(field)),
            "no line starting with {field:?} in:\n{stdout}"
        );
    }
    let tokens = stdout
        .lines()
        .find_map(|l| l.strip_prefix("greedy_tokens: "))
        .unwrap();
    assert_eq!(tokens.split(' ').count(), 5);
}

#[test]
fn bench_refuses_a_prompt_longer_than_the_context() {
    let out = Command::new(env!("CARGO_BIN_EXE_candle-coreml"))
        .arg("bench")
        .arg("--model")
        .arg(set_dir())
        .args(["--prompt-len", "256", "--gen-len", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("do not fit the context length 256"),
        "{stderr}"
    );
}
