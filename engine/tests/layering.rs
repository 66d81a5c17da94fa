//! The layers hold: `proto/` (the sans-IO protocol core) and `sys/` (the kernel boundary)
//! import nothing from the rest of the crate. Every `crate::` path and every `super::`
//! chain in their source files (comments and string literals left out, inline modules
//! counted) must stay inside the folder; this test lists each one that leaves it.

use std::path::{Path, PathBuf};

/// The `.rs` files under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The module path of a file below `src/` (`proto/deflate/tests.rs` is
/// `["proto", "deflate", "tests"]`, `proto/mod.rs` is `["proto"]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of one line with string and char literals blanked and a `//` comment cut.
fn code_of(line: &str, in_string: &mut bool) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if *in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => *in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => *in_string = true,
            '\'' => {
                // A char literal ('x', '\n'), or a lifetime ('a): skip a literal whole.
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with('\\') {
                    chars.by_ref().take_while(|&c| c != '\'').for_each(drop);
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.next();
                    chars.next();
                } else {
                    out.push(c);
                }
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

/// The paths of `file` (a module inside `layer`) that leave the layer.
fn escapes(src: &Path, layer: &str, file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("readable source");
    let base = module_of(src, file);
    let mut found = Vec::new();
    // Inline modules: (name, brace depth at which their block opened).
    let mut inline: Vec<(String, i32)> = Vec::new();
    let (mut depth, mut in_string) = (0i32, false);
    for (number, line) in text.lines().enumerate() {
        let code = code_of(line, &mut in_string);
        let module: Vec<String> = base
            .iter()
            .cloned()
            .chain(inline.iter().map(|(n, _)| n.clone()))
            .collect();
        let words: Vec<&str> = code
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '{'))
            .filter(|w| !w.is_empty())
            .collect();
        for word in &words {
            if let Some(rest) = word.strip_prefix("crate::") {
                let first = rest.split("::").next().unwrap_or("");
                if first != layer {
                    found.push(format!("{}:{}: {word}", file.display(), number + 1));
                }
            } else if word.starts_with("super::") {
                let ups = word.matches("super::").count();
                // Going up `ups` levels must leave at least the layer's own module.
                if ups >= module.len() {
                    found.push(format!("{}:{}: {word}", file.display(), number + 1));
                }
            }
        }
        let tokens: Vec<&str> = code.split_whitespace().collect();
        for (i, token) in tokens.iter().enumerate() {
            if *token == "mod" && tokens.get(i + 2) == Some(&"{") {
                inline.push((tokens[i + 1].to_string(), depth + 1));
            }
        }
        for c in code.chars() {
            match c {
                '{' => depth += 1,
                '}' => {
                    if inline.last().is_some_and(|&(_, d)| d == depth) {
                        inline.pop();
                    }
                    depth -= 1;
                }
                _ => {}
            }
        }
    }
    found
}

fn layer_escapes(layer: &str) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources(&src.join(layer));
    assert!(files.len() > 5, "{layer}/ has its files");
    files
        .iter()
        .flat_map(|file| escapes(&src, layer, file))
        .collect()
}

#[test]
fn proto_imports_nothing_from_the_rest_of_the_crate() {
    let escapes = layer_escapes("proto");
    assert!(
        escapes.is_empty(),
        "proto/ reaches out:\n{}",
        escapes.join("\n")
    );
}

#[test]
fn sys_imports_nothing_from_the_rest_of_the_crate() {
    let escapes = layer_escapes("sys");
    assert!(
        escapes.is_empty(),
        "sys/ reaches out:\n{}",
        escapes.join("\n")
    );
}

/// The check itself finds what it must: an import of `crate::server` from a proto
/// file and a `super::` chain past the layer; not a path in a comment or a string, nor
/// an inline module's `super::super` that stays inside.
#[test]
fn the_check_sees_an_escape_and_ignores_comments_and_strings() {
    let dir = std::env::temp_dir().join(format!("ringcast-layering-{}", std::process::id()));
    let proto = dir.join("proto");
    std::fs::create_dir_all(&proto).expect("temp dir");
    let file = proto.join("frame.rs");
    std::fs::write(
        &file,
        "use crate::proto::mask;\n\
         use crate::server::Core;\n\
         // crate::conn::Conn in a comment\n\
         const S: &str = \"crate::client\";\n\
         use super::super::error::Error;\n\
         mod tests {\n    use super::*;\n    use super::super::x;\n}\n",
    )
    .expect("write");
    let found = escapes(&dir, "proto", &file);
    std::fs::remove_dir_all(&dir).expect("clean up");
    let lines: Vec<&str> = found
        .iter()
        .map(|f| f.rsplit(": ").next().unwrap_or(""))
        .collect();
    assert_eq!(lines, ["crate::server::Core", "super::super::error::Error"]);
}
