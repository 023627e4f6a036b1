//! The ANEMLL LLM sets of `fixtures/anemll/`, driven exactly as the reference loop of `fixtures/README.md` §1.4
//! (prefill in right-padded batches, re-run the last prompt token through `infer`, 24 greedy decode steps), must
//! reproduce `expected.json`: every greedy token, and logits within the stated tolerance.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_coreml_runtime::{CoreMLModel, ModelState};
use common::{fixture, max_abs_diff, read_json, values};
use serde_json::Value;

struct Chunk {
    infer: CoreMLModel,
    prefill: CoreMLModel,
}

fn output<'a>(outs: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &outs
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no output `{name}`"))
        .1
}

/// Rows `start..start+rows` of the causal mask [C, C] (0 where column <= row, -inf elsewhere) as [1, 1, rows, C].
fn mask_rows(context: usize, start: usize, rows: usize) -> Tensor {
    let mut m = Vec::with_capacity(rows * context);
    for i in start..start + rows {
        for j in 0..context {
            m.push(if j <= i { 0f32 } else { f32::NEG_INFINITY });
        }
    }
    Tensor::from_vec(m, (1, 1, rows, context), &Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F16))
        .unwrap()
}

fn i32s(v: &[i64], shape: &[usize]) -> Tensor {
    let v: Vec<i32> = v.iter().map(|&x| x as i32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn run_set(set: &str) {
    let dir = fixture(&format!("anemll/{set}"));
    let expected = read_json(&dir.join("expected.json"));
    let conv = &expected["conversion"];
    let context = conv["context_length"].as_u64().unwrap() as usize;
    let batch = conv["batch_size"].as_u64().unwrap() as usize;
    let files: Vec<&str> = conv["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let find = |tag: &str| -> Vec<&str> {
        let mut v: Vec<&str> = files
            .iter()
            .copied()
            .filter(|f| f.contains(tag) && f.ends_with(".mlpackage"))
            .collect();
        v.sort_unstable();
        v
    };
    let embeddings = CoreMLModel::load(dir.join(find("_embeddings")[0])).unwrap();
    let lm_head = CoreMLModel::load(dir.join(find("_lm_head")[0])).unwrap();
    let chunks: Vec<Chunk> = find("_FFN_PF")
        .iter()
        .map(|f| {
            let infer = CoreMLModel::load(dir.join(f)).unwrap();
            assert_eq!(infer.function_name(), "infer");
            let prefill = infer.with_function("prefill").unwrap();
            Chunk { infer, prefill }
        })
        .collect();
    assert_eq!(chunks.len(), conv["num_chunks"].as_u64().unwrap() as usize);
    for chunk in &chunks {
        // The GQA `expand_dims -> tile -> reshape -> matmul` chains (K^T and V) run without repeating the KV heads,
        // so the greedy tokens checked below also check that path.
        assert!(
            chunk.infer.plan().fused_repeated_kv() > 0,
            "{set}: GQA matmuls read the KV heads without tiling them"
        );
        // The Qwen attention products skip the KV positions the causal mask closes (in the Llama set the chain
        // around the softmax is not the `softmax(add(mul(scores, scale), mask))` that is fused).
        if set.starts_with("qwen3") {
            assert!(
                chunk.infer.plan().masked_kv_products() > 0,
                "{set}: masked KV positions are skipped"
            );
        }
        // Projection weights (palettised or fp16) stay in the matrix kernels' layout, so the tokens below also
        // check those kernels.
        assert!(
            chunk.infer.plan().packed_weights() > 0,
            "{set}: packed FFN weights"
        );
        assert!(
            chunk.prefill.plan().packed_weights() > 0,
            "{set}: packed FFN weights"
        );
    }
    assert!(lm_head.plan().packed_weights() > 0, "{set}: packed LM head");
    let mut state: ModelState = chunks[0].prefill.make_state().unwrap();
    let mut ids: Vec<i64> = expected["prompt"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let prompt_len = ids.len();

    // Prefill.
    let mut prefill_calls = 0;
    for p in (0..prompt_len).step_by(batch) {
        let mut tokens: Vec<i64> = ids[p..prompt_len.min(p + batch)].to_vec();
        tokens.resize(batch, 0);
        let input_ids = i32s(&tokens, &[1, batch]);
        let mut hidden = output(
            &embeddings.predict(&[("input_ids", &input_ids)]).unwrap(),
            "hidden_states",
        )
        .clone();
        let positions: Vec<i64> = (p as i64..(p + batch) as i64).collect();
        let position_ids = i32s(&positions, &[batch]);
        let mask = mask_rows(context, p, batch);
        let current_pos = i32s(&[p as i64], &[1]);
        for chunk in &chunks {
            let outs = chunk
                .prefill
                .predict_with_state(
                    &[
                        ("hidden_states", &hidden),
                        ("position_ids", &position_ids),
                        ("causal_mask", &mask),
                        ("current_pos", &current_pos),
                    ],
                    &mut state,
                )
                .unwrap();
            hidden = output(&outs, "output_hidden_states").clone();
        }
        prefill_calls += 1;
    }
    assert_eq!(
        prefill_calls,
        expected["prompt"]["prefill_batches"].as_u64().unwrap()
    );

    // Decode.
    let steps = expected["steps"].as_array().unwrap();
    let tolerance = expected["tolerance"]["max_abs_logit_diff"]
        .as_f64()
        .unwrap();
    for (k, step) in steps.iter().enumerate() {
        let pos = prompt_len + k;
        let input_ids = i32s(&[ids[pos - 1]], &[1, 1]);
        let mut hidden = output(
            &embeddings.predict(&[("input_ids", &input_ids)]).unwrap(),
            "hidden_states",
        )
        .clone();
        let position = i32s(&[(pos - 1) as i64], &[1]);
        let mask = mask_rows(context, pos - 1, 1);
        for chunk in &chunks {
            let outs = chunk
                .infer
                .predict_with_state(
                    &[
                        ("hidden_states", &hidden),
                        ("position_ids", &position),
                        ("causal_mask", &mask),
                        ("current_pos", &position),
                    ],
                    &mut state,
                )
                .unwrap();
            hidden = output(&outs, "output_hidden_states").clone();
        }
        let mut outs = lm_head.predict(&[("hidden_states", &hidden)]).unwrap();
        outs.sort_by_key(|(n, _)| n.trim_start_matches("logits").parse::<usize>().unwrap());
        let parts: Vec<Tensor> = outs.into_iter().map(|(_, t)| t).collect();
        let logits = values(&Tensor::cat(&parts, 2).unwrap());
        let best = logits
            .iter()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
            )
            .0 as i64;
        if k == 0 {
            let want: Vec<f64> = expected["step0_full_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let diff = max_abs_diff(&logits, &want);
            assert!(diff <= tolerance, "{set}: step 0 logits differ by {diff}");
        }
        let top5_ids = step["top5_ids"].as_array().unwrap();
        let top5_logits = step["top5_logits"].as_array().unwrap();
        for (id, want) in top5_ids.iter().zip(top5_logits) {
            let got = logits[id.as_u64().unwrap() as usize];
            let want = want.as_f64().unwrap();
            assert!(
                (got - want).abs() <= tolerance,
                "{set}: step {k} logit of {id}: {got} vs {want}"
            );
        }
        assert_eq!(
            best,
            step["token"].as_i64().unwrap(),
            "{set}: greedy token at step {k}"
        );
        ids.push(best);
    }
    let greedy: Vec<i64> = expected["decode"]["greedy_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(&ids[prompt_len..], greedy.as_slice());
    assert_eq!(
        state.buffer_copies(),
        0,
        "{set}: the KV cache is updated in place, never copied"
    );
}

#[test]
fn qwen3_tiny_fp16_c1_reproduces_reference() {
    run_set("qwen3-tiny-fp16-c1");
}

#[test]
fn qwen3_tiny_lut6_c2_reproduces_reference() {
    run_set("qwen3-tiny-lut6-c2");
}

#[test]
fn llama_tiny_fp16_c2_reproduces_reference() {
    run_set("llama-tiny-fp16-c2");
}
