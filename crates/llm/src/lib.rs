//! ANEMLL large language models on candle-coreml: `meta.yaml`, the prefill/decode pipeline over the Core ML parts
//! (embeddings, FFN chunks, LM head), tokenizer and chat template, sampling, and a generation API.
//!
//! - [`meta`]: `meta.yaml` and locating the parts on disk; [`layout`]: dimensions read from the parts' descriptions;
//! - [`pipeline`]: [`AnemllModel`], the prefill/infer loop over one shared KV state, with KV-prefix reuse;
//! - [`tokenizer`], [`chat_template`]: Hugging Face tokenizer, stop tokens, streaming detokenisation, Jinja templates;
//! - [`sampling`]: greedy, temperature, top-k, top-p, min-p, repetition penalty;
//! - [`generate`]: [`TextModel`], generation from text, ids or a conversation, with stop strings and timings;
//!   [`TextModel::from_pretrained`] takes a local directory or a Hugging Face repo id (via `candle-coreml-hub`).
//!
//! ```no_run
//! use candle_coreml_llm::{GenerationConfig, Message, TextModel};
//!
//! let mut model = TextModel::load("models/anemll-qwen3-0.6b")?;
//! let config = GenerationConfig { max_new_tokens: 64, ..GenerationConfig::default() };
//! let reply = model.chat_stream(&[Message::user("Hello!")], &config, &mut |piece| print!("{piece}"))?;
//! eprintln!("\n{:.1} tok/s", reply.timings.decode_tokens_per_second());
//! # Ok::<(), candle_coreml_llm::LlmError>(())
//! ```

#![warn(missing_docs)]

pub mod chat_template;
pub mod error;
pub mod files;
pub mod generate;
pub mod layout;
pub mod meta;
pub mod pipeline;
pub mod sampling;
pub mod tokenizer;

pub use candle_coreml_hub::{ModelConfig, ResolveOptions};
pub use chat_template::{ChatTemplate, ChatTemplateOptions, Message};
pub use error::{LlmError, Result};
pub use files::ModelFiles;
pub use generate::{Generation, GenerationConfig, QwenModel, StopReason, TextModel, Timings};
pub use layout::ModelLayout;
pub use meta::AnemllMeta;
pub use pipeline::{AnemllModel, NextToken};
pub use sampling::{Sampler, SamplingConfig};
pub use tokenizer::{IncrementalDecoder, TextTokenizer};
