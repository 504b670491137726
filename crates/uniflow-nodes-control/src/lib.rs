//! Control node kinds: the nodes that compute and steer packets inside a workflow.
//!
//! One file per kind, each with its `<Kind>Spec` (the fields) and `<Kind>Node` (the compiled
//! node); `docs/nodes/<kind>.md` describes each for users. [`register`] adds them all to a
//! registry. Kinds that evaluate expressions (`if`, `switch`, `reduce`) compile them once, at
//! load, in the [`expression::LANGUAGE`] of the [`Languages`] registry they are given.
//!
//! Kinds whose upstream name changed keep both names: `loop` is also `for`, `call` is also
//! `pipe`.

use std::sync::Arc;

use uniflow_core::Registry;
use uniflow_lang::Languages;

pub mod assert;
pub mod block;
pub mod call;
pub mod expression;
pub mod fork;
pub mod r#if;
pub mod r#loop;
pub mod merge;
pub mod nop;
pub mod reduce;
pub mod retry;
pub mod session;
pub mod sleep;
pub mod snippet;
pub mod split;
pub mod switch;
pub mod test;
pub mod throw;
pub mod r#try;

/// Adds every control kind; snippets and expressions compile with `languages`.
pub fn register(registry: &mut Registry, languages: Arc<Languages>) {
    assert::register(registry, Arc::clone(&languages));
    registry.add::<block::BlockSpec>();
    registry.add::<call::CallSpec>();
    registry.add_with(call::ALIAS, |spec: call::CallSpec, cx| {
        uniflow_core::NodeSpec::compile(spec, cx)
    });
    registry.add::<fork::ForkSpec>();
    r#if::register(registry, Arc::clone(&languages));
    registry.add::<r#loop::LoopSpec>();
    registry.add_with(r#loop::ALIAS, |spec: r#loop::LoopSpec, cx| {
        uniflow_core::NodeSpec::compile(spec, cx)
    });
    registry.add::<merge::MergeSpec>();
    registry.add::<nop::NopSpec>();
    reduce::register(registry, Arc::clone(&languages));
    registry.add::<retry::RetrySpec>();
    registry.add::<session::SessionSpec>();
    registry.add::<sleep::SleepSpec>();
    registry.add::<split::SplitSpec>();
    switch::register(registry, Arc::clone(&languages));
    registry.add::<test::TestSpec>();
    registry.add::<throw::ThrowSpec>();
    registry.add::<r#try::TrySpec>();
    snippet::register(registry, languages);
}

#[cfg(test)]
mod tests;
