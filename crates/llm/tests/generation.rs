//! The generation API on the fixture sets: greedy text against expected.json, stop tokens and strings, context
//! overflow, and KV-prefix reuse across chat turns compared with fresh prefills.

mod common;

use common::{anemll_set as set_dir, ids};

use candle_coreml_llm::sampling::{argmax, SamplingConfig};
use candle_coreml_llm::{AnemllModel, GenerationConfig, Message, StopReason, TextModel};

const SETS: [&str; 3] = [
    "qwen3-tiny-fp16-c1",
    "qwen3-tiny-lut6-c2",
    "llama-tiny-fp16-c2",
];

fn expected(set: &str) -> serde_json::Value {
    common::expected_in(&set_dir(set))
}

fn greedy(max_new_tokens: usize) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens,
        ..GenerationConfig::default()
    }
}

#[test]
fn greedy_generation_reproduces_expected_ids_and_text() {
    for set in SETS {
        let exp = expected(set);
        let mut model = TextModel::load(set_dir(set)).unwrap();
        let mut streamed = String::new();
        let out = model
            .generate_ids(&ids(&exp["prompt"]["ids"]), &greedy(24), &mut |t| {
                streamed.push_str(t)
            })
            .unwrap();
        assert_eq!(out.token_ids, ids(&exp["decode"]["greedy_ids"]), "{set}");
        assert_eq!(
            out.text,
            exp["decode"]["greedy_text"].as_str().unwrap(),
            "{set}"
        );
        assert_eq!(streamed, out.text, "{set}");
        assert_eq!(out.stop_reason, StopReason::MaxTokens);
        assert_eq!(
            out.timings.prompt_tokens,
            exp["prompt"]["length"].as_u64().unwrap() as usize
        );
        // Prefill of the whole prompt plus the re-run of its last token.
        assert_eq!(
            out.timings.prefilled_tokens,
            out.timings.prompt_tokens + 1,
            "{set}"
        );
        assert_eq!(out.timings.generated_tokens, 24);
    }
}

#[test]
fn chat_applies_the_template_like_transformers() {
    let set = "qwen3-tiny-fp16-c1";
    let exp = expected(set);
    let mut model = TextModel::load(set_dir(set)).unwrap();
    let config = GenerationConfig {
        enable_thinking: Some(false),
        ..greedy(24)
    };
    let out = model
        .chat(
            &[Message::user(
                exp["prompt"]["user_message"].as_str().unwrap(),
            )],
            &config,
        )
        .unwrap();
    assert_eq!(out.prompt_ids, ids(&exp["prompt"]["ids"]));
    assert_eq!(out.token_ids, ids(&exp["decode"]["greedy_ids"]));
}

#[test]
fn stop_tokens_and_stop_strings_end_generation() {
    let set = "llama-tiny-fp16-c2";
    let exp = expected(set);
    let prompt = ids(&exp["prompt"]["ids"]);
    let greedy_ids = ids(&exp["decode"]["greedy_ids"]);
    let mut model = TextModel::load(set_dir(set)).unwrap();

    // A stop token: generation ends before it, and it is not part of the output.
    let mut tokenizer = candle_coreml_llm::TextTokenizer::from_dir(set_dir(set)).unwrap();
    tokenizer.add_stop_token(greedy_ids[5]);
    let first_stop = greedy_ids.iter().position(|t| *t == greedy_ids[5]).unwrap();
    let mut with_stop = TextModel::new(AnemllModel::load(set_dir(set)).unwrap(), tokenizer);
    let out = with_stop
        .generate_ids(&prompt, &greedy(24), &mut |_| {})
        .unwrap();
    assert_eq!(out.stop_reason, StopReason::StopToken(greedy_ids[5]));
    assert_eq!(out.token_ids, greedy_ids[..first_stop]);

    // A stop string taken from the middle of the reference text: the text ends right before it.
    let text = exp["decode"]["greedy_text"].as_str().unwrap();
    let cut = text.char_indices().nth(text.chars().count() / 2).unwrap().0;
    let stop: String = text[cut..].chars().take(3).collect();
    let before = &text[..text.find(&stop).unwrap()];
    let config = GenerationConfig {
        stop_strings: vec![stop.clone()],
        ..greedy(24)
    };
    let mut streamed = String::new();
    let out = model
        .generate_ids(&prompt, &config, &mut |t| streamed.push_str(t))
        .unwrap();
    assert_eq!(out.stop_reason, StopReason::StopString(stop));
    assert_eq!(out.text, before);
    assert_eq!(streamed, before);
    assert!(out.token_ids.len() < 24);
    assert_eq!(out.token_ids, greedy_ids[..out.token_ids.len()]);
}

#[test]
fn generation_past_the_context_shifts_and_continues_like_a_fresh_prefill() {
    let set = "qwen3-tiny-fp16-c1";
    let exp = expected(set);
    let base = ids(&exp["prompt"]["ids"]);
    let mut model = TextModel::load(set_dir(set)).unwrap();
    let context = model.model().context_length();
    let batch = model.model().layout().batch_size;
    // A prompt a few tokens short of the shift point (C - 2).
    let prompt: Vec<u32> = base.iter().cycle().take(context - 8).copied().collect();
    let steps = 20;
    let out = model
        .generate_ids(&prompt, &greedy(steps), &mut |_| {})
        .unwrap();
    assert_eq!(out.token_ids.len(), steps);
    assert_eq!(out.timings.context_shifts, 1);

    // Reference: the chat_full.py rule (shift at C - 2, keep the last min(max(1, C/B - 2) * B, C - B)), with every
    // step computed from a zero state.
    let keep = ((context / batch).saturating_sub(2).max(1) * batch).min(context - batch);
    let mut reference = AnemllModel::load(set_dir(set)).unwrap();
    let mut window = prompt.clone();
    let mut want = Vec::new();
    for _ in 0..steps {
        if window.len() >= context - 2 {
            window.drain(..window.len() - keep);
        }
        reference.reset().unwrap();
        let next = argmax(&reference.logits_for_next_token(&window).unwrap()).unwrap();
        want.push(next);
        window.push(next);
    }
    assert_eq!(out.token_ids, want);
}

#[test]
fn a_prompt_longer_than_the_context_keeps_its_end() {
    let set = "llama-tiny-fp16-c2";
    let exp = expected(set);
    let base = ids(&exp["prompt"]["ids"]);
    let mut model = TextModel::load(set_dir(set)).unwrap();
    let context = model.model().context_length();
    let batch = model.model().layout().batch_size;
    let prompt: Vec<u32> = base.iter().cycle().take(context + 40).copied().collect();
    let out = model
        .generate_ids(&prompt, &greedy(4), &mut |_| {})
        .unwrap();
    assert_eq!(out.timings.context_shifts, 1);
    assert_eq!(out.prompt_ids, prompt);
    let keep = ((context / batch).saturating_sub(2).max(1) * batch).min(context - batch);
    let mut reference = AnemllModel::load(set_dir(set)).unwrap();
    let mut window = prompt[prompt.len() - keep..].to_vec();
    for &token in &out.token_ids {
        assert_eq!(
            argmax(&reference.logits_for_next_token(&window).unwrap()).unwrap(),
            token
        );
        window.push(token);
    }
}

#[test]
fn chat_turns_reuse_the_kv_prefix_and_match_a_fresh_prefill() {
    for set in SETS {
        let config = GenerationConfig {
            enable_thinking: Some(false),
            stop_at_eos: false,
            ..greedy(12)
        };
        let mut chat = TextModel::load(set_dir(set)).unwrap();
        let mut messages = vec![
            Message::system("Answer briefly."),
            Message::user("Which licenses disclaim warranties, and how?"),
        ];
        let first = chat.chat(&messages, &config).unwrap();
        messages.push(Message::assistant(first.text.clone()));
        messages.push(Message::user(
            "And which of those is the strictest about liability?",
        ));
        let second = chat.chat(&messages, &config).unwrap();
        assert!(
            second.timings.prefilled_tokens < second.timings.prompt_tokens,
            "{set}: turn 2 computed {} of {} prompt tokens",
            second.timings.prefilled_tokens,
            second.timings.prompt_tokens
        );

        let mut fresh = TextModel::load(set_dir(set)).unwrap();
        let reference = fresh.chat(&messages, &config).unwrap();
        assert_eq!(second.prompt_ids, reference.prompt_ids, "{set}");
        assert_eq!(second.token_ids, reference.token_ids, "{set}");
        assert_eq!(
            reference.timings.prefilled_tokens,
            reference.timings.prompt_tokens + 1
        );

        // The logits themselves agree, not only their argmax.
        let prompt = &reference.prompt_ids;
        let mut reused = AnemllModel::load(set_dir(set)).unwrap();
        reused
            .logits_for_next_token(&prompt[..prompt.len() / 2 + 3])
            .unwrap();
        let a = reused.logits_for_next_token(prompt).unwrap();
        let mut fresh_model = AnemllModel::load(set_dir(set)).unwrap();
        let b = fresh_model.logits_for_next_token(prompt).unwrap();
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-3, "{set}: {diff}");
    }
}

#[test]
fn seeded_sampling_is_reproducible_through_the_model() {
    let set = "qwen3-tiny-lut6-c2";
    let exp = expected(set);
    let prompt = ids(&exp["prompt"]["ids"]);
    let config = GenerationConfig {
        sampling: SamplingConfig {
            temperature: 0.9,
            top_k: Some(40),
            top_p: Some(0.95),
            seed: Some(1234),
            ..SamplingConfig::default()
        },
        stop_at_eos: false,
        ..greedy(16)
    };
    let mut model = TextModel::load(set_dir(set)).unwrap();
    let a = model.generate_ids(&prompt, &config, &mut |_| {}).unwrap();
    let b = model.generate_ids(&prompt, &config, &mut |_| {}).unwrap();
    assert_eq!(a.token_ids, b.token_ids);
    assert_eq!(a.seed, 1234);
    // Temperature 0.9 on random-weight logits departs from the greedy path.
    assert_ne!(a.token_ids, ids(&exp["decode"]["greedy_ids"])[..16]);
}

#[test]
fn the_old_convenience_api_continues_raw_text() {
    // The Qwen tokenizer adds no special tokens to raw text, so the templated prompt text encodes to the
    // reference prompt ids and the greedy continuation is the reference one.
    let set = "qwen3-tiny-fp16-c1";
    let exp = expected(set);
    let prompt = exp["prompt"]["text"].as_str().unwrap();
    let mut model: candle_coreml_llm::QwenModel = TextModel::load(set_dir(set)).unwrap();
    assert_eq!(
        model.complete_text(prompt, 24).unwrap(),
        exp["decode"]["greedy_text"].as_str().unwrap()
    );
    assert_eq!(
        model
            .generate_tokens_topk_temp(prompt, 24, 0.0, None)
            .unwrap(),
        ids(&exp["decode"]["greedy_ids"])
    );
    let sampled = model
        .generate_tokens_topk_temp(prompt, 8, 1.0, Some(1))
        .unwrap();
    // Top-1 sampling is greedy whatever the temperature.
    assert_eq!(sampled, ids(&exp["decode"]["greedy_ids"])[..8]);
}
