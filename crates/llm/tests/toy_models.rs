//! Variants the converted fixtures do not cover, on tiny ANEMLL-shaped models built by tools/make_toy_anemll.py
//! (coremltools MIL builder) with greedy decodes computed by numpy in that script: a batch-1 model without
//! `prefill` and with an in-model argmax LM head, and a 0.3.5-style model with `update_mask` inputs and
//! embeddings that take one token per call. Both decodes run past the context and shift.

mod common;

use common::{ids, toy_set as set_dir};

use candle_coreml_llm::layout::{LmHeadOutputs, UpdateMaskShape};
use candle_coreml_llm::sampling::SamplingConfig;
use candle_coreml_llm::{AnemllModel, GenerationConfig, NextToken, TextModel};

fn expected(set: &str) -> serde_json::Value {
    common::expected_in(&set_dir(set))
}

fn check_decode(set: &str) {
    let exp = expected(set);
    let greedy_ids = ids(&exp["greedy_ids"]);
    let mut model = TextModel::load(set_dir(set)).unwrap();
    let config = GenerationConfig {
        max_new_tokens: greedy_ids.len(),
        ..GenerationConfig::default()
    };
    let out = model
        .generate_ids(&ids(&exp["prompt_ids"]), &config, &mut |_| {})
        .unwrap();
    assert_eq!(out.token_ids, greedy_ids, "{set}");
    assert_eq!(
        out.timings.context_shifts as u64,
        exp["context_shifts"].as_u64().unwrap(),
        "{set}"
    );
    let words: Vec<String> = greedy_ids.iter().map(|t| format!("t{t}")).collect();
    assert_eq!(out.text, words.join(" "), "{set}");
}

#[test]
fn batch_one_model_with_in_model_argmax() {
    let set = "toy-b1-argmax";
    let model = AnemllModel::load(set_dir(set)).unwrap();
    let layout = model.layout();
    assert!(!layout.has_prefill);
    assert_eq!(layout.batch_size, 1);
    assert_eq!(
        layout.lm_head,
        LmHeadOutputs::Argmax {
            offsets: vec![0, 17, 34]
        }
    );
    assert!(layout.warnings.is_empty(), "{:?}", layout.warnings);
    check_decode(set);

    // No logits to sample from: only greedy decoding works, and asking for logits is an error.
    let mut model = AnemllModel::load(set_dir(set)).unwrap();
    let prompt = ids(&expected(set)["prompt_ids"]);
    assert_eq!(
        model.next_token(&prompt).unwrap(),
        NextToken::Argmax(ids(&expected(set)["greedy_ids"])[0])
    );
    assert!(model.logits_for_next_token(&prompt).is_err());
    assert!(model.set_batched_prefill(true).is_err());
    let mut text_model = TextModel::load(set_dir(set)).unwrap();
    let sampled = GenerationConfig {
        sampling: SamplingConfig {
            temperature: 0.7,
            ..SamplingConfig::default()
        },
        ..GenerationConfig::default()
    };
    let err = text_model
        .generate_ids(&prompt, &sampled, &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("greedy"), "{err}");
}

#[test]
fn update_mask_model_prefills_full_batches_and_embeds_token_by_token() {
    let set = "toy-update-mask";
    let model = AnemllModel::load(set_dir(set)).unwrap();
    let layout = model.layout();
    assert!(layout.has_prefill && !layout.embeddings_accept_batch);
    assert_eq!(layout.batch_size, 4);
    assert_eq!(
        layout.infer_update_mask,
        Some(UpdateMaskShape {
            shape: vec![1, 1, 16, 1]
        })
    );
    assert_eq!(
        layout.prefill_update_mask,
        Some(UpdateMaskShape {
            shape: vec![1, 1, 16, 4]
        })
    );
    match &layout.lm_head {
        LmHeadOutputs::Logits { names, sizes } => {
            assert_eq!(names, &["logits1", "logits2", "logits3"]);
            assert_eq!(sizes, &[Some(17), Some(17), Some(16)]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(layout.vocab_size, Some(50));
    check_decode(set);
}
