//! One module per subcommand; each exposes `Args` (clap) and `run(args)`.

pub mod bench;
pub mod cache;
pub mod chat;
pub mod config;
pub mod download;
pub mod generate;
pub mod inspect;
pub mod run;
