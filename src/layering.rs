//! The direction of the dependencies, checked by tests at two levels.
//!
//! Crates (`crates_depend_only_downwards`, from `cargo metadata`): the PKCS#11 module
//! (`tsb-pkcs11`, module/) and the command (`tsb-pkcs11-command`, command/) depend on this core
//! crate (`tsb-pkcs11-core`), never on each other; the core on neither; clap is linked into the
//! command only (not into the core, hence not into libtsb_pkcs11.so); the simulator, the
//! Notation plugin and the test support depend on none of the project's crates but the
//! simulator.
//!
//! ```text
//!   tsb-pkcs11 (module/, cdylib)     tsb-pkcs11-command (command/, bin, clap)
//!                  \                  /
//!                   tsb-pkcs11-core (src/)          tsb-sim    notation-pkcs11
//! ```
//!
//! Modules of this crate (`layers_only_point_down`): a module may use the modules of lower
//! layers only. A `use crate::…` (or any `crate::…` path in code) that runs back up, or
//! sideways within a layer, fails the test.
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

/// Each top-level module and its layer (see the module documentation).
#[cfg(test)]
const LAYERS: &[(&str, u8)] = &[
    ("os", 0),
    ("crypto", 0),
    ("logging", 1),
    ("config", 2),
    ("tsb", 3),
    ("error", 4),
    ("journal", 4),
    ("token", 5),
    ("fuzzing", 6),
];

/// The project's crates, with the project's crates each may depend on (normal and build
/// dependencies; dev-dependencies may only add the simulator and the test support).
#[cfg(test)]
const CRATES: &[(&str, &[&str])] = &[
    ("tsb-pkcs11-core", &[]),
    ("tsb-pkcs11", &["tsb-pkcs11-core"]),
    ("tsb-pkcs11-command", &["tsb-pkcs11-core"]),
    ("tsb-sim", &[]),
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
    use super::{COMMAND_ONLY, CRATES, LAYERS, TEST_CRATES};
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// Package name -> (dependency name, kind: "normal", "build" or "dev").
    type Graph = BTreeMap<String, Vec<(String, String)>>;

    /// The dependency graph of the workspace as `cargo metadata` resolves it, and the names of
    /// the workspace members. Names are unique in this lock file except for a few registry
    /// crates, which the checks only look up by name.
    fn dependency_graph() -> (Graph, BTreeSet<String>) {
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
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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

    fn layer(module: &str) -> Option<u8> {
        LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The `crate::name` paths of a line of code (comments and doc comments are not code).
    fn crate_paths(line: &str) -> Vec<String> {
        let code = line.split("//").next().unwrap_or("");
        let mut found = Vec::new();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let before = rest[..i].chars().last();
            // `tsb_crate::x` or `super_crate::x` are other names, not `crate`.
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                if let Some(group) = after.strip_prefix('{') {
                    let inner = group.split('}').next().unwrap_or("");
                    found.extend(inner.split(',').filter_map(|p| {
                        let name = p.trim().split("::").next()?.trim();
                        (!name.is_empty()).then(|| name.to_string())
                    }));
                } else {
                    let name: String = after
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    found.push(name);
                }
            }
            rest = after;
        }
        found
    }

    #[test]
    fn crate_paths_are_found_in_code_only() {
        assert_eq!(crate_paths("use crate::tsb::Client;"), ["tsb"]);
        assert_eq!(crate_paths("use crate::{config::X, os};"), ["config", "os"]);
        assert_eq!(crate_paths("let a = crate::os::x(); // crate::ffi"), ["os"]);
        assert!(crate_paths("//! see [`crate::tsb::models`]").is_empty());
        assert!(crate_paths("use tsb_crate::x;").is_empty());
    }

    #[test]
    fn layers_only_point_down() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut wrong = Vec::new();
        for file in &files {
            let rel = file.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = top.trim_end_matches(".rs").to_string();
            // lib.rs wires the modules together.
            if module == "lib" || module == "layering" {
                continue;
            }
            let Some(own) = layer(&module) else {
                wrong.push(format!(
                    "{}: module `{module}` has no layer in LAYERS",
                    rel.display()
                ));
                continue;
            };
            let text = std::fs::read_to_string(file).unwrap();
            for (n, line) in text.lines().enumerate() {
                for used in crate_paths(line) {
                    if used == module || used == "Error" {
                        // `crate::Error` is the re-export of `error::Error` (layer 4).
                        if used == "Error" && own <= 4 && module != "error" {
                            wrong.push(format!(
                                "{}:{}: `{module}` uses crate::Error",
                                rel.display(),
                                n + 1
                            ));
                        }
                        continue;
                    }
                    match layer(&used) {
                        Some(l) if l < own => {}
                        Some(_) => wrong.push(format!(
                            "{}:{}: `{module}` (layer {own}) uses `{used}`, which is not below it",
                            rel.display(),
                            n + 1
                        )),
                        None => {} // an item of lib.rs such as `main_with_args`
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "imports that run the wrong way:\n{}",
            wrong.join("\n")
        );
    }

    /// The names a line of code reaches through `prefix` (`super::` or `crate::token::`): the
    /// first path segment after it, each name of a `{…}` group.
    fn paths_after(line: &str, prefix: &str) -> Vec<String> {
        let code = line.split("//").next().unwrap_or("");
        let mut found = Vec::new();
        for (i, _) in code.match_indices(prefix) {
            // Not the tail of a longer path (`super::super::x` for `super::`, `a_super::`).
            let before = code[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let after = &code[i + prefix.len()..];
            if let Some(group) = after.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                found.extend(inner.split(',').filter_map(|p| {
                    let name = p.trim().split("::").next()?.trim();
                    (!name.is_empty()).then(|| name.to_string())
                }));
            } else {
                found.push(
                    after
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect(),
                );
            }
        }
        found
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

    /// Inside each folder module (token, tsb, crypto, config) the files use each other without a
    /// cycle: `super::x` and `crate::<folder>::x` paths between sibling files (a subfolder
    /// counts as one file with its `<name>.rs`; `mod.rs`, which wires the folder together, and
    /// the tests are left out).
    #[test]
    fn files_of_a_folder_have_no_cycle() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut cycles = Vec::new();
        for folder in ["token", "tsb", "crypto", "config"] {
            let dir = src.join(folder);
            let mut files = Vec::new();
            rust_files(&dir, &mut files);
            let node = |f: &Path| -> String {
                let rel = f.strip_prefix(&dir).unwrap();
                let first = rel
                    .components()
                    .next()
                    .unwrap()
                    .as_os_str()
                    .to_string_lossy();
                first.trim_end_matches(".rs").to_string()
            };
            let nodes: BTreeSet<String> = files.iter().map(|f| node(f)).collect();
            let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for f in &files {
                let from = node(f);
                if from == "mod" || from == "tests" {
                    continue;
                }
                let depth = f.strip_prefix(&dir).unwrap().components().count();
                // From a file of a subfolder, its siblings are `super::super::x`.
                let sup = if depth == 1 {
                    "super::"
                } else {
                    "super::super::"
                };
                let krate = format!("crate::{folder}::");
                let text = std::fs::read_to_string(f).unwrap();
                // A file's own tests (`mod tests`, at its end) are not part of the graph.
                let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
                for line in code.lines() {
                    for used in paths_after(line, sup)
                        .into_iter()
                        .chain(paths_after(line, &krate))
                    {
                        if used != from && used != "tests" && nodes.contains(&used) {
                            edges.entry(from.clone()).or_default().insert(used);
                        }
                    }
                }
            }
            if let Some(c) = find_cycle(&edges) {
                cycles.push(format!("{folder}: {}", c.join(" -> ")));
            }
        }
        assert!(cycles.is_empty(), "file cycles:\n{}", cycles.join("\n"));
    }

    #[test]
    fn cycles_are_found() {
        let e = |pairs: &[(&str, &str)]| {
            let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (a, b) in pairs {
                m.entry(a.to_string()).or_default().insert(b.to_string());
            }
            m
        };
        assert!(find_cycle(&e(&[("a", "b"), ("b", "c"), ("a", "c")])).is_none());
        assert_eq!(
            find_cycle(&e(&[("a", "b"), ("b", "c"), ("c", "a")])).unwrap(),
            ["a", "b", "c", "a"]
        );
        assert_eq!(
            paths_after("use super::{session::S, objects};", "super::"),
            ["session", "objects"]
        );
        assert_eq!(
            paths_after("x: super::super::digest::D", "super::"),
            ["super"]
        );
        assert_eq!(
            paths_after("x: super::super::digest::D", "super::super::"),
            ["digest"]
        );
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
    /// are not code.
    fn env_changes(text: &str) -> Vec<(usize, String)> {
        let needles = [["set", "_var("].concat(), ["remove", "_var("].concat()];
        let mut current_fn = String::new();
        let mut found = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
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
