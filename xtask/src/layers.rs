//! The kernel's layer rule, checked on its sources by `cargo test` (and so
//! by `make test`'s host phase).
//!
//! Every top-level module of `kernel/src` belongs to one layer of
//! [`LAYERS`]. A file may use its own top-level module and modules of lower
//! layers, never a higher layer and never a sibling in its own layer, so the
//! modules form one stack with no cycle. Calls that must go up (an
//! interrupt reaching the scheduler, a panic stopping the other CPUs) go
//! through a hook the higher layer registers, not through an import.
//!
//! The check reads the sources as text: comments and literals are blanked
//! out, then every `crate::`, `$crate::` and `super::` path is resolved to
//! the top-level module it names (`use` groups item by item, `super` chains
//! from the file's module and its inline `mod`s, exported macros to the
//! module that defines them). Bare paths need no check: below the crate root
//! a top-level module is only reachable through `crate::` or `super::`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The layers, bottom first, each with the top-level modules it holds
/// (`main` is `main.rs`, the crate root). The one table of the layer order:
/// README's diagram draws it.
pub const LAYERS: &[(&str, &[&str])] = &[
    ("test framework", &["ktest"]),
    ("cpu", &["arch"]),
    ("sync", &["sync"]),
    ("memory", &["mm"]),
    ("platform", &["platform"]),
    ("smp", &["smp"]),
    ("scheduler", &["sched"]),
    ("drivers", &["drivers"]),
    ("console and options", &["klog", "cmdline"]),
    ("modes", &["bench", "shell", "checks"]),
    ("boot", &["main"]),
];

/// One source file: its path (for messages) and text.
pub struct Source {
    pub path: String,
    pub text: String,
}

/// A use of a module the importing file's layer may not use.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub line: usize,
    /// The path as written, e.g. `crate::sched::schedule`.
    pub written: String,
    pub from: String,
    pub to: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layer = |module: &str| layer_of(module).map_or("?", |index| LAYERS[index].0);
        write!(
            f,
            "{}:{}: `{}`: {} (layer {}) may not use {} (layer {})",
            self.path,
            self.line,
            self.written,
            self.from,
            layer(&self.from),
            self.to,
            layer(&self.to)
        )
    }
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, modules)| modules.contains(&module))
}

/// Whether `from` may use `to`: itself, or a module of a lower layer.
fn may_use(from: &str, to: &str) -> bool {
    from == to || matches!((layer_of(from), layer_of(to)), (Some(f), Some(t)) if t < f)
}

/// The module path of a file under `kernel/src`: `platform/apic/lapic.rs`
/// is `platform::apic::lapic`, `mm/mod.rs` is `mm`, `main.rs` the root.
fn module_path(relative: &str) -> Vec<String> {
    let without_ext = relative.strip_suffix(".rs").unwrap_or(relative);
    let mut parts: Vec<String> = without_ext.split('/').map(String::from).collect();
    if parts.last().is_some_and(|last| last == "mod" || last == "main") {
        parts.pop();
    }
    parts
}

/// The top-level module a module path lies in (`main` for the root).
fn top_of(path: &[String]) -> String {
    path.first().cloned().unwrap_or_else(|| "main".into())
}

/// Every rule break in `sources` (paths relative to `kernel/src`), plus
/// problems with the table itself (a module without a layer).
pub fn check(sources: &[Source]) -> (Vec<Violation>, Vec<String>) {
    let mut problems = Vec::new();
    let modules: Vec<String> = {
        let mut tops: Vec<String> =
            sources.iter().map(|source| top_of(&module_path(&source.path))).collect();
        tops.sort();
        tops.dedup();
        tops
    };
    for module in &modules {
        if layer_of(module).is_none() {
            problems
                .push(format!("module `{module}` has no layer in LAYERS (xtask/src/layers.rs)"));
        }
    }
    for (_, listed) in LAYERS {
        for module in listed.iter().filter(|module| !modules.iter().any(|m| m == *module)) {
            problems.push(format!("LAYERS lists `{module}`, which kernel/src does not have"));
        }
    }
    let cleaned: Vec<String> =
        sources.iter().map(|source| blank_comments_and_literals(&source.text)).collect();
    let mut macros: BTreeMap<String, String> = BTreeMap::new();
    for (source, text) in sources.iter().zip(&cleaned) {
        for name in exported_macros(text) {
            macros.insert(name, top_of(&module_path(&source.path)));
        }
    }
    let mut violations = Vec::new();
    for (source, text) in sources.iter().zip(&cleaned) {
        let file_module = module_path(&source.path);
        let from = top_of(&file_module);
        for found in paths(text, &file_module) {
            let to = match found.target {
                Target::Module(top) => top,
                Target::RootItem(name) if modules.contains(&name) => name,
                Target::RootItem(name) => {
                    macros.get(&name).cloned().unwrap_or_else(|| "main".into())
                }
            };
            if !may_use(&from, &to) {
                violations.push(Violation {
                    path: format!("kernel/src/{}", source.path),
                    line: found.line,
                    written: found.written,
                    from: from.clone(),
                    to,
                });
            }
        }
    }
    (violations, problems)
}

/// Reads every `.rs` file under `src`, paths relative to it.
pub fn read_tree(src: &Path) -> std::io::Result<Vec<Source>> {
    let mut sources = Vec::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative =
                    path.strip_prefix(src).expect("under src").to_string_lossy().replace('\\', "/");
                sources.push(Source { path: relative, text: std::fs::read_to_string(&path)? });
            }
        }
    }
    sources.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(sources)
}

/// `text` with comments, string and character literals replaced by spaces
/// (newlines kept, so line numbers stay right).
fn blank_comments_and_literals(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = bytes.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for byte in &mut out[from..to.min(bytes.len())] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
    };
    let is_ident = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&b| b == b'\n').map_or(bytes.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (0usize, i);
            while j < bytes.len() {
                if bytes[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if bytes[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if let Some(hashes) = raw_string_start(bytes, i, is_ident) {
            // r"..." / r#"..."#: ends at a quote followed by as many hashes.
            let open = i + rest.iter().position(|&b| b == b'"').expect("raw string quote");
            let closing: Vec<u8> =
                std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            let end = bytes[open + 1..]
                .windows(closing.len())
                .position(|window| window == closing.as_slice())
                .map_or(bytes.len(), |n| open + 1 + n + closing.len());
            blank(&mut out, open, end);
            i = end;
        } else if bytes[i] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if bytes[i] == b'\'' {
            // A character literal, or a lifetime / label (left alone).
            let end = if rest.get(1) == Some(&b'\\') {
                rest.iter().skip(2).position(|&b| b == b'\'').map(|n| i + 2 + n + 1)
            } else {
                let width = rest.get(1).map_or(1, |&b| utf8_width(b));
                (rest.get(1 + width) == Some(&b'\'')).then_some(i + 2 + width)
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// At `i`, `r"`, `r#"`, `br#"` ...: the number of hashes.
fn raw_string_start(bytes: &[u8], i: usize, is_ident: impl Fn(u8) -> bool) -> Option<usize> {
    let start = if bytes[i..].starts_with(b"br") { i + 1 } else { i };
    if bytes.get(start) != Some(&b'r') || (i > 0 && is_ident(bytes[i - 1])) {
        return None;
    }
    let hashes = bytes[start + 1..].iter().take_while(|&&b| b == b'#').count();
    (bytes.get(start + 1 + hashes) == Some(&b'"')).then_some(hashes)
}

fn utf8_width(first: u8) -> usize {
    match first {
        0xf0.. => 4,
        0xe0.. => 3,
        0xc0.. => 2,
        _ => 1,
    }
}

/// Names of `#[macro_export]` macros defined in (cleaned) `text`.
fn exported_macros(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[macro_export]") {
        rest = &rest[at + "#[macro_export]".len()..];
        let tokens = Tokens::new(rest);
        if let (Some("macro_rules"), Some("!"), Some(name)) =
            (tokens.peek(0), tokens.peek(1), tokens.peek(2))
        {
            names.push(name.to_string());
        }
    }
    names
}

/// What a path names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// Inside this top-level module.
    Module(String),
    /// `crate::NAME`: a top-level module, an exported macro, or an item of
    /// the crate root.
    RootItem(String),
}

struct FoundPath {
    line: usize,
    written: String,
    target: Target,
}

/// A minimal tokenizer: identifiers, `::`, and single punctuation bytes,
/// each with its byte offset.
struct Tokens<'a> {
    tokens: Vec<(usize, &'a str)>,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        let bytes = text.as_bytes();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let byte = bytes[i];
            if byte.is_ascii_alphabetic() || byte == b'_' {
                let len = bytes[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
                tokens.push((i, &text[i..i + len]));
                i += len;
            } else if bytes[i..].starts_with(b"::") {
                tokens.push((i, "::"));
                i += 2;
            } else if byte.is_ascii_whitespace() || !byte.is_ascii() {
                i += 1;
            } else {
                tokens.push((i, &text[i..i + 1]));
                i += 1;
            }
        }
        Self { tokens }
    }

    fn peek(&self, index: usize) -> Option<&'a str> {
        self.tokens.get(index).map(|(_, token)| *token)
    }
}

/// Every `crate::` / `$crate::` / `super::` path in (cleaned) `text`, for a
/// file whose module path is `file_module`.
fn paths(text: &str, file_module: &[String]) -> Vec<FoundPath> {
    let tokens = Tokens::new(text).tokens;
    let token = |index: usize| tokens.get(index).map(|(_, token)| *token);
    let line_at = |offset: usize| text[..offset].matches('\n').count() + 1;
    // Inline `mod name {` blocks: (name, brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match token(i) {
            Some("{") => depth += 1,
            Some("}") => {
                if inline.last().is_some_and(|(_, inside)| *inside == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Some("mod") if token(i + 2) == Some("{") => {
                if let Some(name) = token(i + 1) {
                    inline.push((name.to_string(), depth + 1));
                }
            }
            Some(start @ ("crate" | "super")) if token(i + 1) == Some("::") => {
                let is_macro_crate = i > 0 && token(i - 1) == Some("$");
                let mut base: Option<Vec<String>> = None;
                let mut j = i;
                if start == "crate" {
                    j += 2;
                } else {
                    let mut module: Vec<String> = file_module.to_vec();
                    module.extend(inline.iter().map(|(name, _)| name.clone()));
                    while token(j) == Some("super") && token(j + 1) == Some("::") {
                        module.pop();
                        j += 2;
                    }
                    base = Some(module);
                }
                let prefix = text[tokens[i].0..tokens[j].0].replace(char::is_whitespace, "");
                let prefix = if is_macro_crate { format!("${prefix}") } else { prefix };
                let (targets, in_group) = match token(j) {
                    Some("{") => (group_items(&tokens, j), true),
                    Some(name) if name != "*" => (vec![(j, name)], false),
                    _ => (Vec::new(), false),
                };
                for (at, name) in targets {
                    let target = match &base {
                        Some(module) if !module.is_empty() => Target::Module(module[0].clone()),
                        _ => Target::RootItem(name.to_string()),
                    };
                    let rest = segments(&tokens, at);
                    let written = if in_group {
                        format!("{prefix}{{{rest}}}")
                    } else {
                        format!("{prefix}{rest}")
                    };
                    found.push(FoundPath { line: line_at(tokens[at].0), written, target });
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The first identifier of each item of the `{ ... }` group opening at
/// token `open` (`self` items name the group's own parent and are skipped).
fn group_items<'a>(tokens: &[(usize, &'a str)], open: usize) -> Vec<(usize, &'a str)> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut expect_item = true;
    for (index, (_, token)) in tokens.iter().enumerate().skip(open) {
        match *token {
            "{" => {
                depth += 1;
                if depth > 1 {
                    expect_item = false;
                }
            }
            "}" => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            "," if depth == 1 => expect_item = true,
            name if depth == 1 && expect_item => {
                expect_item = false;
                if name != "self" && name != "*" {
                    items.push((index, name));
                }
            }
            _ => {}
        }
    }
    items
}

/// The segments `a::b::c` of the path whose first segment is token `first`.
fn segments(tokens: &[(usize, &str)], first: usize) -> String {
    let is_ident = |index: usize| {
        tokens.get(index).is_some_and(|(_, t)| t.chars().all(|c| c.is_alphanumeric() || c == '_'))
    };
    let mut text = String::from(tokens[first].1);
    let mut at = first;
    while tokens.get(at + 1).is_some_and(|(_, t)| *t == "::") && is_ident(at + 2) {
        text.push_str("::");
        text.push_str(tokens[at + 2].1);
        at += 2;
    }
    text
}

#[cfg(test)]
mod tests;
