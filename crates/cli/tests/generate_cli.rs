//! `candle-coreml generate` and `chat` on a fixture set, checked against its expected.json.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn set_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/anemll/qwen3-tiny-fp16-c1"
    ))
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(set_dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn generate_json_reproduces_the_greedy_reference() {
    let exp = expected();
    let out = Command::new(env!("CARGO_BIN_EXE_candle-coreml"))
        .arg("generate")
        .arg("--model")
        .arg(set_dir())
        .args(["--prompt", exp["prompt"]["user_message"].as_str().unwrap()])
        .args(["-n", "24", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["prompt_ids"], exp["prompt"]["ids"]);
    assert_eq!(json["generated_ids"], exp["decode"]["greedy_ids"]);
    assert_eq!(json["text"], exp["decode"]["greedy_text"]);
    assert_eq!(json["stop_reason"], "max_tokens");
    assert_eq!(json["timings"]["generated_tokens"], 24);
}

#[test]
fn generate_streams_text_and_rejects_bad_settings() {
    let exp = expected();
    let out = Command::new(env!("CARGO_BIN_EXE_candle-coreml"))
        .arg("generate")
        .arg("--model")
        .arg(set_dir())
        .args([
            "--prompt",
            exp["prompt"]["user_message"].as_str().unwrap(),
            "-n",
            "24",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim_end_matches('\n'),
        exp["decode"]["greedy_text"].as_str().unwrap()
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("tok/s"));

    let out = Command::new(env!("CARGO_BIN_EXE_candle-coreml"))
        .arg("generate")
        .arg("--model")
        .arg(set_dir())
        .args(["--prompt", "x", "--temperature", "-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("temperature"));
}

#[test]
fn chat_answers_each_line_and_handles_commands() {
    let exp = expected();
    let mut child = Command::new(env!("CARGO_BIN_EXE_candle-coreml"))
        .arg("chat")
        .arg("--model")
        .arg(set_dir())
        .args(["-n", "24"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let message = exp["prompt"]["user_message"].as_str().unwrap();
    let input = format!("{message}\n/reset\n{message}\n/exit\nnot read\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let reply = exp["decode"]["greedy_text"].as_str().unwrap();
    // The same first turn twice (the conversation was reset in between), nothing after /exit.
    assert_eq!(stdout, format!("{reply}\n{reply}\n"));
}
