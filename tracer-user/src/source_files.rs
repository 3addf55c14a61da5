//! The repository's Rust sources, for the tests that read them (layering,
//! SAFETY comments, function length).

use std::path::{Path, PathBuf};

/// The `.rs` files under `dir`, build outputs and hidden folders left out.
pub fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The `.rs` files of the repository's `dirs` (relative to its root), and
/// the root.
pub fn in_repository(dirs: &[&str]) -> (PathBuf, Vec<PathBuf>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for d in dirs {
        sources(&root.join(d), &mut files);
    }
    (root, files)
}
