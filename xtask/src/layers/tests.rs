use super::*;

fn source(path: &str, text: &str) -> Source {
    Source { path: path.into(), text: text.into() }
}

/// A small tree with one file per layer, so `check` finds no table problems.
fn tree(extra: &[Source]) -> Vec<Source> {
    let mut sources: Vec<Source> = LAYERS
        .iter()
        .flat_map(|(_, modules)| modules.iter())
        .map(|module| match *module {
            "main" => source("main.rs", ""),
            module => source(&format!("{module}/mod.rs"), ""),
        })
        .collect();
    sources.extend(extra.iter().map(|s| source(&s.path, &s.text)));
    sources
}

fn violations(extra: &[Source]) -> Vec<String> {
    let (violations, problems) = check(&tree(extra));
    assert_eq!(problems, Vec::<String>::new());
    violations
        .iter()
        .map(|v| format!("{}:{} {} -> {}: {}", v.path, v.line, v.from, v.to, v.written))
        .collect()
}

#[test]
fn the_kernel_imports_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/src");
    let sources = read_tree(&src).expect("kernel/src is readable");
    assert!(sources.len() > 50, "found only {} kernel sources", sources.len());
    let (violations, problems) = check(&sources);
    let report: Vec<String> =
        problems.into_iter().chain(violations.iter().map(ToString::to_string)).collect();
    assert!(report.is_empty(), "kernel layer rule broken:\n{}", report.join("\n"));
}

#[test]
fn downward_and_own_module_paths_pass() {
    let file = source(
        "sched/wait.rs",
        "use crate::sync::IrqSpinLock;\nuse crate::{arch::percpu, mm};\nuse super::thread::Thread;\n\
         fn f() { crate::sched::current(); crate::count_event!(x); }",
    );
    let macro_home =
        source("arch/percpu.rs", "#[macro_export]\nmacro_rules! count_event { () => {} }");
    assert_eq!(violations(&[file, macro_home]), Vec::<String>::new());
}

#[test]
fn an_upward_crate_path_names_file_line_and_path() {
    let file = source(
        "arch/interrupts.rs",
        "fn f() {}\n\nfn g() {\n    crate::sched::preempt_from_interrupt();\n}",
    );
    assert_eq!(
        violations(&[file]),
        ["kernel/src/arch/interrupts.rs:4 arch -> sched: crate::sched::preempt_from_interrupt"]
    );
}

#[test]
fn a_sibling_in_the_same_layer_is_refused() {
    let file = source("shell.rs", "use crate::bench::Stats;");
    assert_eq!(violations(&[file]), ["kernel/src/shell.rs:1 shell -> bench: crate::bench::Stats"]);
}

#[test]
fn every_item_of_a_use_group_is_checked() {
    let file = source(
        "mm/heap.rs",
        "use crate::{\n    sync::spinlock::RawIrqSpin,\n    sched::{self, timer},\n};",
    );
    assert_eq!(violations(&[file]), ["kernel/src/mm/heap.rs:3 mm -> sched: crate::{sched}"]);
}

#[test]
fn super_paths_that_climb_out_of_the_module_are_resolved() {
    // From a top-level file, `super` is the crate root.
    let climbs = source("klog.rs", "use super::shell::run;");
    // Inside an inline `mod tests` of a file, `super` is the file's module.
    let stays =
        source("platform/time.rs", "mod tests {\n    use super::*;\n    use super::super::mm;\n}");
    let deep =
        source("drivers/virtio/blk/request.rs", "use super::super::super::super::main_item;");
    assert_eq!(
        violations(&[climbs, stays, deep]),
        [
            "kernel/src/klog.rs:1 klog -> shell: super::shell::run",
            "kernel/src/drivers/virtio/blk/request.rs:1 drivers -> main: super::super::super::super::main_item",
        ]
    );
}

#[test]
fn exported_macros_belong_to_the_module_defining_them() {
    let klog = source("klog/mod.rs", "#[macro_export]\nmacro_rules! kprintln { () => {} }");
    let user = source(
        "arch/exceptions.rs",
        "use crate::{check, kprintln};\nfn f() { $crate::kprintln!(); }",
    );
    let ktest = source("ktest/mod.rs", "#[macro_export]\nmacro_rules! check { () => {} }");
    assert_eq!(
        violations(&[klog, user, ktest]),
        [
            "kernel/src/arch/exceptions.rs:1 arch -> klog: crate::{kprintln}",
            "kernel/src/arch/exceptions.rs:2 arch -> klog: $crate::kprintln",
        ]
    );
}

#[test]
fn comments_and_literals_are_not_paths() {
    let file = source(
        "arch/mod.rs",
        "// crate::sched::schedule\n/* crate::sched /* nested */ crate::smp */\n\
         const A: &str = \"crate::sched::x\";\nconst B: char = '\"';\nfn f<'a>(x: &'a u8) {}\n\
         core::arch::global_asm!(r#\"call crate::sched\"#);\nconst C: u8 = b'\\'';",
    );
    assert_eq!(violations(&[file]), Vec::<String>::new());
}

#[test]
fn the_ktest_layer_may_use_nothing_above_it() {
    let file = source("ktest/mod.rs", "fn f() { crate::arch::percpu::preempt_count(); }");
    assert_eq!(
        violations(&[file]),
        ["kernel/src/ktest/mod.rs:1 ktest -> arch: crate::arch::percpu::preempt_count"]
    );
}

#[test]
fn a_module_missing_from_the_table_is_reported() {
    let (_, problems) = check(&tree(&[source("newthing/mod.rs", "")]));
    assert_eq!(problems, ["module `newthing` has no layer in LAYERS (xtask/src/layers.rs)"]);
}
