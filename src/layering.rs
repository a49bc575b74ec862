//! The direction of the dependencies between the crate's top-level modules, checked by a test:
//! a module may use the modules of lower layers only. A `use crate::…` (or any `crate::…` path
//! in code) that runs back up, or sideways within a layer, fails `layers_only_point_down`.
//!
//! ```text
//! 7  fuzzing                  the fuzz targets' door (only with --cfg fuzzing)
//! 6  ffi  cli                 the entry points: the PKCS#11 C interface, the command
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
    ("ffi", 6),
    ("cli", 6),
    ("fuzzing", 7),
];

#[cfg(test)]
mod tests {
    use super::LAYERS;
    use std::path::{Path, PathBuf};

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
            // lib.rs wires the modules together; bin/ is the command's one-line main.
            if module == "lib" || module == "bin" || module == "layering" {
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
}
