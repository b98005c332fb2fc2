//! A crate's modules and the paths each one names, read from the syntax
//! tree (syn), not from text: formatting, indentation, line breaks and
//! the position of `#[cfg(test)]` in a file change nothing. Test modules
//! are left out only where the tree has a `#[cfg(test)] mod` item.
//! Not seen: paths written inside string literals (serde's
//! `deserialize_with = "..."`), which name functions, not modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// A module's path inside its crate (`[]` is the crate root).
pub type ModPath = Vec<String>;

/// A path named in a module, as written.
#[derive(Clone, Debug)]
pub struct Named {
    pub segments: Vec<String>,
    pub file: PathBuf,
    pub line: usize,
}

/// One module of a crate.
#[derive(Debug, Default)]
pub struct Module {
    /// Names bound by its `use` items (also inside function bodies):
    /// binding → the path it stands for, as written.
    pub uses: BTreeMap<String, Vec<String>>,
    /// Modules whose items it imports with `use ...::*`, as written.
    pub globs: Vec<Vec<String>>,
    /// Names its own items define.
    pub items: BTreeSet<String>,
    /// Every path it names: `use` trees, expressions, types, patterns,
    /// attributes' paths and the paths inside macro invocations.
    pub named: Vec<Named>,
}

/// Every non-test module of the crate whose root file is `root`.
pub fn crate_modules(root: &Path) -> BTreeMap<ModPath, Module> {
    let mut out = BTreeMap::new();
    let dir = root.parent().expect("a crate root is in a directory");
    let items = parse(root);
    walk(Vec::new(), root, &items, dir, &mut out);
    out
}

fn parse(file: &Path) -> Vec<syn::Item> {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    syn::parse_file(&text)
        .unwrap_or_else(|e| panic!("parsing {}: {e}", file.display()))
        .items
}

/// Whether `attrs` hold a `#[cfg(...)]` that names `test`
/// (`cfg(test)`, `cfg(all(test, ...))`).
pub fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && matches!(&a.meta, syn::Meta::List(l) if names_test(l.tokens.clone()))
    })
}

fn names_test(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Ident(i) => i == "test",
        TokenTree::Group(g) => names_test(g.stream()),
        _ => false,
    })
}

/// Records module `path` (whose items are `items`, written in `file`)
/// and its non-test submodules; `dir` is where its `mod x;` files live.
fn walk(
    path: ModPath,
    file: &Path,
    items: &[syn::Item],
    dir: &Path,
    out: &mut BTreeMap<ModPath, Module>,
) {
    let mut module = Module::default();
    let mut children = Vec::new();
    for item in items {
        if let Some(name) = item_name(item) {
            module.items.insert(name);
        }
        match item {
            syn::Item::Mod(m) => {
                if !is_test_only(&m.attrs) {
                    children.push(m);
                }
            }
            other => {
                let mut v = Visitor {
                    file,
                    module: &mut module,
                };
                v.visit_item(other);
            }
        }
    }
    for m in children {
        let name = m.ident.to_string();
        let mut child = path.clone();
        child.push(name.clone());
        match &m.content {
            Some((_, inline)) => walk(child, file, inline, &dir.join(&name), out),
            None => {
                let (child_file, child_dir) = module_file(dir, &name, &m.attrs, file);
                let items = parse(&child_file);
                walk(child, &child_file, &items, &child_dir, out);
            }
        }
    }
    out.insert(path, module);
}

/// The file of `mod name;` and the directory its own submodules live in.
fn module_file(
    dir: &Path,
    name: &str,
    attrs: &[syn::Attribute],
    parent_file: &Path,
) -> (PathBuf, PathBuf) {
    for a in attrs {
        if let syn::Meta::NameValue(nv) = &a.meta {
            if nv.path.is_ident("path") {
                if let syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) = &nv.value
                {
                    let f = parent_file
                        .parent()
                        .expect("a file is in a directory")
                        .join(s.value());
                    let d = f.with_extension("");
                    return (f, d);
                }
            }
        }
    }
    let flat = dir.join(format!("{name}.rs"));
    if flat.exists() {
        return (flat, dir.join(name));
    }
    let nested = dir.join(name).join("mod.rs");
    assert!(
        nested.exists(),
        "no file for `mod {name};` in {}",
        dir.display()
    );
    (nested, dir.join(name))
}

fn item_name(item: &syn::Item) -> Option<String> {
    let ident = match item {
        syn::Item::Const(i) => &i.ident,
        syn::Item::Enum(i) => &i.ident,
        syn::Item::Fn(i) => &i.sig.ident,
        syn::Item::Mod(i) => &i.ident,
        syn::Item::Static(i) => &i.ident,
        syn::Item::Struct(i) => &i.ident,
        syn::Item::Trait(i) => &i.ident,
        syn::Item::Type(i) => &i.ident,
        syn::Item::Union(i) => &i.ident,
        syn::Item::Macro(i) => i.ident.as_ref()?,
        _ => return None,
    };
    Some(ident.to_string())
}

struct Visitor<'a> {
    file: &'a Path,
    module: &'a mut Module,
}

impl Visitor<'_> {
    fn name(&mut self, segments: Vec<String>, line: usize) {
        if !segments.is_empty() {
            self.module.named.push(Named {
                segments,
                file: self.file.to_path_buf(),
                line,
            });
        }
    }

    /// Flattens a `use` tree: every full path it names, what each binding
    /// stands for, and its globs.
    fn use_tree(&mut self, prefix: &[String], tree: &syn::UseTree) {
        let mut full = prefix.to_vec();
        match tree {
            syn::UseTree::Path(p) => {
                full.push(p.ident.to_string());
                self.use_tree(&full, &p.tree);
            }
            syn::UseTree::Name(n) => {
                let line = n.ident.span().start().line;
                let binding = if n.ident == "self" {
                    prefix.last().cloned()
                } else {
                    full.push(n.ident.to_string());
                    Some(n.ident.to_string())
                };
                if let Some(b) = binding {
                    self.module.uses.insert(b, full.clone());
                }
                self.name(full, line);
            }
            syn::UseTree::Rename(r) => {
                let line = r.ident.span().start().line;
                if r.ident != "self" {
                    full.push(r.ident.to_string());
                }
                self.module.uses.insert(r.rename.to_string(), full.clone());
                self.name(full, line);
            }
            syn::UseTree::Glob(g) => {
                let line = g.star_token.span.start().line;
                self.module.globs.push(full.clone());
                self.name(full, line);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    /// Every `a::b::c` run in a macro's tokens (which syn does not parse).
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => {
                    self.tokens(g.stream());
                    i += 1;
                }
                TokenTree::Ident(first) => {
                    let line = first.span().start().line;
                    let mut run = vec![first.to_string()];
                    let mut j = i + 1;
                    while let (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) =
                        (tokens.get(j), tokens.get(j + 1))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        match tokens.get(j + 2) {
                            Some(TokenTree::Ident(next)) => run.push(next.to_string()),
                            _ => break,
                        }
                        j += 3;
                    }
                    if run.len() > 1 {
                        self.name(run, line);
                    }
                    i = j.max(i + 1);
                }
                _ => i += 1,
            }
        }
    }
}

impl<'ast> Visit<'ast> for Visitor<'_> {
    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() {
            let segments = p.segments.iter().map(|s| s.ident.to_string()).collect();
            let line = p
                .segments
                .first()
                .map_or(0, |s| s.ident.span().start().line);
            self.name(segments, line);
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if u.leading_colon.is_none() {
            self.use_tree(&[], &u.tree);
        }
    }

    /// A module inside a function body is rare; it is this module's.
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_test_only(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }
}

// === resolution ===

/// The module of the crate a path named in module `from` leads into: as
/// far as its segments name modules, following `use` bindings (so a
/// re-export leads to where the item is defined). `None`: outside the
/// crate (another crate, a prelude name, a local item).
pub fn target(
    modules: &BTreeMap<ModPath, Module>,
    from: &ModPath,
    segments: &[String],
) -> Option<ModPath> {
    resolve(modules, from, segments, 0).map(|(m, _)| m)
}

/// As [`target`]; also whether every segment named a module (so a path
/// continuing it goes on from there) rather than an item in it.
fn resolve(
    modules: &BTreeMap<ModPath, Module>,
    from: &ModPath,
    segments: &[String],
    depth: usize,
) -> Option<(ModPath, bool)> {
    if depth > 16 {
        return None;
    }
    let (mut at, rest) = match start(modules, from, segments, depth)? {
        Start::Module(at, rest) => (at, rest),
        Start::Item(at) => return Some((at, false)),
    };
    for (i, seg) in rest.iter().enumerate() {
        let mut child = at.clone();
        child.push(seg.clone());
        if modules.contains_key(&child) {
            at = child;
            continue;
        }
        // An item re-exported by `at`: follow the binding to its module.
        let module = modules.get(&at)?;
        if !module.items.contains(seg) {
            if let Some(bound) = module.uses.get(seg) {
                let mut path = bound.clone();
                path.extend(rest[i + 1..].iter().cloned());
                if let Some(t) = resolve(modules, &at, &path, depth + 1) {
                    return Some(t);
                }
            }
            for glob in &module.globs {
                let Some((g, true)) = resolve(modules, &at, glob, depth + 1) else {
                    continue;
                };
                let defines = modules
                    .get(&g)
                    .is_some_and(|m| m.items.contains(seg) || m.uses.contains_key(seg));
                if defines {
                    let mut path = g.clone();
                    path.insert(0, "crate".into());
                    path.extend(rest[i..].iter().cloned());
                    return resolve(modules, &at, &path, depth + 1);
                }
            }
        }
        return Some((at, false));
    }
    Some((at, true))
}

/// Where a path starts.
enum Start<'s> {
    /// In a module, with the segments still to follow from it.
    Module(ModPath, &'s [String]),
    /// At an item a `use` bound (`Report` in `Report::new`): the path goes
    /// no further into the crate's modules.
    Item(ModPath),
}

/// Where a path starts: `crate`, `self`, `super`s, a submodule of `from`
/// or a name `from` binds with `use`.
fn start<'s>(
    modules: &BTreeMap<ModPath, Module>,
    from: &ModPath,
    segments: &'s [String],
    depth: usize,
) -> Option<Start<'s>> {
    let first = segments.first()?;
    match first.as_str() {
        "crate" => Some(Start::Module(Vec::new(), &segments[1..])),
        "self" => Some(Start::Module(from.clone(), &segments[1..])),
        "super" => {
            let mut at = from.clone();
            let mut i = 0;
            while segments.get(i).is_some_and(|s| s == "super") {
                at.pop()?;
                i += 1;
            }
            Some(Start::Module(at, &segments[i..]))
        }
        name => {
            let mut child = from.clone();
            child.push(name.to_string());
            if modules.contains_key(&child) {
                return Some(Start::Module(child, &segments[1..]));
            }
            let bound = modules.get(from)?.uses.get(name)?;
            if bound.len() == 1 && bound[0] == name {
                // `use other_crate;`: outside.
                return None;
            }
            match resolve(modules, from, bound, depth + 1)? {
                (at, true) => Some(Start::Module(at, &segments[1..])),
                (at, false) => Some(Start::Item(at)),
            }
        }
    }
}
