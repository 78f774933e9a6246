//! Nothing in the sources needs a newer Rust than `rust-version` in
//! Cargo.toml (1.85) for a reason clippy cannot see. These machines have
//! one toolchain, so nothing builds the crate with the oldest it claims;
//! clippy's `incompatible_msrv` (on in CI) refuses std APIs newer than
//! `rust-version`, but not language features. The one edition 2024 code
//! reaches for is the let chain (`if let P = e && cond`, stable in 1.88):
//! reviews found five, and a grep and then a regex missed some (a chain
//! over lines, a struct pattern, a block in the scrutinee). This reads
//! every source file as Rust, with syn, and looks at the conditions
//! themselves.

use std::path::{Path, PathBuf};

use syn::visit::Visit;
use syn::{BinOp, Expr};

/// The `if` and `while` conditions that are let chains, as `file:line`.
struct LetChains<'a> {
    file: &'a Path,
    found: Vec<String>,
}

impl LetChains<'_> {
    fn check(&mut self, cond: &Expr, line: usize) {
        // (Itself no let chain: the first version was one, and this test
        // found it.)
        let Expr::Binary(b) = cond else { return };
        if matches!(b.op, BinOp::And(_) | BinOp::Or(_)) && (has_let(&b.left) || has_let(&b.right)) {
            self.found.push(format!("{}:{line}", self.file.display()));
        }
    }
}

/// A `let` among the operands of a chain of `&&` and `||`.
fn has_let(e: &Expr) -> bool {
    match e {
        Expr::Let(_) => true,
        Expr::Binary(b) if matches!(b.op, BinOp::And(_) | BinOp::Or(_)) => {
            has_let(&b.left) || has_let(&b.right)
        }
        _ => false,
    }
}

impl<'ast> Visit<'ast> for LetChains<'_> {
    fn visit_expr_if(&mut self, e: &'ast syn::ExprIf) {
        self.check(&e.cond, e.if_token.span.start().line);
        syn::visit::visit_expr_if(self, e);
    }

    fn visit_expr_while(&mut self, e: &'ast syn::ExprWhile) {
        self.check(&e.cond, e.while_token.span.start().line);
        syn::visit::visit_expr_while(self, e);
    }

    /// A macro's body is tokens to syn: read as expressions where it is
    /// some (`assert!(..)`, `vec![..]`, `println!("..", ..)`), or as
    /// statements (a block-like body). Other syntax (`tokio::select!`'s
    /// branches) is left unread.
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        use syn::parse::Parser;
        let exprs = syn::punctuated::Punctuated::<Expr, syn::Token![,]>::parse_terminated;
        if let Ok(exprs) = exprs.parse2(m.tokens.clone()) {
            for e in &exprs {
                self.visit_expr(e);
            }
        } else if let Ok(stmts) = syn::Block::parse_within.parse2(m.tokens.clone()) {
            for stmt in &stmts {
                self.visit_stmt(stmt);
            }
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The let chains in `source`, as `file:line`.
fn let_chains(file: &Path, source: &str) -> Vec<String> {
    let parsed = syn::parse_file(source).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut chains = LetChains {
        file,
        found: Vec::new(),
    };
    chains.visit_file(&parsed);
    chains.found
}

#[test]
fn no_let_chains_for_rust_1_85() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "examples", "benches", "fuzz/fuzz_targets"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "only {} files found", files.len());
    let mut found = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        found.extend(let_chains(file.strip_prefix(root).unwrap(), &source));
    }
    assert!(
        found.is_empty(),
        "let chains need Rust 1.88; Cargo.toml says rust-version 1.85: {found:#?}"
    );
}

/// What the check must see, and what it must not take for a chain: the
/// cases earlier guards got wrong.
#[test]
fn the_check_sees_chains_and_nothing_else() {
    let chains = |source: &str| let_chains(Path::new("x.rs"), source).len();
    for chain in [
        "fn f(v: Option<u8>, r: bool) { if let Some(x) = v && r { let _ = x; } }",
        "fn f(v: Option<u8>, r: bool) { if r && let Some(x) = v { let _ = x; } }",
        "fn f(mut l: &[u8]) { while let [a, rest @ ..] = l\n && *a == b' ' { l = rest; } }",
        "struct P { x: u8 } fn f(q: P, r: bool) { if let P { x } = q && r { let _ = x; } }",
        "fn f(p: *const u8, r: bool) { if let Some(b) = unsafe { p.as_ref() } && r { let _ = b; } }",
        "fn f(v: &[i32], r: bool) { if let Some(x) = v.iter().find(|y| { **y > 0 }) && r { let _ = x; } }",
        "fn f(x: u8, y: bool) { if let Some(v) = match x { 0 => None, n => Some(n) } && y { let _ = v; } }",
        "fn f(v: Option<u8>, r: bool) { assert!(if let Some(_) = v && r { true } else { false }); }",
        "fn f(v: Option<u8>, r: bool) -> bool { let g = || { if let Some(_) = v && r { return true; } false }; g() }",
        "fn f(v: Option<u8>, r: bool) { if r { } else if let Some(x) = v && r { let _ = x; } }",
    ] {
        assert_eq!(chains(chain), 1, "not seen: {chain}");
    }
    for not_a_chain in [
        "fn f(v: &[(bool, bool)]) { if let Some(p) = v.iter().position(|i| i.0 && !i.1) { let _ = p; } }",
        "fn f(a: bool, b: bool) -> bool {\n // if let Some(x) = a && b\n a && b }",
        "/// Refuses `if let Some(x) = a && b`.\npub fn e() {}",
        "fn f(a: bool, b: bool) { if a && b { } while a || b { } }",
        "fn f(v: Option<bool>) { if let Some(true) = v.filter(|&b| b && true) { } }",
        "/* outer /* if let Some(v) = a && b */ still a comment */ fn f() {}",
        "fn f() -> &'static str { \"if let Some(x) = a && b {\" }",
    ] {
        assert_eq!(chains(not_a_chain), 0, "taken for a chain: {not_a_chain}");
    }
}
