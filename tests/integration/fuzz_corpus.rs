//! The fuzz targets' seed corpora and crash regressions (fuzz/seeds/ and
//! fuzz/regressions/, one folder per target) go through the same entry
//! points the fuzzers drive (src/fuzz_api.rs): no input may panic. The
//! campaigns themselves run outside CI (scripts/fuzz, fuzz/README.md).

use std::path::{Path, PathBuf};

use mailwarden::fuzz_api::TARGETS;

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    out.sort();
    out
}

#[test]
fn seeds_and_regressions_do_not_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut panicked = Vec::new();
    for (name, run) in TARGETS {
        let seeds = files(&root.join("seeds").join(name));
        assert!(!seeds.is_empty(), "no seeds in fuzz/seeds/{name}");
        let regressions = files(&root.join("regressions").join(name));
        for path in seeds.iter().chain(&regressions) {
            let data = std::fs::read(path).unwrap();
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                panicked.push(path.display().to_string());
            }
        }
    }
    assert!(panicked.is_empty(), "these inputs panic: {panicked:#?}");
}
