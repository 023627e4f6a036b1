//! Cache listing and cleaning in a temporary root with planted Core ML compile caches, our own cache entries and
//! decoys that must never be touched.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use candle_coreml_hub::cache::{
    check_removable, list, remove, select_older_than, CacheKind, CacheRoots,
};
use candle_coreml_hub::HubError;

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

struct Planted {
    _root: tempfile::TempDir,
    _outside: tempfile::TempDir,
    roots: CacheRoots,
    caches: Vec<(CacheKind, PathBuf)>,
    decoys: Vec<PathBuf>,
}

fn plant() -> Planted {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let r = root.path();
    let roots = CacheRoots::under(r);
    let direct = r.join("com.apple.e5rt.e5bundlecache");
    write(&direct.join("25A123/model/H16.e5"), &[1; 100]);
    let app = r.join("com.example.app/com.apple.e5rt.e5bundlecache");
    write(&app.join("25A123/abcd/weights/weights.bin"), &[2; 1000]);
    let ours = r.join("candle-coreml/compiled/qwen_lm_head.mlmodelc");
    write(&ours.join("model.mil"), &[3; 10]);
    let caches = vec![
        (CacheKind::CoreMlCompile, direct),
        (CacheKind::CoreMlCompile, app),
        (CacheKind::Ours, ours),
    ];
    // Decoys: other app caches, a too-deep e5 cache, and a symlinked e5 cache pointing outside the root.
    let other = r.join("com.example.other/Cache.db");
    write(&other, b"keep");
    let deep = r.join("a/b/com.apple.e5rt.e5bundlecache/x.bin");
    write(&deep, b"keep");
    let precious = outside
        .path()
        .join("precious/com.apple.e5rt.e5bundlecache/data.bin");
    write(&precious, b"keep");
    fs::create_dir_all(r.join("linked")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        precious.parent().unwrap(),
        r.join("linked/com.apple.e5rt.e5bundlecache"),
    )
    .unwrap();
    Planted {
        decoys: vec![other, deep, precious],
        _root: root,
        _outside: outside,
        roots,
        caches,
    }
}

fn listed(roots: &CacheRoots) -> Vec<(CacheKind, PathBuf)> {
    let mut v: Vec<_> = list(roots)
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.path))
        .collect();
    v.sort();
    v
}

#[test]
fn list_finds_exactly_the_planted_caches_with_their_sizes() {
    let p = plant();
    let mut expected = p.caches.clone();
    expected.sort();
    assert_eq!(listed(&p.roots), expected);
    let sizes: Vec<u64> = {
        let mut entries = list(&p.roots).unwrap();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        entries.iter().map(|e| e.bytes).collect()
    };
    assert_eq!(sizes.iter().sum::<u64>(), 1110);
}

#[test]
fn a_dry_run_plan_is_exactly_the_planted_dirs_and_deletes_nothing() {
    let p = plant();
    let planned = select_older_than(list(&p.roots).unwrap(), None, SystemTime::now());
    let mut paths: Vec<PathBuf> = planned.iter().map(|e| e.path.clone()).collect();
    paths.sort();
    let mut expected: Vec<PathBuf> = p.caches.iter().map(|(_, p)| p.clone()).collect();
    expected.sort();
    assert_eq!(paths, expected);
    for (_, path) in &p.caches {
        assert!(path.exists());
    }
}

#[test]
fn clean_removes_only_the_planted_caches() {
    let p = plant();
    let entries = list(&p.roots).unwrap();
    let freed = remove(&entries, &p.roots).unwrap();
    assert_eq!(freed, 1110);
    for (_, path) in &p.caches {
        assert!(!path.exists(), "{} should be gone", path.display());
    }
    for decoy in &p.decoys {
        assert!(decoy.exists(), "{} must survive", decoy.display());
    }
    assert!(p.roots.ours.is_dir(), "the cache root itself stays");
}

#[test]
fn older_than_keeps_recent_entries() {
    let p = plant();
    let old = SystemTime::now() - Duration::from_secs(10 * 86_400);
    let file = fs::File::options()
        .write(true)
        .open(p.caches[1].1.join("25A123/abcd/weights/weights.bin"))
        .unwrap();
    file.set_modified(old).unwrap();
    let selected = select_older_than(
        list(&p.roots).unwrap(),
        Some(Duration::from_secs(7 * 86_400)),
        SystemTime::now(),
    );
    let paths: Vec<&PathBuf> = selected.iter().map(|e| &e.path).collect();
    assert_eq!(paths, vec![&p.caches[1].1]);
}

#[test]
fn removal_outside_the_roots_or_of_a_root_is_refused() {
    let p = plant();
    let refuse = |path: &Path, kind: CacheKind| {
        let err = check_removable(path, kind, &p.roots).unwrap_err();
        assert!(matches!(err, HubError::UnsafeCachePath { .. }), "{err}");
    };
    refuse(p.decoys[2].parent().unwrap(), CacheKind::CoreMlCompile);
    refuse(&p.roots.user_cache_dir, CacheKind::CoreMlCompile);
    refuse(&p.roots.ours, CacheKind::Ours);
    refuse(
        &p.roots.user_cache_dir.join("com.example.other"),
        CacheKind::CoreMlCompile,
    );
    refuse(p.decoys[1].parent().unwrap(), CacheKind::CoreMlCompile);
    #[cfg(unix)]
    refuse(
        &p.roots
            .user_cache_dir
            .join("linked/com.apple.e5rt.e5bundlecache"),
        CacheKind::CoreMlCompile,
    );
    refuse(
        &p.roots
            .ours
            .join("compiled/qwen_lm_head.mlmodelc/model.mil"),
        CacheKind::Ours,
    );
    let bogus = candle_coreml_hub::cache::CacheEntry {
        kind: CacheKind::Ours,
        path: p.decoys[2].clone(),
        bytes: 4,
        modified: SystemTime::now(),
    };
    assert!(remove(&[bogus], &p.roots).is_err());
    assert!(p.decoys[2].exists());
}
