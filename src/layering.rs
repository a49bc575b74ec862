//! The direction of the dependencies, checked by tests at three levels.
//!
//! Crates (`crates_depend_only_downwards`, from `cargo metadata`): the PKCS#11 module
//! (`tsb-pkcs11`, module/) and the command (`tsb-pkcs11-command`, command/) depend on this core
//! crate (`tsb-pkcs11-core`), never on each other; the core on neither; clap is linked into the
//! command only (not into the core, hence not into libtsb_pkcs11.so); the simulator, the
//! Notation plugin and the test support depend on none of the project's crates but the
//! simulator, and the simulator only on its post-quantum arithmetic (`tsb-sim-pqc`,
//! tsb-sim/pqc/, a crate of its own so the dev profile can optimise it alone).
//!
//! ```text
//!   tsb-pkcs11 (module/, cdylib)     tsb-pkcs11-command (command/, bin, clap)
//!                  \                  /
//!                   tsb-pkcs11-core (src/)          tsb-sim    notation-pkcs11
//!                                                      |
//!                                                   tsb-sim-pqc
//! ```
//!
//! Modules of this crate (`layers_only_point_down`): a module may use the modules of lower
//! layers only, as the diagram below says (the test reads it from this comment). A path in code
//! (`use crate::…`, `crate::x::f()`, `super::…`, through a re-export such as `crate::Error`)
//! that runs back up, or sideways within a layer, fails the test.
//!
//! ```text
//! 6  fuzzing                  the fuzz targets' door (only with --cfg fuzzing)
//! 5  token                    PKCS#11 semantics
//! 4  error  journal           the error with its CK_RV; the request journal
//! 3  tsb                      the TSB REST client
//! 2  config                   the configuration file
//! 1  logging                  log lines and the sanitiser
//! 0  os  crypto               process facts; pure cryptographic functions
//! ```
//!
//! Files (`files_have_no_cycle`), in every crate of the workspace (its library and binaries,
//! found from `cargo metadata`): inside each module with child modules (the crate root, a
//! folder such as `token/` or `cli/doctor/`), the module's own file (`lib.rs`, `main.rs`,
//! `mod.rs`, or `x.rs` beside `x/`) and its children use each other without a cycle. A child
//! with a folder of its own counts as one node. So a folder's own file only declares, re-exports
//! and calls down: what its children share lives in a file beside them (`token/state.rs`,
//! `cli/common.rs`), never in the module file they would reach back into. Modules come from
//! the `mod x;` declarations (`#[cfg(test)]`
//! modules and inline test modules left out: tests may use anything); edges from the paths in
//! code (not in comments or strings), `use a::{b::X, c::{Y, Z}}` groups expanded, a name a
//! module re-exports followed to where it comes from; `pub(in a::b)` is no edge. The simulator's files also keep the
//! layers of the diagram in `tsb-sim/src/lib.rs` (`simulator_files_follow_their_layers`).

/// The project's crates, with the project's crates each may depend on (normal and build
/// dependencies; dev-dependencies may only add the simulator and the test support).
#[cfg(test)]
const CRATES: &[(&str, &[&str])] = &[
    ("tsb-pkcs11-core", &[]),
    ("tsb-pkcs11", &["tsb-pkcs11-core"]),
    ("tsb-pkcs11-command", &["tsb-pkcs11-core"]),
    ("tsb-sim", &["tsb-sim-pqc"]),
    ("tsb-sim-pqc", &[]),
    ("notation-pkcs11", &[]),
    ("tsb-pkcs11-test-support", &["tsb-sim"]),
];

/// What tests may use beside a crate's own dependencies.
#[cfg(test)]
const TEST_CRATES: &[&str] = &["tsb-sim", "tsb-pkcs11-test-support"];

/// Crates that only the command may link: every process that loads the module maps the .so.
#[cfg(test)]
const COMMAND_ONLY: &[&str] = &["clap", "clap_builder", "clap_derive"];

#[cfg(test)]
mod tests {
    use super::{COMMAND_ONLY, CRATES, TEST_CRATES};
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// Package name -> (dependency name, kind: "normal", "build" or "dev").
    type Graph = BTreeMap<String, Vec<(String, String)>>;

    /// `cargo metadata` of the workspace.
    fn metadata() -> serde_json::Value {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--offline",
                "--manifest-path",
            ])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .output()
            .expect("run cargo metadata");
        assert!(
            out.status.success(),
            "cargo metadata: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The dependency graph of the workspace as `cargo metadata` resolves it, and the names of
    /// the workspace members. Names are unique in this lock file except for a few registry
    /// crates, which the checks only look up by name.
    fn dependency_graph() -> (Graph, BTreeSet<String>) {
        let v = metadata();
        let name_of: BTreeMap<&str, &str> = v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
            .collect();
        let members: BTreeSet<String> = v["workspace_members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| name_of[id.as_str().unwrap()].to_string())
            .collect();
        let mut graph = Graph::new();
        for node in v["resolve"]["nodes"].as_array().unwrap() {
            let from = name_of[node["id"].as_str().unwrap()].to_string();
            let edges = graph.entry(from).or_default();
            for dep in node["deps"].as_array().unwrap() {
                let to = name_of[dep["pkg"].as_str().unwrap()].to_string();
                for kind in dep["dep_kinds"].as_array().unwrap() {
                    let kind = kind["kind"].as_str().unwrap_or("normal").to_string();
                    edges.push((to.clone(), kind));
                }
            }
        }
        (graph, members)
    }

    /// Every crate `from` links: its normal dependencies, transitively.
    fn linked(graph: &Graph, from: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(c) = todo.pop() {
            for (to, kind) in graph.get(&c).into_iter().flatten() {
                if kind == "normal" && seen.insert(to.clone()) {
                    todo.push(to.clone());
                }
            }
        }
        seen
    }

    /// The rules of the module documentation, on a dependency graph; returns the violations.
    fn crate_rule_violations(graph: &Graph, members: &BTreeSet<String>) -> Vec<String> {
        let mut wrong = Vec::new();
        for member in members {
            let Some((_, allowed)) = CRATES.iter().find(|(c, _)| c == member) else {
                wrong.push(format!("crate `{member}` has no entry in CRATES"));
                continue;
            };
            for (to, kind) in graph.get(member).into_iter().flatten() {
                if !members.contains(to) {
                    continue;
                }
                let ok = allowed.contains(&to.as_str())
                    || (kind == "dev" && TEST_CRATES.contains(&to.as_str()));
                if !ok {
                    wrong.push(format!("`{member}` has a {kind} dependency on `{to}`"));
                }
            }
        }
        for top in ["tsb-pkcs11-core", "tsb-pkcs11"] {
            for c in linked(graph, top) {
                if COMMAND_ONLY.contains(&c.as_str()) {
                    wrong.push(format!("`{top}` links `{c}`, which only the command may"));
                }
            }
        }
        wrong
    }

    #[test]
    fn crates_depend_only_downwards() {
        let (graph, members) = dependency_graph();
        for (c, _) in CRATES {
            assert!(members.contains(*c), "`{c}` is a workspace member");
        }
        assert!(
            linked(&graph, "tsb-pkcs11-command").contains("clap"),
            "the check sees the command's clap"
        );
        let wrong = crate_rule_violations(&graph, &members);
        assert!(
            wrong.is_empty(),
            "crate dependencies that run the wrong way:\n{}",
            wrong.join("\n")
        );
    }

    /// The rules catch each kind of wrong edge (a graph edited by hand).
    #[test]
    fn crate_rules_catch_wrong_edges() {
        let (graph, members) = dependency_graph();
        for (from, to, kind) in [
            ("tsb-pkcs11-core", "tsb-pkcs11", "normal"),
            ("tsb-pkcs11-core", "tsb-pkcs11-command", "dev"),
            ("tsb-pkcs11", "tsb-pkcs11-command", "normal"),
            ("tsb-pkcs11-command", "tsb-pkcs11", "build"),
            ("tsb-sim", "tsb-pkcs11-core", "normal"),
            ("tsb-sim-pqc", "tsb-sim", "normal"),
            ("tsb-pkcs11-core", "clap", "normal"),
            ("tsb-pkcs11", "clap_builder", "normal"),
        ] {
            let mut g = graph.clone();
            g.entry(from.to_string())
                .or_default()
                .push((to.to_string(), kind.to_string()));
            assert!(
                !crate_rule_violations(&g, &members).is_empty(),
                "{from} -> {to} ({kind}) is caught"
            );
        }
    }

    // ---------------------------------------------------------------------------------------
    // The file graph of a crate: which module each file is, which modules its code names.

    /// The source text with comments, string and character literals blanked (newlines kept),
    /// so that what is left is code.
    fn code_of(text: &str) -> String {
        let b = text.as_bytes();
        let mut out = b.to_vec();
        let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
            for c in &mut out[from..to] {
                if *c != b'\n' {
                    *c = b' ';
                }
            }
        };
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let mut i = 0;
        while i < b.len() {
            let prev_ident = i > 0 && ident(b[i - 1]);
            if b[i..].starts_with(b"//") {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            } else if b[i..].starts_with(b"/*") {
                // Block comments nest.
                let (mut depth, mut j) = (0usize, i);
                while j < b.len() {
                    if b[j..].starts_with(b"/*") {
                        depth += 1;
                        j += 2;
                    } else if b[j..].starts_with(b"*/") {
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
            } else if !prev_ident && (b[i] == b'r' || b[i..].starts_with(b"br")) && {
                // A raw string: r"…", r#"…"#, br"…".
                let s = if b[i] == b'r' { i + 1 } else { i + 2 };
                let hashes = b[s..].iter().take_while(|&&c| c == b'#').count();
                b.get(s + hashes) == Some(&b'"')
            } {
                let s = if b[i] == b'r' { i + 1 } else { i + 2 };
                let hashes = b[s..].iter().take_while(|&&c| c == b'#').count();
                let mut close = vec![b'"'];
                close.extend(std::iter::repeat_n(b'#', hashes));
                let body = s + hashes + 1;
                let end = b[body..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |p| body + p + close.len());
                blank(&mut out, i, end);
                i = end;
            } else if b[i] == b'"' {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                let end = (j + 1).min(b.len());
                blank(&mut out, i, end);
                i = end;
            } else if b[i] == b'\''
                && (!prev_ident || (b[i - 1] == b'b' && (i < 2 || !ident(b[i - 2]))))
            {
                // A character or byte literal ('a', '\n', '\u{1F600}', '"', b'{'), not a
                // lifetime ('a).
                let rest = &text[i + 1..];
                let len = if rest.starts_with('\\') {
                    rest.find('\'').filter(|&p| p > 1).map(|p| p + 1)
                } else {
                    rest.chars()
                        .next()
                        .map(char::len_utf8)
                        .filter(|&l| rest[l..].starts_with('\''))
                        .map(|l| l + 1)
                };
                match len {
                    Some(l) => {
                        blank(&mut out, i, i + 1 + l);
                        i += 1 + l;
                    }
                    None => i += 1,
                }
            } else {
                i += 1;
            }
        }
        String::from_utf8(out).expect("blanking keeps UTF-8 boundaries")
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Ident(String),
        Colons,
        Punct(char),
    }

    fn tokens(code: &str) -> Vec<Tok> {
        let mut out = Vec::new();
        let mut chars = code.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c.is_alphanumeric() || c == '_' {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if !(d.is_alphanumeric() || d == '_') {
                        break;
                    }
                    end = j + d.len_utf8();
                    chars.next();
                }
                out.push(Tok::Ident(code[i..end].to_string()));
            } else if c == ':' && chars.peek().is_some_and(|&(_, d)| d == ':') {
                chars.next();
                out.push(Tok::Colons);
            } else if !c.is_whitespace() {
                out.push(Tok::Punct(c));
            }
        }
        out
    }

    /// What the code of one file names: the child modules it declares (`mod x;`, not those
    /// under `#[cfg(test)]`) and each path (`a::b::{c, d::e}` expanded to `a::b::c` and
    /// `a::b::d::e`), with the inline modules (`mod x { … }`) around it. Inline test modules
    /// (`#[cfg(test)] mod tests { … }`) are left out: tests may use anything.
    #[derive(Debug, Default, Clone, PartialEq)]
    struct FileCode {
        children: Vec<String>,
        /// (inline modules around the path, the path's segments)
        paths: Vec<(Vec<String>, Vec<String>)>,
        /// The names the file's `use` declarations bind outside inline modules, with their
        /// paths (`use a::{b::C, d}`: `C` is `a::b::C`).
        uses: BTreeMap<String, Vec<String>>,
    }

    fn is_ident(t: Option<&Tok>, s: &str) -> bool {
        matches!(t, Some(Tok::Ident(x)) if x == s)
    }

    /// Whether the attributes and visibility before `toks[at]` include `#[cfg(test)]`.
    fn under_cfg_test(toks: &[Tok], at: usize) -> bool {
        let mut i = at;
        // Visibility: `pub`, `pub(crate)`, `pub(super)`, `pub(in path)`.
        if i > 0 && toks[i - 1] == Tok::Punct(')') {
            while i > 0 && toks[i - 1] != Tok::Punct('(') {
                i -= 1;
            }
            i = i.saturating_sub(1);
        }
        if i > 0 && is_ident(toks.get(i - 1), "pub") {
            i -= 1;
        }
        while i > 0 && toks[i - 1] == Tok::Punct(']') {
            let end = i - 1;
            let mut j = end;
            while j > 0 && toks[j] != Tok::Punct('[') {
                j -= 1;
            }
            let attr = &toks[j + 1..end];
            if is_ident(attr.first(), "cfg") && attr.iter().any(|t| is_ident(Some(t), "test")) {
                return true;
            }
            // `#[` or `#![`
            i = j.saturating_sub(1);
        }
        false
    }

    /// The paths of a use tree or path expression starting at `toks[i]`; returns them and the
    /// index after it.
    fn path_tree(toks: &[Tok], mut i: usize) -> (Vec<Vec<String>>, usize) {
        let mut prefix = Vec::new();
        loop {
            match toks.get(i) {
                Some(Tok::Ident(s)) => {
                    prefix.push(s.clone());
                    i += 1;
                }
                Some(Tok::Punct('{')) => {
                    let mut out = Vec::new();
                    i += 1;
                    loop {
                        match toks.get(i) {
                            Some(Tok::Punct('}')) => return (out, i + 1),
                            Some(Tok::Punct(',')) => i += 1,
                            Some(Tok::Ident(_)) | Some(Tok::Punct('{')) => {
                                let (sub, next) = path_tree(toks, i);
                                out.extend(sub.into_iter().map(|p| [prefix.clone(), p].concat()));
                                // Skip what ends a subtree (`as name`, `*`).
                                i = next;
                                while let Some(t) = toks.get(i) {
                                    if matches!(t, Tok::Punct(',') | Tok::Punct('}')) {
                                        break;
                                    }
                                    i += 1;
                                }
                            }
                            Some(_) => i += 1,
                            None => return (out, i),
                        }
                    }
                }
                _ => return (vec![prefix], i),
            }
            if toks.get(i) == Some(&Tok::Colons) {
                i += 1;
            } else {
                return (vec![prefix], i);
            }
        }
    }

    fn file_code(text: &str) -> FileCode {
        let toks = tokens(&code_of(text));
        let mut fc = FileCode::default();
        // Inline modules open: (name, brace depth inside it).
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut i = 0;
        while i < toks.len() {
            match &toks[i] {
                Tok::Punct('{') => {
                    depth += 1;
                    i += 1;
                }
                Tok::Punct('}') => {
                    if inline.last().is_some_and(|(_, d)| *d == depth) {
                        inline.pop();
                    }
                    depth = depth.saturating_sub(1);
                    i += 1;
                }
                Tok::Ident(m) if m == "mod" && matches!(toks.get(i + 1), Some(Tok::Ident(_))) => {
                    let Some(Tok::Ident(name)) = toks.get(i + 1) else {
                        unreachable!()
                    };
                    let test = under_cfg_test(&toks, i);
                    match toks.get(i + 2) {
                        Some(Tok::Punct(';')) => {
                            if !test {
                                fc.children.push(name.clone());
                            }
                            i += 3;
                        }
                        Some(Tok::Punct('{')) if test => {
                            // Skip the block.
                            let mut d = 0usize;
                            i += 2;
                            while i < toks.len() {
                                match toks[i] {
                                    Tok::Punct('{') => d += 1,
                                    Tok::Punct('}') => {
                                        d -= 1;
                                        if d == 0 {
                                            break;
                                        }
                                    }
                                    _ => {}
                                }
                                i += 1;
                            }
                            i += 1;
                        }
                        Some(Tok::Punct('{')) => {
                            depth += 1;
                            inline.push((name.clone(), depth));
                            i += 3;
                        }
                        _ => i += 2,
                    }
                }
                // `pub(in crate::a)` names who may see an item, not what it uses.
                Tok::Ident(w)
                    if w == "in"
                        && i >= 2
                        && matches!(toks[i - 1], Tok::Punct('('))
                        && is_ident(toks.get(i - 2), "pub") =>
                {
                    i = path_tree(&toks, i + 1).1.max(i + 1);
                }
                Tok::Ident(_)
                    if i == 0 || !matches!(toks[i - 1], Tok::Colons | Tok::Punct('.')) =>
                {
                    let is_use = is_ident(toks.get(i), "use");
                    let (paths, next) = path_tree(&toks, if is_use { i + 1 } else { i });
                    let around: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
                    for mut p in paths {
                        if is_use && inline.is_empty() {
                            if p.last().is_some_and(|s| s == "self") {
                                p.pop();
                            }
                            if let Some(name) = p.last().filter(|_| p.len() >= 2) {
                                fc.uses.insert(name.clone(), p.clone());
                            }
                        }
                        if p.len() >= 2 {
                            fc.paths.push((around.clone(), p));
                        }
                    }
                    i = next.max(i + 1);
                }
                _ => i += 1,
            }
        }
        fc
    }

    /// One module of a crate that has a file of its own.
    struct Module {
        path: Vec<String>,
        file: PathBuf,
        code: FileCode,
    }

    /// The modules of the crate whose root file is `root` (`lib.rs`, `main.rs`), found from
    /// their `mod x;` declarations (`x.rs` or `x/mod.rs`).
    fn crate_modules(root: &Path) -> Vec<Module> {
        let mut out = Vec::new();
        let mut todo = vec![(Vec::new(), root.to_path_buf())];
        while let Some((path, file)) = todo.pop() {
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let code = file_code(&text);
            let stem = file.file_stem().unwrap().to_string_lossy().to_string();
            let parent = file.parent().unwrap();
            let dir = if path.is_empty() || stem == "mod" {
                parent.to_path_buf()
            } else {
                parent.join(&stem)
            };
            for child in &code.children {
                let flat = dir.join(format!("{child}.rs"));
                let nested = dir.join(child).join("mod.rs");
                let f = if flat.exists() { flat } else { nested };
                let mut p = path.clone();
                p.push(child.clone());
                todo.push((p, f));
            }
            out.push(Module { path, file, code });
        }
        out
    }

    /// The module a path of the code of module `own` (inside its inline modules `around`)
    /// points into, if it is one of `modules`: `crate::`, `super::`, `self::` paths and paths
    /// through a child module.
    fn target(
        modules: &BTreeMap<Vec<String>, FileCode>,
        own: &[String],
        around: &[String],
        path: &[String],
    ) -> Option<Vec<String>> {
        let here = [own, around].concat();
        let (mut base, rest) = match path[0].as_str() {
            "crate" => (Vec::new(), &path[1..]),
            "self" => (here, &path[1..]),
            "super" => {
                let ups = path.iter().take_while(|s| *s == "super").count();
                (
                    here.get(..here.len().checked_sub(ups)?)?.to_vec(),
                    &path[ups..],
                )
            }
            first => {
                let child = [here.as_slice(), &[first.to_string()]].concat();
                if !modules.contains_key(&child) {
                    return None;
                }
                (here, path)
            }
        };
        // Inline modules are part of their file's module.
        while !modules.contains_key(&base) {
            base.pop();
        }
        let mut rest = rest.iter();
        for seg in rest.by_ref() {
            base.push(seg.clone());
            if !modules.contains_key(&base) {
                let item = base.pop().unwrap();
                // A name the module imports (a re-export): where it comes from. A `use` path
                // is relative to the module that declares it.
                if let Some(via) = modules[&base].uses.get(&item) {
                    if via.as_slice() != path {
                        return target(modules, &base, &[], via);
                    }
                }
                break;
            }
        }
        Some(base)
    }

    /// For each module with child modules, the graph of its files: nodes are its child modules
    /// (a folder with all its files counts as one node) and its own file (`lib.rs`, `main.rs`,
    /// `mod.rs`, `x.rs` beside `x/`); an edge is a path in the code of one node that reaches
    /// into another (see the module documentation).
    type FileGraphs = BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>>;

    fn file_graphs(root: &Path) -> FileGraphs {
        let modules = crate_modules(root);
        let known: BTreeMap<Vec<String>, FileCode> = modules
            .iter()
            .map(|m| (m.path.clone(), m.code.clone()))
            .collect();
        let file_name = |p: &[String]| -> String {
            let m = modules.iter().find(|m| m.path == p).unwrap();
            m.file.file_name().unwrap().to_string_lossy().to_string()
        };
        let mut graphs = FileGraphs::new();
        for m in &modules {
            if !m.code.children.is_empty() {
                let g = graphs.entry(m.path.clone()).or_default();
                g.entry(file_name(&m.path)).or_default();
                for c in &m.code.children {
                    g.entry(c.clone()).or_default();
                }
            }
        }
        for m in &modules {
            for (around, path) in &m.code.paths {
                let Some(t) = target(&known, &m.path, around, path) else {
                    continue;
                };
                let c = m.path.iter().zip(&t).take_while(|(a, b)| a == b).count();
                if c == m.path.len() && c == t.len() {
                    continue;
                }
                let scope = m.path[..c].to_vec();
                // The folder's own file is a node beside its children.
                let node = |p: &[String]| match p.get(c) {
                    Some(child) => child.clone(),
                    None => file_name(&scope),
                };
                let (from, to) = (node(&m.path), node(&t));
                graphs
                    .entry(scope.clone())
                    .or_default()
                    .entry(from)
                    .or_default()
                    .insert(to);
            }
        }
        graphs
    }

    /// The root files of the crates of the workspace (libraries and binaries), relative to the
    /// workspace, sorted.
    fn crate_roots() -> Vec<PathBuf> {
        let v = metadata();
        let ws = Path::new(env!("CARGO_MANIFEST_DIR"));
        let members: BTreeSet<&str> = v["workspace_members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        let mut roots = BTreeSet::new();
        for p in v["packages"].as_array().unwrap() {
            if !members.contains(p["id"].as_str().unwrap()) {
                continue;
            }
            for t in p["targets"].as_array().unwrap() {
                let kinds: Vec<&str> = t["kind"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_str().unwrap())
                    .collect();
                let product = kinds
                    .iter()
                    .any(|k| ["lib", "rlib", "cdylib", "staticlib", "bin"].contains(k));
                if product {
                    let src = Path::new(t["src_path"].as_str().unwrap());
                    roots.insert(src.strip_prefix(ws).unwrap_or(src).to_path_buf());
                }
            }
        }
        roots.into_iter().collect()
    }

    /// The nodes of `edges` that lie on a cycle, as strongly connected components, each with
    /// one of its cycles (`a -> b -> a`).
    fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<(BTreeSet<String>, Vec<String>)> {
        let reach = |from: &str| -> BTreeSet<String> {
            let mut seen = BTreeSet::new();
            let mut todo = vec![from.to_string()];
            while let Some(n) = todo.pop() {
                for m in edges.get(&n).into_iter().flatten() {
                    if seen.insert(m.clone()) {
                        todo.push(m.clone());
                    }
                }
            }
            seen
        };
        let reaches: BTreeMap<&String, BTreeSet<String>> =
            edges.keys().map(|n| (n, reach(n))).collect();
        let mut out: Vec<(BTreeSet<String>, Vec<String>)> = Vec::new();
        for (n, r) in &reaches {
            if !r.contains(*n) || out.iter().any(|(c, _)| c.contains(*n)) {
                continue;
            }
            let component: BTreeSet<String> = r
                .iter()
                .filter(|m| reaches.get(m).is_some_and(|back| back.contains(*n)))
                .cloned()
                .collect();
            let inside: BTreeMap<String, BTreeSet<String>> = component
                .iter()
                .map(|a| {
                    let to = edges[a].intersection(&component).cloned().collect();
                    (a.clone(), to)
                })
                .collect();
            let cycle = find_cycle(&inside).expect("a component has a cycle");
            out.push((component, cycle));
        }
        out
    }

    /// A cycle in `edges` (file -> files it uses), if there is one.
    fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn visit(
            n: &str,
            edges: &BTreeMap<String, BTreeSet<String>>,
            state: &mut BTreeMap<String, u8>,
            stack: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            state.insert(n.to_string(), 1);
            stack.push(n.to_string());
            for m in edges.get(n).into_iter().flatten() {
                match state.get(m.as_str()) {
                    Some(1) => {
                        let from = stack.iter().position(|x| x == m).unwrap();
                        let mut cycle = stack[from..].to_vec();
                        cycle.push(m.clone());
                        return Some(cycle);
                    }
                    Some(_) => {}
                    None => {
                        if let Some(c) = visit(m, edges, state, stack) {
                            return Some(c);
                        }
                    }
                }
            }
            stack.pop();
            state.insert(n.to_string(), 2);
            None
        }
        let mut state = BTreeMap::new();
        for n in edges.keys() {
            if !state.contains_key(n.as_str()) {
                if let Some(c) = visit(n, edges, &mut state, &mut Vec::new()) {
                    return Some(c);
                }
            }
        }
        None
    }

    /// `path` relative to the workspace, for messages.
    fn shown(path: &Path) -> String {
        let ws = Path::new(env!("CARGO_MANIFEST_DIR"));
        path.strip_prefix(ws).unwrap_or(path).display().to_string()
    }

    /// The file cycles of the crate whose root file is `root`, one line each.
    fn file_cycles(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for (scope, edges) in file_graphs(root) {
            for (component, cycle) in cycles(&edges) {
                out.push(format!(
                    "{} {}: {} (all of {})",
                    shown(root),
                    if scope.is_empty() {
                        "(crate root)".to_string()
                    } else {
                        scope.join("::")
                    },
                    cycle.join(" -> "),
                    component.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        out
    }

    #[test]
    fn files_have_no_cycle() {
        let ws = Path::new(env!("CARGO_MANIFEST_DIR"));
        let roots = crate_roots();
        for expected in [
            "src/lib.rs",
            "module/src/lib.rs",
            "command/src/main.rs",
            "tsb-sim/src/lib.rs",
            "tsb-sim/src/main.rs",
        ] {
            assert!(
                roots.iter().any(|r| r == Path::new(expected)),
                "{expected} is a crate root: {roots:?}"
            );
        }
        let found: Vec<String> = roots
            .iter()
            .flat_map(|r| file_cycles(&ws.join(r)))
            .collect();
        assert!(found.is_empty(), "file cycles:\n{}", found.join("\n"));
    }

    /// The layers of a diagram in the module documentation of `file`: the lines
    /// `//! N  name name   description` (names and description apart by three spaces or more).
    fn documented_layers(file: &Path) -> BTreeMap<String, u8> {
        let text = std::fs::read_to_string(file).unwrap();
        let mut layers = BTreeMap::new();
        for line in text.lines() {
            let Some(doc) = line.strip_prefix("//! ") else {
                continue;
            };
            let digits: String = doc.chars().take_while(char::is_ascii_digit).collect();
            let Some(rest) = doc[digits.len()..].strip_prefix("  ") else {
                continue;
            };
            let rest = rest.trim_start();
            let Ok(layer) = digits.parse::<u8>() else {
                continue;
            };
            let names = rest.split("   ").next().unwrap_or("");
            for name in names.split_whitespace() {
                layers.insert(name.to_string(), layer);
            }
        }
        layers
    }

    /// The edges of the top-level graph of the crate `root` that do not point to a lower layer
    /// of the diagram in `doc`, and the nodes the diagram does not place (or places but are
    /// gone). Nodes in `exempt` need no layer and may use everything.
    fn layer_violations(root: &Path, doc: &Path, exempt: &[&str]) -> Vec<String> {
        let layers = documented_layers(doc);
        let graphs = file_graphs(root);
        let edges = &graphs[&Vec::new()];
        let mut wrong = Vec::new();
        for node in edges.keys() {
            if !exempt.contains(&node.as_str()) && !layers.contains_key(node) {
                wrong.push(format!("`{node}` has no layer in {}", shown(doc)));
            }
        }
        for name in layers.keys() {
            if !edges.contains_key(name) {
                wrong.push(format!(
                    "{} places `{name}`, which is no module",
                    shown(doc)
                ));
            }
        }
        for (from, tos) in edges {
            if exempt.contains(&from.as_str()) {
                continue;
            }
            let Some(own) = layers.get(from) else {
                continue;
            };
            for to in tos {
                match layers.get(to) {
                    Some(l) if l < own => {}
                    _ => wrong.push(format!(
                        "`{from}` (layer {own}) uses `{to}`, which is not below it"
                    )),
                }
            }
        }
        wrong
    }

    #[test]
    fn layers_only_point_down() {
        let ws = Path::new(env!("CARGO_MANIFEST_DIR"));
        let wrong = layer_violations(
            &ws.join("src/lib.rs"),
            &ws.join("src/layering.rs"),
            // lib.rs wires the modules together; this module only holds tests.
            &["lib.rs", "layering"],
        );
        assert!(
            wrong.is_empty(),
            "imports that run the wrong way:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn simulator_files_follow_their_layers() {
        let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("tsb-sim/src/lib.rs");
        let wrong = layer_violations(&lib, &lib, &[]);
        assert!(
            wrong.is_empty(),
            "simulator imports that run the wrong way:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn the_code_is_found_without_comments_and_strings() {
        let code = code_of(
            "a /* crate::x /* nested */ crate::y */ b // crate::z\n\
             let s = \"crate::q \\\" crate::r\"; let t = r#\"crate::w\"#;\n\
             let c = '\"'; fn f<'a>(x: &'a str) {} let d = b'{';",
        );
        assert!(!code.contains("crate::"), "{code}");
        assert!(code.contains("fn f<'a>(x: &'a str)"), "{code}");
        assert_eq!(code.lines().count(), 3);
        assert!(!code.contains("'{'"), "{code}");
    }

    #[test]
    fn paths_groups_and_modules_are_parsed() {
        let fc = file_code(
            "//! [`crate::doc`]\n\
             use crate::{a::X, b::{Y, c::Z}, d};\n\
             use super::e::{self, F as G};\n\
             pub(crate) mod child;\n\
             #[cfg(test)]\n\
             mod tests;\n\
             mod inline { fn f() { super::h::g(); } }\n\
             fn k() { let v = crate::m::n().collect::<Vec<_>>(); }\n\
             #[cfg(test)]\n\
             mod unit { use crate::hidden::X; }\n",
        );
        assert_eq!(fc.children, ["child"]);
        let paths: Vec<String> = fc
            .paths
            .iter()
            .map(|(around, p)| format!("{}:{}", around.join("::"), p.join("::")))
            .collect();
        assert_eq!(
            paths,
            [
                ":crate::a::X",
                ":crate::b::Y",
                ":crate::b::c::Z",
                ":crate::d",
                ":super::e",
                ":super::e::F",
                "inline:super::h::g",
                ":crate::m::n",
            ]
        );
        assert_eq!(fc.uses["e"], ["super", "e"]);
        assert_eq!(fc.uses["Z"], ["crate", "b", "c", "Z"]);
    }

    /// A small crate written to a temporary folder: files `(path, text)`.
    fn planted(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("layering-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    #[test]
    fn planted_cycles_are_found() {
        let base = [
            ("lib.rs", "mod a;\nmod b;\nmod f;\npub use b::Thing;\n"),
            ("a.rs", "pub fn x() {}\n"),
            ("b.rs", "pub struct Thing;\n"),
            ("f/mod.rs", "mod p;\nmod q;\npub use q::Q;\n"),
            ("f/p.rs", "pub struct P;\n"),
            ("f/q.rs", "pub struct Q;\n"),
        ];
        let crate_with = |name: &str, changes: &[(&str, &str)]| {
            let mut files: BTreeMap<&str, String> =
                base.iter().map(|(p, t)| (*p, t.to_string())).collect();
            for (p, t) in changes {
                files.get_mut(p).unwrap().push_str(t);
            }
            let list: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
            let dir = planted(name, &list);
            let found = file_cycles(&dir.join("lib.rs"));
            std::fs::remove_dir_all(&dir).unwrap();
            found
        };
        assert!(crate_with("none", &[("a.rs", "use crate::b::Thing;\n")]).is_empty());
        // Through a group, a re-export of the crate root, a folder as one node.
        for (name, changes) in [
            (
                "group",
                &[
                    ("a.rs", "use crate::{f::{p::P}, b};\n"),
                    ("f/p.rs", "fn y() { crate::a::x() }\n"),
                ][..],
            ),
            (
                "reexport",
                &[
                    ("a.rs", "fn z(_: crate::Thing) {}\n"),
                    ("b.rs", "fn w() { super::a::x(); }\n"),
                ][..],
            ),
            (
                "folder",
                &[
                    ("f/p.rs", "use super::Q;\n"),
                    ("f/q.rs", "fn v(_: super::p::P) {}\n"),
                ][..],
            ),
            // A child uses what its folder's own file defines, the file uses the child.
            (
                "module-file",
                &[
                    ("f/mod.rs", "pub struct R;\nfn u() { p::y(); }\n"),
                    ("f/p.rs", "pub fn y() {}\nfn t(_: super::R) {}\n"),
                ][..],
            ),
        ] {
            let found = crate_with(name, changes);
            assert_eq!(found.len(), 1, "{name}: {found:?}");
        }
        // Only in comments, strings, tests and visibilities: no cycle.
        assert!(crate_with(
            "quiet",
            &[
                ("a.rs", "use crate::b::Thing;\n"),
                ("f/q.rs", "pub(in crate::f) fn w() {}\n"),
                (
                    "b.rs",
                    "// crate::a::x()\nconst S: &str = \"crate::a::x\";\n\
                     #[cfg(test)]\nmod tests { use crate::a::x; }\n"
                ),
            ]
        )
        .is_empty());
    }

    #[test]
    fn cycles_are_found() {
        let e = |pairs: &[(&str, &str)]| {
            let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (a, b) in pairs {
                m.entry(a.to_string()).or_default().insert(b.to_string());
                m.entry(b.to_string()).or_default();
            }
            m
        };
        assert!(find_cycle(&e(&[("a", "b"), ("b", "c"), ("a", "c")])).is_none());
        assert_eq!(
            find_cycle(&e(&[("a", "b"), ("b", "c"), ("c", "a")])).unwrap(),
            ["a", "b", "c", "a"]
        );
        let found = cycles(&e(&[
            ("a", "b"),
            ("b", "a"),
            ("b", "c"),
            ("c", "d"),
            ("d", "c"),
        ]));
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].1, ["a", "b", "a"]);
        assert_eq!(found[1].1, ["c", "d", "c"]);
    }

    #[test]
    fn documented_layers_are_read() {
        let layers =
            documented_layers(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/layering.rs"));
        assert_eq!(layers["error"], 4);
        assert_eq!(layers["journal"], 4);
        assert_eq!(layers["crypto"], 0);
        assert!(!layers.contains_key("the"));
    }

    /// Where the workspace may change the process environment (`std::env::set_var`,
    /// `remove_var`): only while the process has one thread, since another thread may read the
    /// environment at the same time (libc's resolver, OpenSSL, the module's own threads), which
    /// is undefined behaviour in C and `unsafe` in Rust 2024. The test support sets the
    /// module's variables in an initialiser that runs before `main`; the benchmark sets
    /// `TSB_PKCS11_CONFIG` at the start of its `main`, before it starts a thread. Everything else
    /// gives a child process its environment with `Command::env`.
    const ENV_CHANGES_ALLOWED: &[(&str, &str)] = &[
        ("tests/support/src/lib.rs", "set_env_before_main"),
        ("examples/bench.rs", "main"),
    ];

    /// The environment changes in `text`: (line number, the function they are in). Comments
    /// and string literals are not code ([`code_of`]).
    fn env_changes(text: &str) -> Vec<(usize, String)> {
        let needles = [["set", "_var("].concat(), ["remove", "_var("].concat()];
        let mut current_fn = String::new();
        let mut found = Vec::new();
        for (n, code) in code_of(text).lines().enumerate() {
            if let Some(i) = code.find("fn ") {
                let before = code[..i].chars().last();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    current_fn = code[i + 3..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                }
            }
            if needles.iter().any(|needle| code.contains(needle.as_str())) {
                found.push((n + 1, current_fn.clone()));
            }
        }
        found
    }

    #[test]
    fn environment_changes_are_found_in_code_only() {
        let sample = [
            "fn a() {",
            "    // std::env::set_var(\"X\", \"1\") in a comment",
            "    let v = std::env::var(\"X\");",
            "}",
            "pub extern \"C\" fn set_env_before_main() {",
            &format!("    std::env::{}\"X\", \"1\");", ["set", "_var("].concat()),
            "}",
            "fn b() {",
            &format!("    env::{}\"X\");", ["remove", "_var("].concat()),
            "}",
        ]
        .join("\n");
        assert_eq!(
            env_changes(&sample),
            [(6, "set_env_before_main".to_string()), (9, "b".to_string())]
        );
    }

    /// No code of the workspace changes the process environment outside
    /// [`ENV_CHANGES_ALLOWED`].
    #[test]
    fn the_environment_is_changed_only_before_threads_exist() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in [
            "src",
            "module",
            "command",
            "tests",
            "tsb-sim",
            "notation-pkcs11",
            "examples",
            "fuzz",
        ] {
            let dir = root.join(dir);
            if dir.is_dir() {
                rust_files_outside_target(&dir, &mut files);
            }
        }
        assert!(files.len() > 50, "found the workspace's files");
        let mut wrong = Vec::new();
        for file in &files {
            let rel = file
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let text = std::fs::read_to_string(file).unwrap();
            for (line, func) in env_changes(&text) {
                if !ENV_CHANGES_ALLOWED.contains(&(rel.as_str(), func.as_str())) {
                    wrong.push(format!("{rel}:{line} (in fn {func})"));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "the process environment is changed where other threads may read it (give a child \
             process its environment with Command::env instead): {wrong:?}"
        );
    }

    fn rust_files_outside_target(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    rust_files_outside_target(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
}
