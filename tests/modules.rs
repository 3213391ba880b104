//! The module-structure rule: no module imports a module that imports it.
//!
//! This test reads `src/**/*.rs` as text (it needs no compiler plugin and no dependency)
//! and fails with one line per import cycle. Run it with `cargo test --test modules`;
//! docs/design-notes.md ("Module structure") explains the rule.
//!
//! How the check sees the code:
//!
//! - **The module tree** is the one rustc builds: from each crate root (`src/lib.rs`,
//!   `src/main.rs`, `src/bin/*`) it follows `mod x;` declarations to `x.rs` or
//!   `x/mod.rs`. Test code is left out, because a test may reach anywhere: `mod tests`
//!   (inline or as `tests.rs`) and every item under `#[cfg(test)]`. Inline modules
//!   other than `tests` count as part of their file.
//! - **Comments and literals** are blanked first, so doc links, commented-out code and
//!   strings that look like paths do not count.
//! - **A reference** is a `use` of a `crate::`, `super::` or `self::` path (groups such
//!   as `use crate::{a, b::{c, d}}` expand to one reference each, across lines), or the
//!   same kind of path written inline in code (`crate::a::f(..)`, `super::b::T`). Each
//!   resolves to the longest module path that exists: `crate::keys::Jwk` is a reference
//!   to `keys`, wherever `Jwk` is really defined.
//! - **An edge** `M -> T` joins two modules when `M` names `T` and neither is inside the
//!   other. A reference to an ancestor (`super::Error`, re-exported by the parent) or to
//!   a descendant is not an edge: a parent declares its children and shows their items
//!   as its own, and children build on their parent's names; that is Rust's ordinary
//!   structure, not a cycle.
//! - **A cycle** is any elementary cycle in a crate's graph, of any length and across
//!   levels (`a::x -> b -> a::x` counts), reported with one reference per edge: file,
//!   line and the path as written (a group expanded), and how many more make that edge.
//!
//! Each module is its own node; a subtree is not merged into one. Merging would make the
//! rule "no subtree imports a subtree that imports it", which also flags loops in which
//! no module imports a module that imports it (`error` naming `token::verify` while
//! `token::claims` names `error`). The other side of that choice: a path
//! stops at the module it names, so an item reached through a parent's `pub use` counts
//! as the parent's, and a loop closed only through such a re-export is not seen.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cycles = module_cycles(root).unwrap_or_else(|e| panic!("cannot scan src/: {e}"));
    assert!(
        cycles.is_empty(),
        "{} module cycle(s); no module may import a module that imports it \
         (docs/design-notes.md, \"Module structure\"):\n{}\n",
        cycles
            .iter()
            .filter(|line| line.starts_with("cycle"))
            .count(),
        cycles.join("\n")
    );
}

/// Writes `files` (path under the package root, contents) to a temporary package.
fn package(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (path, contents) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().expect("files are in src/")).expect("mkdir");
        fs::write(path, contents).expect("write a source file");
    }
    dir
}

#[test]
fn the_checker_reports_each_cycle() {
    let dir = package(&[
        (
            "src/lib.rs",
            "//! Links such as [`crate::net`] are not imports.\n\
             pub mod a;\npub mod b;\npub mod c;\npub mod d;\npub mod net;\n",
        ),
        // A multi-line group, with `self`.
        (
            "src/a.rs",
            "use crate::{\n    b::{self,\n        Thing},\n};\npub fn f() {}\n",
        ),
        // A char literal holding a quote, and lifetimes, before an inline path.
        (
            "src/b.rs",
            "pub struct Thing;\n\
             pub fn g<'a>(x: &'a str) -> &'a str {\n    let _q = '\"';\n    crate::c::h();\n    x\n}\n",
        ),
        ("src/c.rs", "pub fn h() {\n    super::a::f();\n}\n"),
        // Not siblings: a module and another's child.
        (
            "src/d.rs",
            "pub fn x() {}\npub fn y() -> crate::net::unix::Socket {\n    crate::net::unix::Socket\n}\n",
        ),
        ("src/net/mod.rs", "mod tcp;\nmod unix;\n"),
        (
            "src/net/tcp.rs",
            "use super::unix::Socket;\npub struct Listener(Socket);\n",
        ),
        (
            "src/net/unix.rs",
            "pub struct Socket;\n\
             pub fn listen() -> super::tcp::Listener {\n    super::tcp::Listener(Socket)\n}\n\
             pub fn z() {\n    crate::d::x()\n}\n",
        ),
    ]);
    assert_eq!(
        module_cycles(dir.path()).expect("the tree reads"),
        [
            "cycle: a -> b -> c -> a (src/a.rs:2 uses crate::b (+1 more); \
             src/b.rs:4 uses crate::c::h; src/c.rs:2 uses super::a::f)",
            "cycle: d -> net::unix -> d (src/d.rs:2 uses crate::net::unix::Socket (+1 more); \
             src/net/unix.rs:6 uses crate::d::x)",
            "cycle: net::tcp -> net::unix -> net::tcp (src/net/tcp.rs:1 uses super::unix::Socket; \
             src/net/unix.rs:2 uses super::tcp::Listener (+1 more))",
        ]
    );
}

#[test]
fn the_checker_accepts_reexports_super_paths_and_test_code() {
    // Each trap below would close a cycle if it counted: service imports error and hsm,
    // and hsm::signing imports hsm::objects.
    let dir = package(&[
        (
            "src/lib.rs",
            "pub mod error;\npub mod hsm;\npub mod service;\npub use error::Error;\n",
        ),
        (
            "src/error.rs",
            "/// Raised by [`crate::service::Service`].\n\
             pub struct Error;\n\
             #[cfg(test)]\nfn helper() -> crate::service::Service { todo!() }\n\
             #[cfg(test)]\n#[allow(unused)]\nmod tests {\n    use crate::service::Service;\n}\n",
        ),
        (
            "src/hsm/mod.rs",
            "mod objects;\nmod signing;\n#[cfg(test)]\nmod tests;\n\
             pub use objects::Handle;\npub use signing::sign;\npub struct HsmError;\n",
        ),
        (
            "src/hsm/objects.rs",
            r##"use super::HsmError;
pub struct Handle;
pub fn find() -> Result<Handle, super::HsmError> {
    let _ = ("super::signing::sign", r#"crate::hsm::signing"#, b"super::signing", '"');
    // use super::signing;
    /* super::signing::sign /* nested */ super::signing */
    Ok(Handle)
}
"##,
        ),
        (
            "src/hsm/signing.rs",
            "use super::{objects::Handle, HsmError};\n\
             pub fn sign<'a>(h: &'a Handle) -> Result<&'a Handle, super::super::error::Error> {\n\
             \x20   Ok(h)\n}\n",
        ),
        // Never read: a test file may reach anywhere (and its `mod` has no file).
        (
            "src/hsm/tests.rs",
            "mod fixtures;\nuse crate::service::Service;\n",
        ),
        (
            "src/service/mod.rs",
            "mod admin;\nuse crate::error::Error;\nuse crate::hsm::{self, Handle};\npub struct Service;\n",
        ),
        (
            "src/service/admin.rs",
            "use super::Service;\nuse crate::Error;\n\
             pub fn run<'a>(_: &Service, v: &'a [u8]) -> impl Iterator<Item = &'a u8> + use<'a> {\n\
             \x20   v.iter()\n}\n",
        ),
    ]);
    assert_eq!(
        module_cycles(dir.path()).expect("the tree reads"),
        Vec::<String>::new()
    );
}

// ------------------------------------------------------------------------ the checker

/// One module of a crate, read and cleaned.
struct Module {
    /// Its path from the crate root: `["hsm", "objects"]`; empty for the root.
    path: Vec<String>,
    /// Its file, relative to the package root, for messages.
    file: String,
    /// The file with comments, literals and test code blanked; newlines kept.
    code: String,
}

/// The modules each module names (an edge), with the references that name it, in order.
type Graph<'r> = BTreeMap<Vec<String>, BTreeMap<Vec<String>, Vec<&'r Reference>>>;

/// How many cycles one crate's report lists at most.
const MAX_CYCLES: usize = 50;

/// One path a module names, resolved.
struct Reference {
    /// Index of the referring module.
    from: usize,
    /// 1-based line of the path.
    line: usize,
    /// The path as written (a `use` group expanded): `crate::service::hex`.
    written: String,
    /// The longest existing module the path names.
    target: Vec<String>,
}

/// Every import cycle between the modules of the package at `package`, one readable
/// line each: `cycle: a -> b -> a (src/a.rs:3 uses crate::b::f; src/b.rs:9 uses crate::a::T)`.
fn module_cycles(package: &Path) -> Result<Vec<String>, String> {
    let mut report = Vec::new();
    for root in crate_roots(&package.join("src")) {
        let modules = load_crate(package, &root)?;
        let label = if root.ends_with("src/lib.rs") {
            String::new()
        } else {
            format!(" in {}", relative(package, &root))
        };
        let references = references(&modules);
        // module -> module it names -> the references that make that edge.
        let mut graph: Graph = BTreeMap::new();
        for reference in &references {
            let from = &modules[reference.from].path;
            let to = &reference.target;
            if to.starts_with(from) || from.starts_with(to) {
                continue; // the module itself, a descendant, or an ancestor
            }
            graph
                .entry(from.clone())
                .or_default()
                .entry(to.clone())
                .or_default()
                .push(reference);
        }
        let (cycles, complete) = elementary_cycles(&graph, MAX_CYCLES);
        for cycle in cycles {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            let evidence: Vec<String> = cycle
                .iter()
                .zip(cycle.iter().cycle().skip(1))
                .map(|(a, b)| {
                    let refs = &graph[a][b];
                    let more = match refs.len() - 1 {
                        0 => String::new(),
                        n => format!(" (+{n} more)"),
                    };
                    let first = refs[0];
                    let file = &modules[first.from].file;
                    format!("{file}:{} uses {}{more}", first.line, first.written)
                })
                .collect();
            report.push(format!(
                "cycle{label}: {} -> {} ({})",
                names.join(" -> "),
                names[0],
                evidence.join("; ")
            ));
        }
        if !complete {
            report.push(format!(
                "(more cycles{label}; only the first {MAX_CYCLES} are listed)"
            ));
        }
    }
    Ok(report)
}

/// The crate roots under `src`: the library, the binary, and any `src/bin` targets.
fn crate_roots(src: &Path) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .filter(|f| f.is_file())
        .collect();
    if let Ok(entries) = fs::read_dir(src.join("bin")) {
        let mut bins: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                if p.is_dir() {
                    Some(p.join("main.rs")).filter(|m| m.is_file())
                } else {
                    Some(p).filter(|p| p.extension().is_some_and(|e| e == "rs"))
                }
            })
            .collect();
        bins.sort();
        roots.extend(bins);
    }
    roots
}

fn relative(package: &Path, file: &Path) -> String {
    file.strip_prefix(package)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// The crate whose root file is `root`, following `mod x;` declarations as rustc does.
fn load_crate(package: &Path, root: &Path) -> Result<Vec<Module>, String> {
    let mut modules = Vec::new();
    let root_dir = root.parent().expect("a crate root is in a directory");
    // (file, module path, the directory its `mod x;` children live in)
    let mut queue = vec![(
        root.to_path_buf(),
        Vec::<String>::new(),
        root_dir.to_path_buf(),
    )];
    while let Some((file, path, dir)) = queue.pop() {
        let text =
            fs::read_to_string(&file).map_err(|e| format!("{}: {e}", relative(package, &file)))?;
        let code = blank_test_code(&blank_comments_and_literals(&text));
        for name in mod_declarations(&code) {
            let flat = dir.join(format!("{name}.rs"));
            let nested = dir.join(&name).join("mod.rs");
            let child = if flat.is_file() {
                flat
            } else if nested.is_file() {
                nested
            } else {
                return Err(format!(
                    "{}: `mod {name};` has neither {} nor {}",
                    relative(package, &file),
                    relative(package, &flat),
                    relative(package, &nested)
                ));
            };
            let mut child_path = path.clone();
            child_path.push(name.clone());
            queue.push((child, child_path, dir.join(&name)));
        }
        modules.push(Module {
            path,
            file: relative(package, &file),
            code,
        });
    }
    modules.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(modules)
}

// ----------------------------------------------------------------- reading the text

/// `src` with comments and string, char and byte literals replaced by spaces. Newlines
/// stay, so line numbers do too.
fn blank_comments_and_literals(src: &str) -> String {
    let b = src.as_bytes();
    let n = b.len();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for byte in &mut out[from..to.min(n)] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
    };
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    let mut i = 0;
    while i < n {
        match b[i] {
            b'/' if at(i + 1) == b'/' => {
                let end = src[i..].find('\n').map_or(n, |k| i + k);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if at(i + 1) == b'*' => {
                let (mut depth, mut j) = (1, i + 2);
                while j < n && depth > 0 {
                    if at(j) == b'/' && at(j + 1) == b'*' {
                        depth += 1;
                        j += 2;
                    } else if at(j) == b'*' && at(j + 1) == b'/' {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            b'"' => {
                let mut j = i + 1;
                while j < n && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i, j + 1);
                i = j + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\'', '\u{..}') or a lifetime ('a, 'static).
                let end = if at(i + 1) == b'\\' {
                    (i + 3..n).find(|&j| b[j] == b'\'').map(|j| j + 1)
                } else {
                    let width = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (at(i + 1 + width) == b'\'').then_some(i + 2 + width)
                };
                match end {
                    Some(end) => {
                        blank(&mut out, i, end);
                        i = end;
                    }
                    None => i += 1,
                }
            }
            c @ (b'r' | b'b' | b'c') if i == 0 || !is_ident(b[i - 1]) => {
                // Raw strings: r"..", r#".."#, br"..", cr#".."#. Anything else (an
                // identifier, r#raw_ident) is skipped as a whole word.
                let mut j = i + 1;
                if c != b'r' && at(j) == b'r' {
                    j += 1;
                }
                let raw = c == b'r' || j == i + 2;
                let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
                if raw && at(j + hashes) == b'"' {
                    let close: Vec<u8> = std::iter::once(b'"')
                        .chain(std::iter::repeat_n(b'#', hashes))
                        .collect();
                    let body = j + hashes + 1;
                    let end = b[body..]
                        .windows(close.len())
                        .position(|w| w == close.as_slice())
                        .map_or(n, |k| body + k + close.len());
                    blank(&mut out, i, end);
                    i = end;
                } else {
                    while i < n && is_ident(b[i]) {
                        i += 1;
                    }
                }
            }
            c if is_ident(c) => {
                while i < n && is_ident(b[i]) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced, by ASCII")
}

/// A token of cleaned code: an identifier, `::`, or one punctuation character.
#[derive(Clone, Debug)]
struct Token {
    text: String,
    line: usize,
    /// Byte offset in the code.
    at: usize,
}

fn tokens(code: &str) -> Vec<Token> {
    let b = code.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < b.len() {
        let start = i;
        if b[i] == b'\n' {
            line += 1;
            i += 1;
            continue;
        } else if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        } else if is_ident(b[i]) {
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
        } else if b[i] == b':' && b.get(i + 1) == Some(&b':') {
            i += 2;
        } else {
            i += code[i..].chars().next().map_or(1, char::len_utf8);
        }
        out.push(Token {
            text: code[start..i].to_string(),
            line,
            at: start,
        });
    }
    out
}

/// Blanks test code: `mod tests { .. }`, and every item under `#[cfg(test)]`. A file
/// under `#![cfg(test)]` is blanked whole.
fn blank_test_code(code: &str) -> String {
    let toks = tokens(code);
    let text = |k: usize| toks.get(k).map_or("", |t| t.text.as_str());
    let mut ranges = Vec::new(); // byte ranges to blank
    let mut k = 0;
    while k < toks.len() {
        let inner = text(k) == "#" && text(k + 1) == "!";
        let attr = if inner { k + 1 } else { k };
        let cfg_test = text(k) == "#"
            && [
                text(attr + 1),
                text(attr + 2),
                text(attr + 3),
                text(attr + 4),
                text(attr + 5),
            ] == ["[", "cfg", "(", "test", ")"]
            && text(attr + 6) == "]";
        let item_start = if cfg_test {
            if inner {
                return code.replace(|c: char| c != '\n', " ");
            }
            Some(attr + 7)
        } else if text(k) == "mod" && text(k + 1) == "tests" {
            Some(k)
        } else {
            None
        };
        let Some(mut j) = item_start else {
            k += 1;
            continue;
        };
        // The item ends at its first `;` or at the `}` matching its first `{`, outside
        // any other brackets (attributes, generics' bounds, a tuple struct's fields).
        let mut depth = 0usize;
        let end = loop {
            match text(j) {
                "" => break toks.len(),
                "(" | "[" => depth += 1,
                ")" | "]" => depth = depth.saturating_sub(1),
                ";" if depth == 0 => break j + 1,
                "{" if depth == 0 => break matching_brace(&toks, j).map_or(toks.len(), |e| e + 1),
                _ => {}
            }
            j += 1;
        };
        let from = toks[k].at;
        let to = toks.get(end).map_or(code.len(), |t| t.at);
        ranges.push((from, to));
        k = end;
    }
    let mut out = code.as_bytes().to_vec();
    for (from, to) in ranges {
        for byte in &mut out[from..to] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced, by ASCII")
}

/// The index of the `}` closing the `{` at `open`.
fn matching_brace(toks: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, t) in toks.iter().enumerate().skip(open) {
        match t.text.as_str() {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// The names of `mod x;` declarations (test code already blanked; `tests` skipped).
fn mod_declarations(code: &str) -> Vec<String> {
    let toks = tokens(code);
    toks.windows(3)
        .filter(|w| w[0].text == "mod" && w[2].text == ";" && w[1].text != "tests")
        .map(|w| w[1].text.trim_start_matches("r#").to_string())
        .collect()
}

/// A path as written, segment by segment.
type Segments = Vec<String>;

/// Every `crate::`/`super::`/`self::` path each module names, resolved to the longest
/// existing module.
fn references(modules: &[Module]) -> Vec<Reference> {
    let known: BTreeSet<&[String]> = modules.iter().map(|m| m.path.as_slice()).collect();
    let mut out = Vec::new();
    for (index, module) in modules.iter().enumerate() {
        for (line, written) in paths(&module.code) {
            let Some(absolute) = absolute(&module.path, &written) else {
                continue;
            };
            let mut target = absolute;
            while !known.contains(target.as_slice()) {
                target.pop();
            }
            out.push(Reference {
                from: index,
                line,
                written: match written.split_last() {
                    Some((last, rest)) if last == "self" && !rest.is_empty() => rest.join("::"),
                    _ => written.join("::"),
                },
                target,
            });
        }
    }
    out
}

/// `written` (starting with `crate`, `self` or `super`) as a path from the crate root,
/// seen from module `module`; `None` for other paths (external crates, local names).
fn absolute(module: &[String], written: &[String]) -> Option<Vec<String>> {
    let mut base: Vec<String> = match written.first()?.as_str() {
        "crate" => Vec::new(),
        "self" | "super" => module.to_vec(),
        _ => return None,
    };
    let mut rest = &written[1..];
    if written[0] == "super" {
        base.pop()?;
    }
    while rest.first().is_some_and(|s| s == "super") {
        base.pop()?;
        rest = &rest[1..];
    }
    base.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(base)
}

/// The paths in `code`: each `use` tree expanded, then the paths written inline.
fn paths(code: &str) -> Vec<(usize, Segments)> {
    let toks = tokens(code);
    let text = |k: usize| toks.get(k).map_or("", |t| t.text.as_str());
    let mut out = Vec::new();
    let mut k = 0;
    while k < toks.len() {
        let starts_path = matches!(text(k), "crate" | "super" | "self") && text(k + 1) == "::";
        if text(k) == "use" && text(k + 1) != "<" {
            // `use tree;` (and not `impl Trait + use<'a>`)
            let mut pos = k + 1;
            use_tree(&toks, &mut pos, Vec::new(), &mut out);
            k = pos.max(k + 1);
        } else if starts_path && text(k.wrapping_sub(1)) != "::" {
            let mut segments = vec![text(k).to_string()];
            let mut line = toks[k].line;
            let mut j = k + 1;
            while text(j) == "::" && toks.get(j + 1).is_some_and(|t| is_identifier(&t.text)) {
                segments.push(text(j + 1).to_string());
                line = toks[j + 1].line;
                j += 2;
            }
            out.push((line, segments));
            k = j;
        } else {
            k += 1;
        }
    }
    out
}

fn is_identifier(text: &str) -> bool {
    text.bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c >= 0x80)
}

/// Parses one use tree at `pos` (a path, then `*`, `{ trees }` or a name with an optional
/// `as`), pushing each leaf path after `prefix` with the line of its last segment.
fn use_tree(toks: &[Token], pos: &mut usize, prefix: Segments, out: &mut Vec<(usize, Segments)>) {
    let text = |k: usize| toks.get(k).map_or("", |t| t.text.as_str());
    let mut segments = prefix;
    let mut line = toks.get(*pos).map_or(0, |t| t.line);
    if text(*pos) == "::" {
        *pos += 1; // `use ::extern_crate::..`
    }
    loop {
        match text(*pos) {
            "{" => {
                *pos += 1;
                loop {
                    match text(*pos) {
                        "}" => {
                            *pos += 1;
                            return;
                        }
                        "," => *pos += 1,
                        "" | ";" => return,
                        _ => {
                            let before = *pos;
                            use_tree(toks, pos, segments.clone(), out);
                            if *pos == before {
                                *pos += 1; // not a tree: skip it rather than loop
                            }
                        }
                    }
                }
            }
            "*" => {
                *pos += 1;
                out.push((line, segments));
                return;
            }
            t if is_identifier(t) => {
                segments.push(t.to_string());
                line = toks[*pos].line;
                *pos += 1;
                if text(*pos) == "::" {
                    *pos += 1;
                    continue;
                }
                if text(*pos) == "as" {
                    *pos += 2;
                }
                out.push((line, segments));
                return;
            }
            _ => return,
        }
    }
}

/// The elementary cycles of a directed graph, each once, starting at its least node, in
/// order; at most `limit` of them, and whether that is all.
fn elementary_cycles(graph: &Graph, limit: usize) -> (Vec<Vec<Vec<String>>>, bool) {
    fn walk<'g>(
        graph: &'g Graph,
        path: &mut Vec<&'g Vec<String>>,
        out: &mut Vec<Vec<Vec<String>>>,
        limit: usize,
    ) {
        let (start, last) = (path[0], *path.last().expect("the path holds the start"));
        for next in graph.get(last).into_iter().flat_map(|m| m.keys()) {
            if out.len() > limit {
                return;
            }
            if next == start {
                out.push(path.iter().map(|m| (*m).clone()).collect());
            } else if next > start && !path.contains(&next) {
                path.push(next);
                walk(graph, path, out, limit);
                path.pop();
            }
        }
    }
    let mut out = Vec::new();
    for start in graph.keys() {
        walk(graph, &mut vec![start], &mut out, limit);
    }
    let complete = out.len() <= limit;
    out.truncate(limit);
    (out, complete)
}
