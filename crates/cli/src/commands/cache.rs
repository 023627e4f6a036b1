//! `candle-coreml cache list|clean [--dry-run] [--older-than AGE] [--root DIR]`: lists and cleans Core ML compile
//! caches (`com.apple.e5rt.e5bundlecache` under the user cache directory) and our own cache.

use std::path::PathBuf;
use std::time::SystemTime;

use candle_coreml_hub::cache::{self, CacheEntry, CacheKind, CacheRoots};

/// Arguments of `cache`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

/// What to do with the caches.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// List cache entries with their size and age.
    List(Scope),
    /// Delete cache entries.
    Clean {
        /// Which entries.
        #[command(flatten)]
        scope: Scope,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Only entries not modified for this long (e.g. 30m, 12h, 7d, 2w).
        #[arg(long)]
        older_than: Option<String>,
    },
}

/// Which caches to look at.
#[derive(clap::Args, Debug)]
pub struct Scope {
    /// User cache directory to scan instead of the platform's (our cache is `<root>/candle-coreml`).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Only this kind of cache.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
}

/// A cache kind on the command line.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindArg {
    /// Core ML compile caches.
    Coreml,
    /// candle-coreml's own cache.
    Ours,
}

impl Scope {
    fn roots(&self) -> anyhow::Result<CacheRoots> {
        match &self.root {
            Some(root) => Ok(CacheRoots::under(root)),
            None => CacheRoots::from_env().ok_or_else(|| {
                anyhow::anyhow!("this platform has no user cache directory; pass --root")
            }),
        }
    }

    fn entries(&self, roots: &CacheRoots) -> anyhow::Result<Vec<CacheEntry>> {
        let wanted = self.kind.map(|k| match k {
            KindArg::Coreml => CacheKind::CoreMlCompile,
            KindArg::Ours => CacheKind::Ours,
        });
        Ok(cache::list(roots)?
            .into_iter()
            .filter(|e| wanted.is_none_or(|k| e.kind == k))
            .collect())
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn age(modified: SystemTime, now: SystemTime) -> String {
    let secs = now
        .duration_since(modified)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn print_entries(entries: &[CacheEntry], now: SystemTime) {
    for e in entries {
        println!(
            "{:<14} {:>10} {:>6}  {}",
            e.kind.label(),
            human_bytes(e.bytes),
            age(e.modified, now),
            e.path.display()
        );
    }
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    eprintln!("{} entries, {}", entries.len(), human_bytes(total));
}

/// Runs `cache`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let now = SystemTime::now();
    match args.action {
        Action::List(scope) => {
            let roots = scope.roots()?;
            print_entries(&scope.entries(&roots)?, now);
        }
        Action::Clean {
            scope,
            dry_run,
            older_than,
        } => {
            let roots = scope.roots()?;
            let older_than = older_than.as_deref().map(cache::parse_age).transpose()?;
            let selected = cache::select_older_than(scope.entries(&roots)?, older_than, now);
            if dry_run {
                eprintln!("dry run: these would be deleted");
                print_entries(&selected, now);
            } else {
                let freed = cache::remove(&selected, &roots)?;
                print_entries(&selected, now);
                eprintln!(
                    "deleted {} entries, freed {}",
                    selected.len(),
                    human_bytes(freed)
                );
            }
        }
    }
    Ok(())
}
