//! The modules of `shared` depend one way: no module reaches, through its
//! `use`s and paths (`crate::…`, `super::…`, attribute paths included),
//! back to itself. The ledger reads in layers (types ← primitives ←
//! changes, reservations ← sweep); a circle anywhere fails this test, and
//! a planted one is shown to be caught.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use syn::visit::Visit;

/// The module a source file defines: `lib.rs` is `crate`, `a/mod.rs` and
/// `a.rs` are `crate::a`, `a/b.rs` is `crate::a::b`.
fn module_of(relative: &str) -> String {
    let trimmed = relative.trim_end_matches(".rs");
    let parts: Vec<&str> = trimmed
        .split('/')
        .filter(|p| *p != "mod" && *p != "lib")
        .collect();
    std::iter::once("crate")
        .chain(parts)
        .collect::<Vec<_>>()
        .join("::")
}

/// Collects every module path a file names.
struct Names {
    module: String,
    found: BTreeSet<String>,
}

impl Names {
    fn absolute(&self, segments: &[String]) -> Option<String> {
        let first = segments.first()?;
        let mut base: Vec<String> = match first.as_str() {
            "crate" => vec!["crate".into()],
            "super" => {
                let mut m: Vec<String> = self.module.split("::").map(str::to_owned).collect();
                m.pop();
                m
            }
            "self" => self.module.split("::").map(str::to_owned).collect(),
            _ => return None,
        };
        let mut rest = &segments[1..];
        while rest.first().is_some_and(|s| s == "super") {
            base.pop();
            rest = &rest[1..];
        }
        base.extend(rest.iter().cloned());
        Some(base.join("::"))
    }

    fn add(&mut self, segments: Vec<String>) {
        if let Some(path) = self.absolute(&segments) {
            self.found.insert(path);
        }
    }

    fn use_tree(&mut self, prefix: Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                let mut next = prefix;
                next.push(p.ident.to_string());
                self.use_tree(next, &p.tree);
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix;
                full.push(n.ident.to_string());
                self.add(full);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix;
                full.push(r.ident.to_string());
                self.add(full);
            }
            syn::UseTree::Glob(_) => self.add(prefix),
            syn::UseTree::Group(g) => {
                for item in &g.items {
                    self.use_tree(prefix.clone(), item);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Names {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        // Inside an inline module (`mod tests { use super::*; }`), `super`
        // and `self` are relative to it.
        let outer = self.module.clone();
        self.module = format!("{outer}::{}", item.ident);
        syn::visit::visit_item_mod(self, item);
        self.module = outer;
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.add(segments);
        syn::visit::visit_path(self, path);
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        // Attribute arguments are tokens (`value_type = crate::a::B`): read
        // them as text.
        let text = attr.meta.to_token_stream_string();
        for (i, _) in text.match_indices("crate ::") {
            let path: Vec<String> = text[i..]
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == ' '))
                .next()
                .unwrap_or("")
                .split("::")
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            self.add(path);
        }
    }
}

trait TokensText {
    fn to_token_stream_string(&self) -> String;
}

impl TokensText for syn::Meta {
    fn to_token_stream_string(&self) -> String {
        match self {
            syn::Meta::List(list) => list.tokens.to_string(),
            syn::Meta::NameValue(nv) => {
                if let syn::Expr::Path(p) = &nv.value {
                    p.path
                        .segments
                        .iter()
                        .map(|s| s.ident.to_string())
                        .collect::<Vec<_>>()
                        .join(" :: ")
                } else {
                    String::new()
                }
            }
            syn::Meta::Path(_) => String::new(),
        }
    }
}

/// The module graph of `sources` (relative path → text): each module and
/// the modules it names (an item's path resolved to the longest module it
/// starts with; a parent's items count as the parent's).
fn graph(sources: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = sources.keys().map(|f| module_of(f)).collect();
    let mut edges = BTreeMap::new();
    for (file, text) in sources {
        let module = module_of(file);
        let ast = syn::parse_file(text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut names = Names {
            module: module.clone(),
            found: BTreeSet::new(),
        };
        names.visit_file(&ast);
        let targets: BTreeSet<String> = names
            .found
            .iter()
            .filter_map(|path| {
                let mut parts: Vec<&str> = path.split("::").collect();
                while !parts.is_empty() {
                    let candidate = parts.join("::");
                    if modules.contains(&candidate) {
                        return Some(candidate);
                    }
                    parts.pop();
                }
                None
            })
            // The root names every module (`pub mod`, `pub use`): only
            // what a module names through it counts.
            .filter(|t| t != &module && t != "crate")
            .collect();
        edges.insert(module, targets);
    }
    edges
}

/// A circle of the graph, if there is one (as the modules along it).
fn circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn walk(
        at: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|m| m == at) {
            let mut found = path[i..].to_vec();
            found.push(at.to_owned());
            return Some(found);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.to_owned());
        for next in edges.get(at).into_iter().flatten() {
            if let Some(found) = walk(next, edges, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(at.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|m| walk(m, edges, &mut Vec::new(), &mut done))
}

fn read_tree(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.insert(relative, std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn no_module_of_shared_forms_a_circle() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    let mut sources = BTreeMap::new();
    read_tree(root, root, &mut sources);
    let edges = graph(&sources);
    assert!(edges.len() > 20, "the tree was not read: {edges:?}");
    if let Some(found) = circle(&edges) {
        panic!("the modules form a circle: {}", found.join(" -> "));
    }
}

#[test]
fn the_ledger_reads_in_layers() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    let mut sources = BTreeMap::new();
    read_tree(root, root, &mut sources);
    let edges = graph(&sources);
    let uses = |m: &str| edges[&format!("crate::ledger::{m}")].clone();
    let ledger = |m: &str| format!("crate::ledger::{m}");
    assert!(
        uses("types")
            .iter()
            .all(|t| !t.starts_with("crate::ledger")),
        "{:?}",
        uses("types")
    );
    assert!(!uses("primitives").contains(&ledger("changes")));
    assert!(!uses("primitives").contains(&ledger("reservations")));
    assert!(!uses("changes").contains(&ledger("reservations")));
    assert!(!uses("reservations").contains(&ledger("sweep")));
    assert!(uses("sweep").contains(&ledger("reservations")));
}

#[test]
fn a_planted_circle_is_caught() {
    let planted: BTreeMap<String, String> = [
        ("lib.rs", "pub mod ledger; pub mod usage;"),
        ("ledger/mod.rs", "pub mod ops; pub mod expiry;"),
        (
            "ledger/ops.rs",
            "use super::expiry::expire_due; pub fn draw() {}",
        ),
        (
            "ledger/expiry.rs",
            "pub fn expire_due() { super::ops::draw(); }",
        ),
        (
            "usage.rs",
            "#[schema(value_type = crate::ledger::ops::X)] pub struct U;",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let edges = graph(&planted);
    assert!(
        edges["crate::usage"].contains("crate::ledger::ops"),
        "{edges:?}"
    );
    let found = circle(&edges).expect("the planted circle is found");
    assert!(
        found.contains(&"crate::ledger::ops".to_owned())
            && found.contains(&"crate::ledger::expiry".to_owned()),
        "{found:?}"
    );
    let mut fixed = planted.clone();
    fixed.insert("ledger/expiry.rs".into(), "pub fn expire_due() {}".into());
    assert_eq!(circle(&graph(&fixed)), None);
}
