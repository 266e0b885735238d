//! Embeds `web/` in the binary: every file but `index.html` becomes an
//! asset served at `assets/<hash>/<path>`, where the hash is a SHA-256 of
//! every file's path and bytes. One hash for the whole set keeps the
//! modules' relative imports working unchanged (an import map would be an
//! inline script, which the console's `script-src 'self'` forbids), and
//! any change anywhere gives every asset a new name, so hashed assets can
//! be cached forever.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("web/ is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    // Read when the script runs, not when it was compiled.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest_dir).join("web");
    println!("cargo:rerun-if-changed=web");
    let mut all = Vec::new();
    files(&root, &mut all);
    let mut hasher = Sha256::new();
    let mut table = String::new();
    for path in &all {
        let name = path
            .strip_prefix(&root)
            .expect("under web/")
            .to_str()
            .expect("a UTF-8 file name")
            .replace('\\', "/");
        let bytes = std::fs::read(path).expect("a readable asset");
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
        if name != "index.html" {
            // The lib's own manifest directory, resolved when it compiles:
            // two checkouts sharing a target directory never embed each
            // other's files.
            writeln!(
                table,
                "    ({name:?}, include_bytes!(concat!(env!(\"CARGO_MANIFEST_DIR\"), {:?}))),",
                format!("/web/{name}")
            )
            .unwrap();
        }
    }
    let hash: String = hasher.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let code = format!(
        "/// The hash in every asset's path.\npub const BUILD_HASH: &str = {hash:?};\n\
         /// `index.html`, with `{{{{assets}}}}` where the assets' folder goes.\n\
         pub const INDEX_HTML: &str = include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/web/index.html\"));\n\
         /// Every other file of `web/`, by its path there.\n\
         pub static ASSETS: &[(&str, &[u8])] = &[\n{table}];\n"
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("assets.rs");
    std::fs::write(out, code).expect("assets.rs written");
}
