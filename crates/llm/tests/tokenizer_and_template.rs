//! Chat templates and tokenisation against references made by transformers: the fixtures' `expected.json`
//! prompts and `tests/data/chat_templates.json` (tools/render_chat_templates.py).

mod common;

use std::path::PathBuf;

use common::{anemll_fixtures as fixtures, ids as ids_of};

use candle_coreml_llm::{ChatTemplateOptions, IncrementalDecoder, Message, TextTokenizer};

fn sets() -> Vec<PathBuf> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.json").is_file())
        .collect();
    sets.sort();
    assert!(sets.len() >= 3, "fixture sets missing: {sets:?}");
    sets
}

fn read_json(path: PathBuf) -> serde_json::Value {
    common::read_json(&path)
}

fn options_from(kwargs: &serde_json::Value) -> ChatTemplateOptions {
    let mut options = ChatTemplateOptions::default();
    for (key, value) in kwargs.as_object().unwrap() {
        match key.as_str() {
            "add_generation_prompt" => options.add_generation_prompt = value.as_bool().unwrap(),
            "enable_thinking" => options.enable_thinking = value.as_bool(),
            _ => {
                options.extra.insert(key.clone(), value.clone());
            }
        }
    }
    options
}

#[test]
fn expected_prompts_are_reproduced() {
    for set in sets() {
        let expected = read_json(set.join("expected.json"));
        let prompt = &expected["prompt"];
        let tokenizer = TextTokenizer::from_dir(&set).unwrap();
        let messages = [Message::user(prompt["user_message"].as_str().unwrap())];
        let text = tokenizer
            .apply_chat_template(&messages, &options_from(&prompt["chat_template_kwargs"]))
            .unwrap();
        assert_eq!(text, prompt["text"].as_str().unwrap(), "{}", set.display());
        let ids = tokenizer.encode(&text, false).unwrap();
        assert_eq!(ids, ids_of(&prompt["ids"]), "{}", set.display());
    }
}

#[test]
fn multi_turn_conversations_match_transformers() {
    let data = read_json(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/chat_templates.json"
    )));
    let cases = data["cases"].as_array().unwrap();
    assert!(cases.len() >= 9);
    for case in cases {
        let set = fixtures().join(case["set"].as_str().unwrap());
        let tokenizer = TextTokenizer::from_dir(&set).unwrap();
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let text = tokenizer
            .apply_chat_template(&messages, &options_from(&case["kwargs"]))
            .unwrap();
        let label = format!(
            "{} {} {}",
            case["set"], case["conversation"], case["kwargs"]
        );
        assert_eq!(text, case["text"].as_str().unwrap(), "{label}");
        assert_eq!(
            tokenizer.encode(&text, false).unwrap(),
            ids_of(&case["ids"]),
            "{label}"
        );
    }
}

#[test]
fn stop_tokens_come_from_the_config_and_the_vocabulary() {
    let qwen = TextTokenizer::from_dir(fixtures().join("qwen3-tiny-fp16-c1")).unwrap();
    let im_end = qwen.token_to_id("<|im_end|>").unwrap();
    let endoftext = qwen.token_to_id("<|endoftext|>").unwrap();
    assert_eq!(qwen.stop_tokens().iter().copied().collect::<Vec<_>>(), {
        let mut v = vec![im_end, endoftext];
        v.sort();
        v
    });
    let llama = TextTokenizer::from_dir(fixtures().join("llama-tiny-fp16-c2")).unwrap();
    let eot = llama.token_to_id("<|eot_id|>").unwrap();
    assert!(llama.stop_tokens().contains(&eot));
    // `<|begin_of_text|>` is a special token but not an end of reply.
    let bos = llama.token_to_id("<|begin_of_text|>").unwrap();
    assert!(!llama.stop_tokens().contains(&bos));
}

#[test]
fn incremental_decoding_never_splits_a_character() {
    for set in sets() {
        let tokenizer = TextTokenizer::from_dir(&set).unwrap();
        let text = "naïve café ☕ and 🎉🎉 — 日本語のテキスト, done.";
        let ids = tokenizer.encode(text, false).unwrap();
        // Byte-level vocabularies this small split these characters over several tokens.
        assert!(ids.len() > text.chars().count() / 2, "{}", set.display());
        let mut decoder = IncrementalDecoder::new();
        let mut pieces = Vec::new();
        for &id in &ids {
            if let Some(piece) = decoder.push(&tokenizer, id).unwrap() {
                assert!(!piece.contains('\u{FFFD}'), "{}: {piece:?}", set.display());
                pieces.push(piece);
            }
        }
        if let Some(rest) = decoder.finish(&tokenizer).unwrap() {
            pieces.push(rest);
        }
        assert_eq!(
            pieces.concat(),
            tokenizer.decode(&ids, true).unwrap(),
            "{}",
            set.display()
        );
        assert_eq!(pieces.concat(), text, "{}", set.display());
        assert!(pieces.len() > 5);
    }
}

#[test]
fn a_template_that_does_not_compile_only_fails_when_used() {
    let set = fixtures().join("qwen3-tiny-fp16-c1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        set.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let config = serde_json::json!({
        "eos_token": "<|im_end|>",
        "chat_template": "{% for m in messages %}{{ m.content }{% endfor %}",
    });
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let tokenizer = TextTokenizer::from_dir(dir.path()).unwrap();
    assert!(tokenizer.chat_template().is_none());
    assert!(tokenizer.chat_template_error().is_some());
    assert!(!tokenizer.encode("plain text", false).unwrap().is_empty());
    let err = tokenizer
        .apply_chat_template(&[Message::user("hi")], &ChatTemplateOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be compiled"), "{err}");
    assert!(tokenizer
        .stop_tokens()
        .contains(&tokenizer.token_to_id("<|im_end|>").unwrap()));
}
