//! `typescript`: the `javascript` language with its types stripped at load.
//!
//! oxc parses the code as a TypeScript module (syntax errors carry the line and column of the
//! TypeScript source), removes the types without lowering any syntax (QuickJS runs ES2023),
//! and prints JavaScript, which then compiles exactly as a `javascript` snippet does. Nothing
//! is type-checked: as with esbuild upstream, types are erased, not verified.

use std::path::Path;
use std::sync::Arc;

use oxc::allocator::Allocator;
use oxc::codegen::Codegen;
use oxc::parser::Parser;
use oxc::semantic::SemanticBuilder;
use oxc::span::SourceType;
use oxc::transformer::{TransformOptions, Transformer};

use crate::javascript::{self, syntax_error};
use crate::{Error, Language, Options, Program};

const LANGUAGE: &str = "typescript";

/// The `typescript` language.
pub(crate) struct TypeScript;

impl Language for TypeScript {
    fn compile(&self, code: &str, options: &Options) -> Result<Arc<dyn Program>, Error> {
        javascript::compile(LANGUAGE, &strip_types(code)?, options)
    }
}

/// The JavaScript left once the types are gone.
fn strip_types(code: &str) -> Result<String, Error> {
    let allocator = Allocator::default();
    let parsed = Parser::new(&allocator, code, SourceType::ts().with_module(true)).parse();
    if let Some(diagnostic) = parsed.diagnostics.first() {
        return Err(syntax_error(LANGUAGE, code, diagnostic));
    }
    if parsed.panicked {
        return Err(Error::Syntax {
            language: LANGUAGE.to_owned(),
            message: "the parser gave up".to_owned(),
        });
    }
    let mut program = parsed.program;
    // The transformer needs enum members evaluated to inline their values.
    let semantic = SemanticBuilder::new()
        .with_check_syntax_error(true)
        .with_enum_eval(true)
        .build(&program);
    if let Some(diagnostic) = semantic.diagnostics.first() {
        return Err(syntax_error(LANGUAGE, code, diagnostic));
    }
    let scoping = semantic.semantic.into_scoping();
    // The default options strip types and target ESNext, so no syntax is lowered and no
    // helper is imported.
    let transformed = Transformer::new(
        &allocator,
        Path::new("snippet.ts"),
        &TransformOptions::default(),
    )
    .build_with_scoping(scoping, &mut program);
    if let Some(diagnostic) = transformed.diagnostics.first() {
        return Err(syntax_error(LANGUAGE, code, diagnostic));
    }
    Ok(Codegen::new().build(&program).code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_stripped_and_the_export_kept() {
        let js = strip_types(
            "interface In { method: string }\nexport default function (args: In): string { return \"ts:\" + (args.method as string); }",
        )
        .unwrap();
        assert!(
            !js.contains("interface") && !js.contains(": string"),
            "{js}"
        );
        assert!(js.contains("export default function"), "{js}");
    }
}
