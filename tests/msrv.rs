//! Nothing in the sources needs a newer Rust than `rust-version` in
//! Cargo.toml (1.85) for a reason clippy cannot see. CI also builds the
//! crate, its tests and examples with that toolchain, for macOS, where
//! rustup can fetch it (.ci/run); this test needs no download, so it runs under
//! `cargo test` anywhere, and it reads the code blocks of the README and
//! of doc comments too, which that build does not compile. clippy's
//! `incompatible_msrv` (on in CI) refuses std APIs newer than
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
    /// The `$name:block` metavariables of the `macro_rules!` being read.
    block_vars: Vec<String>,
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

    /// `Some(v) if let Some(y) = w => ..`: an if-let guard, stable only
    /// in Rust 1.95.
    fn visit_arm(&mut self, arm: &'ast syn::Arm) {
        if let Some((if_token, guard)) = &arm.guard {
            if has_let(guard) {
                let line = if_token.span.start().line;
                self.found
                    .push(format!("{}:{line} (an if-let guard)", self.file.display()));
            }
        }
        syn::visit::visit_arm(self, arm);
    }

    /// A macro's body is tokens to syn: read as expressions where it is
    /// some (`assert!(..)`, `vec![..]`, `println!("..", ..)`), or as
    /// statements (a block-like body); else (`tokio::select!`'s branches,
    /// `json!`'s object, a `macro_rules!` body) its tokens are searched.
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
        } else {
            self.search_tokens(m.tokens.clone());
        }
    }

    fn visit_item_macro(&mut self, m: &'ast syn::ItemMacro) {
        // `macro_rules!` bodies are patterns and templates: only searched.
        if m.mac.path.is_ident("macro_rules") {
            // Rule by rule (`(matcher) => {template}`): a name may be a
            // block in one rule and an expression in another.
            use proc_macro2::TokenTree;
            let tts: Vec<TokenTree> = m.mac.tokens.clone().into_iter().collect();
            let arrow = |i: usize| {
                matches!((tts.get(i), tts.get(i + 1)),
                    (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == '=' && b.as_char() == '>')
            };
            let mut rules = 0;
            for i in 0..tts.len() {
                if let (TokenTree::Group(matcher), true, Some(TokenTree::Group(template))) =
                    (&tts[i], arrow(i + 1), tts.get(i + 3))
                {
                    // With those of a macro_rules! defined in the template.
                    self.block_vars = block_metavariables(matcher.stream());
                    self.block_vars.extend(block_metavariables(template.stream()));
                    self.search_tokens(template.stream());
                    rules += 1;
                }
            }
            self.block_vars.clear();
            if rules == 0 {
                self.search_tokens(m.mac.tokens.clone());
            }
        } else {
            syn::visit::visit_item_macro(self, m);
        }
    }
}

impl LetChains<'_> {
    /// Tokens that are not Rust syntax as they stand: `if let` or `while
    /// let` with `&&` or `||` before the next braces (the block), or with
    /// `=>` there (an if-let guard), or `&& let` anywhere; in every group.
    /// The search after a `let` also stops at `else` (after a block that is
    /// a metavariable, `$then else`), at a metavariable the rule declares
    /// a `block` where it is the body, right after an operand (see
    /// `after_operand`: a guess from one token, so an operand ending in
    /// other punctuation gives a false alarm, and a block after another
    /// keyword that takes one may be a miss), and at a `,` or `;` of its
    /// own level, which no condition holds but in generics
    /// (`f::<A, B>()`); such generics, a struct pattern or a `match` before
    /// the block end it early: a miss, not a false alarm. A block passed as
    /// a `tt` (`if let $p = $e $body` and then `&&` in the next statement)
    /// is a false alarm: the test fails, visibly.
    fn search_tokens(&mut self, tokens: proc_macro2::TokenStream) {
        use proc_macro2::{Delimiter, Spacing, TokenTree};
        let tts: Vec<TokenTree> = tokens.into_iter().collect();
        let ident = |i: usize, name: &str| matches!(tts.get(i), Some(TokenTree::Ident(id)) if id == name);
        let pair = |i: usize, pairs: &[(char, char)]| match (tts.get(i), tts.get(i + 1)) {
            (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) => {
                a.spacing() == Spacing::Joint && pairs.contains(&(a.as_char(), b.as_char()))
            }
            _ => false,
        };
        let logic = |i: usize| pair(i, &[('&', '&'), ('|', '|')]);
        // A copy: the groups within are searched with `self` (a few names).
        let block_vars = self.block_vars.clone();
        let ends_search = |j: usize| match &tts[j] {
            TokenTree::Group(g) => g.delimiter() == Delimiter::Brace,
            TokenTree::Ident(id) => id == "else",
            // The end of a match arm or an argument (`if let $p = $e $b,`),
            // or of a statement; or a `$b` the rule declares a block (or a
            // repetition of one, `$($b)+`) right after an operand (`$e $b`,
            // `$e? $b`: the body), not after `=` or an operator (`= $b &&`).
            TokenTree::Punct(p) => {
                let is_block = |t: Option<&TokenTree>| match t {
                    Some(TokenTree::Ident(name)) => block_vars.iter().any(|b| name == b),
                    Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis => {
                        let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                        inner.windows(2).any(|w| {
                            matches!(&w[0], TokenTree::Punct(d) if d.as_char() == '$')
                                && matches!(&w[1], TokenTree::Ident(n) if block_vars.iter().any(|b| n == b))
                        })
                    }
                    _ => false,
                };
                // What ends an operand: a name or a group (not a keyword
                // that takes a block: `loop $b`), `?`, the `>` of generics
                // or a cast's type, a repetition's `+` `*` `?` (`$($f).+`).
                let after_operand = j > 0
                    && match &tts[j - 1] {
                        TokenTree::Ident(id) => !matches!(
                            id.to_string().as_str(),
                            "loop" | "const" | "unsafe" | "async" | "move"
                        ),
                        TokenTree::Punct(q) => {
                            matches!(q.as_char(), '?' | '>')
                                || (matches!(q.as_char(), '+' | '*')
                                    && (j >= 3
                                        && matches!(&tts[j - 3], TokenTree::Punct(d) if d.as_char() == '$')
                                        || j >= 4
                                            && matches!(&tts[j - 4], TokenTree::Punct(d) if d.as_char() == '$')))
                        }
                        _ => true,
                    };
                matches!(p.as_char(), ',' | ';')
                    || (p.as_char() == '$' && is_block(tts.get(j + 1)) && after_operand)
            }
            TokenTree::Literal(_) => false,
        };
        for i in 0..tts.len() {
            let line = tts[i].span().start().line;
            let chained = if (ident(i, "if") || ident(i, "while")) && ident(i + 1, "let") {
                (i + 2..tts.len())
                    .take_while(|&j| !ends_search(j))
                    .any(|j| logic(j) || (ident(i, "if") && pair(j, &[('=', '>')])))
            } else {
                logic(i) && ident(i + 2, "let")
            };
            if chained {
                self.found
                    .push(format!("{}:{line} (in a macro's tokens)", self.file.display()));
            }
            if let TokenTree::Group(g) = &tts[i] {
                self.search_tokens(g.stream());
            }
        }
    }
}

/// The names of the `$name:block` fragments a `macro_rules!` declares.
fn block_metavariables(tokens: proc_macro2::TokenStream) -> Vec<String> {
    use proc_macro2::TokenTree;
    let tts: Vec<TokenTree> = tokens.into_iter().collect();
    let mut names = Vec::new();
    for (i, tt) in tts.iter().enumerate() {
        match (tt, tts.get(i + 1), tts.get(i + 2), tts.get(i + 3)) {
            (
                TokenTree::Punct(dollar),
                Some(TokenTree::Ident(name)),
                Some(TokenTree::Punct(colon)),
                Some(TokenTree::Ident(kind)),
            ) if dollar.as_char() == '$' && colon.as_char() == ':' && kind == "block" => {
                names.push(name.to_string())
            }
            (TokenTree::Group(g), ..) => names.extend(block_metavariables(g.stream())),
            _ => {}
        }
    }
    names
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
    let_chains_in(file, &parsed)
}

/// The let chains of parsed Rust, as `file:line`.
fn let_chains_in(file: &Path, parsed: &syn::File) -> Vec<String> {
    let mut chains = LetChains {
        file,
        found: Vec::new(),
        block_vars: Vec::new(),
    };
    chains.visit_file(parsed);
    chains.found
}

/// The let chains of the code blocks in parsed Rust's doc comments, and
/// how many blocks there were.
fn let_chains_in_docs(file: &Path, parsed: &syn::File) -> (Vec<String>, usize) {
    let (mut found, mut blocks) = (Vec::new(), 0);
    for run in doc_runs(parsed) {
        let lines: Vec<(usize, &str)> = run.iter().map(|(n, t)| (*n, t.as_str())).collect();
        for (line, code) in code_blocks(&lines) {
            blocks += 1;
            found.extend(let_chains_in_block(file, line, &code));
        }
    }
    (found, blocks)
}

/// The Rust code blocks of Markdown lines, as rustdoc compiles them (the
/// README's are doctests, and so are those of doc comments): fenced with
/// ``` or ~~~ (closed by the same, at least as long, or by the end of the
/// text) whose info string says Rust as rustdoc reads it (below), or
/// indented four spaces after a blank line (blank lines inside included);
/// hidden `# ` lines shown. Each as (the line of its start, its code).
fn code_blocks(lines: &[(usize, &str)]) -> Vec<(usize, String)> {
    // rustdoc's reading, word by word: `rust` says Rust; a word of its own
    // (`no_run`, ...) says Rust unless an unknown word came before it (or
    // `rust` did, for some); an unknown word says not Rust, unless `rust`
    // comes after. `ignore` and `compile_fail` are not compiled (to pass);
    // `ignore-<target>` is, on every other target.
    let rust_info = |info: &str| {
        let (mut rust, mut other, mut skipped) = (false, false, false);
        for word in info.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
            match word {
                "rust" => rust = true,
                "no_run" | "should_panic" => rust = !other,
                "ignore" => (skipped, rust) = (true, !other),
                w if w.starts_with("ignore-") => rust = !other,
                "compile_fail" => (skipped, rust) = (true, !other || rust),
                "test_harness" | "standalone_crate" => rust = !other || rust,
                w if w.starts_with("edition") => {}
                _ => other = true,
            }
        }
        !skipped && (!other || rust)
    };
    fn fence(text: &str) -> Option<(char, usize, &str)> {
        let t = text.trim_start();
        let c = t.chars().next().filter(|c| *c == '`' || *c == '~')?;
        let n = t.chars().take_while(|x| *x == c).count();
        (n >= 3).then(|| (c, n, t[n..].trim()))
    }
    let shown = |text: &str| -> String {
        let t = text.trim_start();
        match t.strip_prefix('#') {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
                rest.trim_start_matches(' ').to_string()
            }
            _ => text.to_string(),
        }
    };
    let mut blocks = Vec::new();
    // (start line, fence char, fence length, compiled as Rust, code)
    let mut open: Option<(usize, char, usize, bool, String)> = None;
    let mut indented: Option<(usize, String)> = None;
    // Blank lines in an indented block, kept if it goes on after them.
    let mut blanks_in_indented = 0;
    let mut blank_before = true;
    for &(line, text) in lines {
        if let Some((start, c, n, rust, code)) = &mut open {
            match fence(text) {
                Some((fc, fn_, info)) if fc == *c && fn_ >= *n && info.is_empty() => {
                    if *rust {
                        blocks.push((*start, std::mem::take(code)));
                    }
                    open = None;
                }
                _ => {
                    code.push_str(&shown(text));
                    code.push('\n');
                }
            }
            blank_before = false;
            continue;
        }
        if let Some(rest) = indented_code(text).filter(|_| blank_before || indented.is_some()) {
            let (_, code) = indented.get_or_insert_with(|| (line, String::new()));
            for _ in 0..std::mem::take(&mut blanks_in_indented) {
                code.push('\n');
            }
            code.push_str(&shown(rest));
            code.push('\n');
            continue;
        }
        if indented.is_some() && text.trim().is_empty() {
            blanks_in_indented += 1;
            continue;
        }
        blanks_in_indented = 0;
        if let Some(block) = indented.take() {
            blocks.push(block);
        }
        if let Some((c, n, info)) = fence(text) {
            open = Some((line, c, n, rust_info(info), String::new()));
        }
        blank_before = text.trim().is_empty();
    }
    blocks.extend(indented);
    // Unclosed: rustdoc runs it to the end of the docs.
    if let Some((start, _, _, true, code)) = open {
        blocks.push((start, code));
    }
    blocks
}

/// The code of a line indented four columns or more (a tab goes to the
/// next multiple of four), as Markdown reads an indented code block.
fn indented_code(text: &str) -> Option<&str> {
    let mut column = 0;
    for (at, c) in text.char_indices() {
        if column >= 4 {
            return Some(&text[at..]);
        }
        match c {
            ' ' => column += 1,
            '\t' => column += 4 - column % 4,
            _ => return None,
        }
    }
    None
}

/// The let chains of a code block: as a file, or as the body of the
/// `main` rustdoc wraps it in; one that is neither (a fragment) unread.
fn let_chains_in_block(file: &Path, line: usize, code: &str) -> Vec<String> {
    let parsed = syn::parse_file(code).or_else(|_| syn::parse_file(&format!("fn main() {{\n{code}\n}}")));
    let Ok(parsed) = parsed else { return Vec::new() };
    let name = PathBuf::from(format!("{} (the code block at line {line})", file.display()));
    let_chains_in(&name, &parsed)
}

/// The doc comments of Rust source (`///`, `//!`, `/** */`, `#[doc =
/// ".."]`: to syn all are `doc` attributes), one list of (line, text)
/// per item (or field, variant, ...), as rustdoc reads each one's docs:
/// together, whatever lies between them (a blank line, a comment, another
/// attribute), less the indent all their lines share.
///
/// Not read as rustdoc does (none of these is in the tree): the leading
/// `*` of each line of a `/** */` comment, `///` lines mixed with
/// `#[doc = ".."]` ones (rustdoc unindents the two kinds apart), a file
/// module's `//!` docs under `///` ones on its `mod` line (rustdoc
/// unindents them together); and, in [`code_blocks`], fences and
/// indented lines in a list item or a block quote, and Markdown inside
/// HTML (read as Markdown here).
fn doc_runs(parsed: &syn::File) -> Vec<Vec<(usize, String)>> {
    /// Visits of an owner of docs: the next doc attribute starts a run.
    macro_rules! starts_a_run {
        ($($visit:ident($node:ty)),* $(,)?) => {$(
            fn $visit(&mut self, node: &'ast $node) {
                self.1 = true;
                syn::visit::$visit(self, node);
            }
        )*};
    }
    /// The runs, and whether the next doc attribute starts a new one.
    struct Docs(Vec<Vec<(usize, String)>>, bool);
    impl<'ast> Visit<'ast> for Docs {
        fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
            // Not visited further: an attribute's own paths are not an
            // owner's end.
            let syn::Meta::NameValue(nv) = &attr.meta else {
                return;
            };
            let Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(text),
                ..
            }) = &nv.value
            else {
                return;
            };
            if !nv.path.is_ident("doc") {
                return;
            }
            if std::mem::take(&mut self.1) {
                self.0.push(Vec::new());
            }
            let line = attr.pound_token.span.start().line;
            let run = self.0.last_mut().unwrap();
            for (i, l) in text.value().split('\n').enumerate() {
                run.push((line + i, l.to_string()));
            }
        }
        // syn visits a node's attributes first, then the rest of it: its
        // name, its type, its body, and the nodes within, each of which
        // starts the next run. (A node with no ident before the next
        // owner's attributes, as an item, an impl item, or a field of
        // type `()`, starts one anyway.)
        fn visit_ident(&mut self, _: &'ast proc_macro2::Ident) {
            self.1 = true;
        }
        starts_a_run! {
            visit_item(syn::Item),
            visit_impl_item(syn::ImplItem),
            visit_trait_item(syn::TraitItem),
            visit_foreign_item(syn::ForeignItem),
            visit_field(syn::Field),
            visit_variant(syn::Variant),
        }
    }
    let mut docs = Docs(Vec::new(), true);
    docs.visit_file(parsed);
    // As rustdoc, the indent all lines share is not part of the text
    // (`/// text` is "text"; a block indented 4 past that is code).
    for run in &mut docs.0 {
        let indent = |l: &str| l.len() - l.trim_start_matches([' ', '\t']).len();
        let shared = run
            .iter()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(_, l)| indent(l))
            .min();
        for (_, l) in run.iter_mut() {
            l.drain(..shared.unwrap_or(0).min(indent(l)));
        }
    }
    docs.0
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
    let mut blocks = 0;
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        let name = file.strip_prefix(root).unwrap();
        let parsed = syn::parse_file(&source).unwrap_or_else(|e| panic!("{}: {e}", name.display()));
        found.extend(let_chains_in(name, &parsed));
        let (in_docs, n) = let_chains_in_docs(name, &parsed);
        found.extend(in_docs);
        blocks += n;
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let lines: Vec<(usize, &str)> = readme.lines().enumerate().map(|(i, l)| (i + 1, l)).collect();
    for (line, code) in code_blocks(&lines) {
        blocks += 1;
        found.extend(let_chains_in_block(Path::new("README.md"), line, &code));
    }
    assert!(blocks >= 10, "only {blocks} code blocks found");
    assert!(
        found.is_empty(),
        "let chains need Rust 1.88; Cargo.toml says rust-version 1.85: {found:#?}"
    );
}

/// Code blocks: in a doc comment and in Markdown, hidden lines included;
/// not a `text` or `compile_fail` one.
#[test]
fn code_blocks_are_read_as_rustdoc_reads_them() {
    let chains = |source: &str| {
        let_chains_in_docs(Path::new("x.rs"), &syn::parse_file(source).unwrap())
            .0
            .len()
    };
    let block = |info: &str, body: &str| format!("/// ```{info}\n{body}/// ```\nfn f() {{}}\n");
    let chain = "/// # let (v, r) = (Some(1), true);\n/// if let Some(x) = v && r { let _ = x; }\n";
    for compiled in [
        "",
        "rust,no_run",
        "rust no_run",
        "rust,test_harness",
        "edition2021",
        "rust,text",
        "text,rust",
        "ignore-windows",
        "no_run,text",
        "should_panic,sh",
        "text,rust,test_harness",
    ] {
        assert_eq!(chains(&block(compiled, chain)), 1, "{compiled}");
    }
    for not_compiled in [
        "text",
        "compile_fail",
        "ignore",
        "sh",
        "rust,ignore",
        "text,no_run",
        "text,rust,no_run",
    ] {
        assert_eq!(chains(&block(not_compiled, chain)), 0, "{not_compiled}");
    }
    let code = "if let Some(x) = v && r { let _ = x; }";
    for doc in [
        format!("/// ~~~\n/// {code}\n/// ~~~\nfn f() {{}}"),
        format!("/// text\n///\n///     {code}\nfn f() {{}}"),
        format!("/** ```\n{code}\n``` */\nfn f() {{}}"),
        format!("#[doc = \"```\\n{code}\\n```\"]\nfn f() {{}}"),
        format!("/// ````text\n/// ```\n/// ````\n///\n/// ```\n/// {code}\n/// ```\nfn f() {{}}"),
        // One item's docs, whatever lies between their lines.
        format!("/// ```\n\n/// {code}\n/// ```\nfn f() {{}}"),
        format!("/// ```\n// a plain comment\n/// {code}\n/// ```\nfn f() {{}}"),
        format!("/// ```\n#[inline]\n/// {code}\n/// ```\nfn f() {{}}"),
        // A fence never closed runs to the end of its item's docs.
        format!("/// ```\n/// {code}\nfn f() {{}}\n/// text\nfn g() {{}}"),
        format!("///text\n///\n///\t{code}\nfn f() {{}}"),
        format!("/// text\n///\n///   \t{code}\nfn f() {{}}"),
        format!("///text\n///\n/// \t{code}\nfn f() {{}}"),
        // No space after the slashes: the block is indented all the same.
        format!("///text\n///\n///    {code}\nfn f() {{}}"),
        // An indented block goes on past a blank line.
        format!(
            "/// text\n///\n///     fn g(v: Option<u8>, r: bool) {{\n///\n///         {code}\n///     }}\nfn f() {{}}"
        ),
    ] {
        assert_eq!(chains(&doc), 1, "not seen: {doc}");
    }
    // Each item's docs on their own: a fence left open in one does not
    // take the next one's text for code.
    for apart in [
        format!("/// ```\nfn f() {{}}\n/// {code}\nfn g() {{}}"),
        format!("/// ```\nstruct S {{\n    /// ```\n    x: u8,\n    /// {code}\n    y: u8,\n}}"),
        format!("struct T(\n    /// ```\n    u8,\n    /// {code}\n    u8,\n);"),
        format!("struct U(\n    /// ```\n    (),\n    /// {code}\n    (),\n);"),
        format!("enum E {{\n    /// ```\n    A,\n    /// {code}\n    B,\n}}"),
        format!("//! ```\n\n/// {code}\nfn f() {{}}"),
    ] {
        assert_eq!(chains(&apart), 0, "one item's docs read with another's: {apart}");
    }
    // Every line indented alike: prose, not an indented block.
    let prose = format!("///     text\n///\n///     {code}\nfn f() {{}}");
    assert_eq!(chains(&prose), 0, "{prose}");
    // Not docs: a raw string whose lines look like them.
    let raw = format!("const S: &str = r#\"\n/// ```\n/// {code}\n/// ```\n\"#;");
    assert_eq!(chains(&raw), 0);
    let markdown = "text\n```rust\nfn f(v: Option<u8>, r: bool) { if let Some(_) = v && r {} }\n```\n";
    let lines: Vec<(usize, &str)> = markdown.lines().enumerate().map(|(i, l)| (i + 1, l)).collect();
    let (line, code) = &code_blocks(&lines)[0];
    assert_eq!(let_chains_in_block(Path::new("README.md"), *line, code).len(), 1);
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
        "macro_rules! p { ($v:expr) => { if let Some(x) = $v && x > 0 { true } else { false } }; }",
        "async fn f(mut rx: R, r: bool) { tokio::select! { v = rx.recv() => if let Some(x) = v && r { g(x); }, } }",
        "fn f(v: Option<u8>, r: bool) { let _ = json!({ \"x\": if let Some(x) = v && r { x } else { 0 } }); }",
        "fn f(x: Option<u8>, w: Option<u8>) -> u8 { match x { Some(v) if let Some(y) = w => v + y, _ => 0 } }",
        "macro_rules! g { ($x:expr, $w:expr) => { match $x { Some(v) if let Some(y) = $w => v + y, _ => 0 } }; }",
        "macro_rules! i { ($p:pat, $e:expr, $($m:ident),*; $c:expr) => { if let $p = $e $(.$m())* && $c { } }; }",
        "macro_rules! j { ($p:pat, $f:ident, $args:tt, $c:expr) => { if let $p = $f $args && $c { } }; }",
        "macro_rules! k { ($p:pat, $x:expr, $op:tt, $y:expr, $c:expr) => { if let $p = $x $op $y && $c { } }; }",
        "macro_rules! l { ($p:pat, [$($q:pat),*], $e:expr, $c:expr) => { if let $p $(| $q)* = $e && $c { } }; }",
        "macro_rules! q { ($p:pat, $e:expr, $c:expr, $b:block) => { if let $p = $e && $c $b }; }",
        "macro_rules! r { ($b:block) => { $b }; ($p:pat, $b:expr, $c:expr) => { if let $p = $b.0 && $c { } }; }",
        "macro_rules! s { ($p:pat, $b:block, $c:expr) => { if let $p = $b && $c { } }; }",
        "macro_rules! c { ($p:pat, $($b:block)?, $c:expr) => { if let $p = $($b)? && $c { } }; }",
        "macro_rules! l { ($p:pat, $b:block, $c:expr) => { if let $p = loop $b && $c { } }; }",
        "macro_rules! k { ($p:pat, $b:block, $c:expr) => { if let $p = const $b && $c { } }; }",
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
        "async fn f(mut rx: R, r: bool) { tokio::select! { Some(x) = rx.recv(), if r && ready() => g(x), } }",
        "fn f(v: u8) -> Value { json!({ \"ok\": v > 0 && v < 9, \"v\": if let 1 = v { 1 } else { 0 } }) }",
        "fn f(x: Option<u8>, r: bool) -> u8 { match x { Some(v) if r && v > 0 => v, _ => 0 } }",
        "macro_rules! h { ($x:pat, $v:expr, $then:block) => { if let $x = $v $then else if a() && b() { } }; }",
        "macro_rules! m { ($x:expr, $p:pat, $e:expr, $b:block) => { match $x { 0 => if let $p = $e $b, _ => {} } }; }",
        "macro_rules! n { ($p:pat, $e:expr, $b:block) => { if let $p = $e $b; let _ = a() && b(); }; }",
        "macro_rules! o { ($p:pat, $e:expr, $b:block) => { if let $p = $e $b if a() && b() { } }; }",
        "macro_rules! t { ($p:pat, $e:expr, $b:block) => {{ if let $p = $e $b a() && b() }}; }",
        "macro_rules! w { ($p:pat, $e:expr, $b:block) => { while let $p = $e $b while a() || b() { } }; }",
        "macro_rules! x { ($p:pat, $e:expr, $($b:block)+) => {{ if let $p = $e $($b)+ a() && b() }}; }",
        "macro_rules! y { ($p:pat, $e:expr, $b:block) => {{ if let $p = $e $b && b() }}; }",
        "macro_rules! f { ($p:pat, $($f:ident).+, $b:block) => {{ if let $p = $($f).+ $b a() && b() }}; }",
        "macro_rules! g { ($p:pat, $b:block) => {{ if let $p = None::<u8> $b a() && b() }}; }",
        "macro_rules! h { ($p:pat, $e:expr, $b:block) => {{ if let $p = $e as Option<u8> $b a() && b() }}; }",
        "macro_rules! z { ($p:pat, $e:expr, $b:block) => {{ if let $p = $e? $b || b() }}; }",
        "macro_rules! o { () => { macro_rules! i { ($p:pat, $e:expr, $b:block) => {{ if let $p = $e $b a() && b() }}; } }; }",
    ] {
        assert_eq!(chains(not_a_chain), 0, "taken for a chain: {not_a_chain}");
    }
}
