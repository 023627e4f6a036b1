//! Model resolution for candle-coreml.
//!
//! - [`resolve_model`]: a local directory or a Hugging Face repo id in, a local model directory out. Hub downloads go
//!   into the standard Hugging Face cache layout (`models--org--name/{blobs,refs,snapshots}`), honour `HF_HOME`,
//!   `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE`, and are resumable, parallel, verified against
//!   the hub's LFS sha256 and placed atomically under a per-repo lock ([`download`]).
//! - [`model_config`]: the `ModelConfig` JSON (the seed crate's schema plus chunks, states and split logits).
//! - [`cache`]: listing and cleaning Core ML compile caches and our own caches.

#![warn(missing_docs)]

pub mod cache;
pub mod download;
pub mod error;
pub mod lock;
#[cfg(feature = "mock-hub")]
pub mod mock_hub;
pub mod model_config;
pub mod resolve;
pub mod select;
pub mod settings;

pub use download::{download_repo, Snapshot};
pub use error::{HubError, Result};
pub use model_config::ModelConfig;

pub use resolve::{resolve_model, ModelSpec, ResolveOptions};
pub use settings::HubSettings;
