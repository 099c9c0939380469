//! A dispatch on the call number in front of libseccomp's program, so the kernel has less to
//! load: each filter a command installs is checked, translated, JIT-compiled and scanned for its
//! action cache at install time, at a cost that grows with its length (about 0.35 µs per
//! instruction on our VMs; podman's 523 instructions took 220–280 µs of each request's start).
//!
//! ```text
//!  prefix (hand-over, ioctls) ─▶ ld arch; native? ─no──────────────────────────┐
//!                                ld nr; nr < LIMIT? ─no────────────────────────┤
//!                                binary search over number intervals           │
//!                                  ├─ ret V      (a verdict no argument moves)  ▼
//!                                  └─ ja body ──────────────────────────▶ body: libseccomp's
//!                                                                          program of the rules
//!                                                                          on the other calls
//! ```
//!
//! libseccomp emits about one comparison per rule; the dispatch needs about two instructions per
//! interval of numbers with one verdict (podman: 88 intervals over 1024 numbers), and the body
//! keeps only the rules whose verdict depends on arguments (podman: `clone`, `personality`,
//! `socket` …). Which verdicts are fixed is read off libseccomp's own program of the whole
//! policy, by running it on each number while tracing its loads: a path that loads no argument
//! returns the same for every argument, so those verdicts are proven, not sampled. The result is
//! then compared with that whole program on every native number below the limit (with a set of
//! argument vectors where the verdict depends on them), on numbers above it and on other
//! architectures; any difference, or no gain, keeps the whole program.

use hatchery_sys::seccomp::{evaluate_traced, SeccompData};

use super::bpf;

/// Native calls numbered below this go through the dispatch (every system call of the
/// supported architectures is); the rest, x32's included, go to the body.
pub(super) const LIMIT: u32 = 1024;

const LD_W_ABS: u16 = 0x20;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

fn data(arch: u32, nr: u32, args: [u64; 6]) -> SeccompData {
    SeccompData {
        nr: nr as i32,
        arch,
        instruction_pointer: 0,
        args,
    }
}

/// The verdict of `program` on native call `nr`, when no argument decides it.
pub(super) fn fixed(program: &[u64], arch: u32, nr: u32) -> Option<u32> {
    let e = evaluate_traced(program, &data(arch, nr, [0; 6]));
    (!e.reads_args).then_some(e.ret)
}

/// The native call numbers below [`LIMIT`] whose verdict depends on arguments.
pub(super) fn argument_dependent(leaves: &[Leaf]) -> Vec<i32> {
    (0..leaves.len())
        .filter(|&nr| leaves[nr] == Leaf::Body)
        .map(|nr| nr as i32)
        .collect()
}

/// Where a number leads in the dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leaf {
    Ret(u32),
    Body,
}

/// One instruction of the dispatch, with jumps to the body still symbolic.
#[derive(Debug, Clone, Copy)]
struct Insn {
    word: u64,
    to_body: bool,
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn {
        word: bpf(code, jt, jf, k),
        to_body: false,
    }
}

fn to_body() -> Insn {
    Insn {
        word: bpf(JA, 0, 0, 0),
        to_body: true,
    }
}

/// The most calls a block tests one by one (the longest walk a call makes through a block).
const MAX_EXCEPTIONS: usize = 16;

/// A run of numbers `first..end` whose calls mostly take one leaf: `exceptions` are tested one
/// by one (`jeq`), everything else takes `usual`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    first: u32,
    usual: Leaf,
    exceptions: Vec<(u32, Leaf)>,
}

/// The leaf of each native number below [`LIMIT`] in `full` (libseccomp's program of the whole
/// policy): its verdict where no argument moves it, the body where one does.
pub(super) fn leaves(full: &[u64], arch: u32) -> Vec<Leaf> {
    (0..LIMIT)
        .map(|nr| fixed(full, arch, nr).map_or(Leaf::Body, Leaf::Ret))
        .collect()
}

/// Splits `leaves` into the blocks that take the fewest instructions: per block one `jge` in the
/// search, one `jeq` per exception, one leaf per distinct leaf. Blocks start and end where the
/// leaf changes (on runs of one leaf).
fn blocks(leaves: &[Leaf]) -> Vec<Block> {
    let mut runs: Vec<(usize, usize, Leaf)> = Vec::new(); // (first, end, leaf)
    for (nr, &l) in leaves.iter().enumerate() {
        match runs.last_mut() {
            Some((_, end, last)) if *last == l => *end = nr + 1,
            _ => runs.push((nr, nr + 1, l)),
        }
    }
    // The usual leaf of a span of runs, how many numbers take it (the first counted wins a
    // tie) and how many distinct leaves the span has.
    let usual = |span: &[(usize, usize, Leaf)]| -> (Leaf, usize, usize) {
        let mut counts: Vec<(Leaf, usize)> = Vec::new();
        for &(first, end, l) in span {
            match counts.iter_mut().find(|(c, _)| *c == l) {
                Some((_, n)) => *n += end - first,
                None => counts.push((l, end - first)),
            }
        }
        let (leaf, taking) =
            counts.iter().fold(
                (Leaf::Body, 0),
                |best, &(l, n)| if n > best.1 { (l, n) } else { best },
            );
        (leaf, taking, counts.len())
    };
    let n = runs.len();
    let mut best = vec![usize::MAX; n + 1];
    let mut start = vec![0usize; n + 1];
    best[0] = 0;
    for end in 1..=n {
        for first in (0..end).rev() {
            let span = &runs[first..end];
            let numbers = span[span.len() - 1].1 - span[0].0;
            let (_, taking, distinct) = usual(span);
            // Exceptions only grow as the block grows downwards.
            let exceptions = numbers - taking;
            if exceptions > MAX_EXCEPTIONS {
                break;
            }
            let cost = best[first] + exceptions + distinct + 1;
            if cost < best[end] {
                best[end] = cost;
                start[end] = first;
            }
        }
    }
    let mut out = Vec::new();
    let mut end = n;
    while end > 0 {
        let first = start[end];
        let span = &runs[first..end];
        let (usual, _, _) = usual(span);
        out.push(Block {
            first: span[0].0 as u32,
            usual,
            exceptions: span
                .iter()
                .filter(|(_, _, l)| *l != usual)
                .flat_map(|&(f, e, l)| (f..e).map(move |nr| (nr as u32, l)))
                .collect(),
        });
        end = first;
    }
    out.reverse();
    out
}

fn leaf(l: Leaf) -> Insn {
    match l {
        Leaf::Ret(v) => insn(RET_K, 0, 0, v),
        Leaf::Body => to_body(),
    }
}

/// One block: its exceptions' `jeq`s, the usual leaf, then one leaf per other leaf taken.
fn block(b: &Block) -> Vec<Insn> {
    let mut others: Vec<Leaf> = Vec::new();
    for (_, l) in &b.exceptions {
        if !others.contains(l) {
            others.push(*l);
        }
    }
    let k = b.exceptions.len();
    let mut out: Vec<Insn> = b
        .exceptions
        .iter()
        .enumerate()
        .map(|(i, (nr, l))| {
            let at = k + 1 + others.iter().position(|o| o == l).unwrap_or(0);
            // At most MAX_EXCEPTIONS + the distinct leaves: always fits.
            insn(JEQ_K, (at - i - 1) as u8, 0, *nr)
        })
        .collect();
    out.push(leaf(b.usual));
    out.extend(others.into_iter().map(leaf));
    out
}

/// A binary search over `blocks` (sorted, the first starting at the smallest number it is
/// reached with): `jge` on the first number of the upper half, down to one block.
fn search(blocks: &[Block]) -> Vec<Insn> {
    if let [b] = blocks {
        return block(b);
    }
    let mid = blocks.len() / 2;
    let (left, right) = (search(&blocks[..mid]), search(&blocks[mid..]));
    let split = blocks[mid].first;
    let mut out = Vec::with_capacity(left.len() + right.len() + 2);
    match u8::try_from(left.len()) {
        Ok(skip) => out.push(insn(JGE_K, skip, 0, split)),
        Err(_) => {
            out.push(insn(JGE_K, 0, 1, split));
            out.push(insn(JA, 0, 0, left.len() as u32));
        }
    }
    out.extend(left);
    out.extend(right);
    out
}

/// The dispatch to `leaves` (see [`leaves`]) in front of a body (libseccomp's program of the
/// rules on the [`argument_dependent`] calls, with the same default and architectures), for
/// native architecture `arch`: the words to put between the prefix and the body, which must
/// follow them.
pub(super) fn front(leaves: &[Leaf], arch: u32) -> Vec<u64> {
    let mut insns = vec![
        insn(LD_W_ABS, 0, 0, 4),
        insn(JEQ_K, 1, 0, arch),
        to_body(),
        insn(LD_W_ABS, 0, 0, 0),
        insn(JGE_K, 0, 1, LIMIT),
        to_body(),
    ];
    insns.extend(search(&blocks(leaves)));
    let len = insns.len();
    insns
        .into_iter()
        .enumerate()
        .map(|(i, ins)| {
            if ins.to_body {
                bpf(JA, 0, 0, (len - i - 1) as u32)
            } else {
                ins.word
            }
        })
        .collect()
}

/// The argument vectors [`same_verdicts`] tries where a verdict depends on arguments: each
/// constant either program compares an argument word with or masks it by (and its
/// neighbours), in each argument's low word and high word, the others zero; every argument at
/// once; and pseudo-random vectors.
fn argument_vectors(a: &[u64], b: &[u64]) -> Vec<[u64; 6]> {
    let mut values: Vec<u64> = vec![0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];
    for program in [a, b] {
        // libseccomp compares right after loading: a jump's constant is an argument's when the
        // last load before it (in program order) was of an argument word.
        let mut on_argument = false;
        for w in program {
            let (code, k) = ((w & 0xffff) as u16, w >> 32);
            match code {
                LD_W_ABS => on_argument = k >= 16,
                0x54 /* and k */ if on_argument => values.push(k),
                c if c & 0x07 == 0x05 && c & 0xf0 != 0 && on_argument => {
                    values.extend([k, k.wrapping_sub(1) & 0xffff_ffff, (k + 1) & 0xffff_ffff]);
                }
                _ => {}
            }
        }
    }
    values.sort_unstable();
    values.dedup();
    let mut out = Vec::with_capacity(values.len() * 13 + 64);
    for &v in &values {
        out.push([v | v << 32; 6]);
        for i in 0..6 {
            for x in [v, v << 32] {
                let mut args = [0u64; 6];
                args[i] = x;
                out.push(args);
            }
        }
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..64 {
        let mut args = [0u64; 6];
        for a in args.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *a = seed;
        }
        out.push(args);
    }
    out
}

/// How many evaluations of both programs [`same_verdicts`] spends on argument vectors, at most
/// (a policy with hundreds of conditional rules would otherwise take seconds to check).
const VECTOR_BUDGET: usize = 4_000;

/// Whether `a` and `b` decide every call alike, as far as a check can tell: every native number
/// below [`LIMIT`] (once where neither reads an argument: then that verdict holds for all, else
/// on [`argument_vectors`], as many as [`VECTOR_BUDGET`] allows spread over all of them),
/// numbers above it, and other architectures.
pub(super) fn same_verdicts(a: &[u64], b: &[u64], arch: u32) -> bool {
    let high = (LIMIT..LIMIT + 64)
        .chain((0..LIMIT).step_by(17).map(|n| 0x4000_0000 | n))
        .chain([
            0x3fff_ffff,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_fffe,
            0xffff_ffff,
        ]);
    let calls: Vec<(u32, u32)> = (0..LIMIT)
        .chain(high)
        .map(|nr| (arch, nr))
        .chain(
            [
                0,
                0x4000_0003,
                0x4000_0028,
                0xc000_00b7,
                0xc000_003e,
                0xffff_ffff,
            ]
            .into_iter()
            .filter(|&o| o != arch)
            .flat_map(|o| (0..LIMIT).step_by(7).map(move |nr| (o, nr))),
        )
        .collect();
    // Calls decided without an argument by both are compared once; the rest on vectors.
    let mut open = Vec::new();
    for &(arch, nr) in &calls {
        let (x, y) = (
            evaluate_traced(a, &data(arch, nr, [0; 6])),
            evaluate_traced(b, &data(arch, nr, [0; 6])),
        );
        if x.ret != y.ret {
            return false;
        }
        if x.reads_args || y.reads_args {
            open.push((arch, nr));
        }
    }
    if open.is_empty() {
        return true;
    }
    let vectors = argument_vectors(a, b);
    let each = (VECTOR_BUDGET / open.len()).clamp(64, vectors.len().max(1));
    let stride = vectors.len().div_ceil(each).max(1);
    open.iter().all(|&(arch, nr)| {
        vectors.iter().step_by(stride).all(|args| {
            evaluate_traced(a, &data(arch, nr, *args)).ret
                == evaluate_traced(b, &data(arch, nr, *args)).ret
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: u32 = 0x7fff_0000;
    const EPERM: u32 = 0x0005_0001;
    const KILL: u32 = 0x8000_0000;
    const ARCH: u32 = 0xc000_003e;

    /// A hand-written whole program: arch check, 3 → EPERM, 5 → allow if arg0 == 7 else EPERM,
    /// 10..20 → allow, the rest EPERM.
    fn whole() -> Vec<u64> {
        let mut p = native_only();
        p.extend([
            bpf(JEQ_K, 0, 1, 3),
            bpf(RET_K, 0, 0, EPERM),
            bpf(JEQ_K, 0, 3, 5),
            bpf(LD_W_ABS, 0, 0, 16),
            bpf(JEQ_K, 5, 6, 7),
            bpf(RET_K, 0, 0, EPERM),
            bpf(JGE_K, 0, 4, 10),
            bpf(JGE_K, 3, 0, 20),
            bpf(RET_K, 0, 0, ALLOW),
            bpf(RET_K, 0, 0, EPERM),
            bpf(RET_K, 0, 0, ALLOW),
            bpf(RET_K, 0, 0, EPERM),
        ]);
        p
    }

    /// The body: only the rule on call 5.
    fn body() -> Vec<u64> {
        let mut p = native_only();
        p.extend([
            bpf(JEQ_K, 0, 3, 5),
            bpf(LD_W_ABS, 0, 0, 16),
            bpf(JEQ_K, 0, 1, 7),
            bpf(RET_K, 0, 0, ALLOW),
            bpf(RET_K, 0, 0, EPERM),
        ]);
        p
    }

    /// Kill other architectures, then load the call number.
    fn native_only() -> Vec<u64> {
        vec![
            bpf(LD_W_ABS, 0, 0, 4),
            bpf(JEQ_K, 1, 0, ARCH),
            bpf(RET_K, 0, 0, KILL),
            bpf(LD_W_ABS, 0, 0, 0),
        ]
    }

    #[test]
    fn the_dispatch_decides_as_the_whole_program() {
        let full = whole();
        assert_eq!(argument_dependent(&leaves(&full, ARCH)), vec![5]);
        let mut p = front(&leaves(&full, ARCH), ARCH);
        p.extend(body());
        assert!(same_verdicts(&p, &full, ARCH));
        let run = |nr: u32, arg0: u64, arch: u32| {
            let mut args = [0; 6];
            args[0] = arg0;
            hatchery_sys::seccomp::evaluate(&p, &data(arch, nr, args))
        };
        assert_eq!(run(3, 0, ARCH), EPERM);
        assert_eq!(run(5, 7, ARCH), ALLOW);
        assert_eq!(run(5, 8, ARCH), EPERM);
        assert_eq!(run(12, 0, ARCH), ALLOW);
        assert_eq!(run(20, 0, ARCH), EPERM);
        assert_eq!(run(0x4000_000c, 0, ARCH), EPERM);
        assert_eq!(run(12, 0, 0x4000_0003), KILL);
        // Blocks: 0..10 EPERM but call 5 (to the body), 10..20 allow, the rest EPERM.
        assert_eq!(
            blocks(&leaves(&full, ARCH)),
            vec![
                Block {
                    first: 0,
                    usual: Leaf::Ret(EPERM),
                    exceptions: vec![(5, Leaf::Body)]
                },
                Block {
                    first: 10,
                    usual: Leaf::Ret(ALLOW),
                    exceptions: vec![]
                },
                Block {
                    first: 20,
                    usual: Leaf::Ret(EPERM),
                    exceptions: vec![]
                },
            ]
        );
    }

    #[test]
    fn a_program_that_differs_on_one_call_is_seen_to_differ() {
        let mut wrong = whole();
        wrong[12] = bpf(RET_K, 0, 0, EPERM);
        assert!(!same_verdicts(&wrong, &whole(), ARCH));
        let mut wrong = body();
        wrong[6] = bpf(JEQ_K, 0, 1, 6);
        let mut p = front(&leaves(&whole(), ARCH), ARCH);
        p.extend(wrong);
        assert!(!same_verdicts(&p, &whole(), ARCH));
    }

    #[test]
    fn scattered_calls_and_long_halves_still_decide_right() {
        // Verdicts that change every few numbers (blocks and exceptions of three leaves, a
        // lower half longer than a jt reaches), behind a body that answers KILL.
        let verdict = |nr: u32| match (nr * 7919) % 13 {
            0..=5 => ALLOW,
            6..=10 => EPERM,
            11 => 0x0005_0026,
            _ => 0x7fc0_0000,
        };
        let leaves: Vec<Leaf> = (0..LIMIT)
            .map(|nr| {
                if nr % 97 == 3 {
                    Leaf::Body
                } else {
                    Leaf::Ret(verdict(nr))
                }
            })
            .collect();
        let s = search(&blocks(&leaves));
        assert!(s.len() > 600, "{}", s.len());
        let len = s.len() + 1;
        let mut p = vec![bpf(LD_W_ABS, 0, 0, 0)];
        p.extend(s.iter().enumerate().map(|(i, ins)| {
            if ins.to_body {
                bpf(JA, 0, 0, (len - (i + 1) - 1) as u32)
            } else {
                ins.word
            }
        }));
        p.push(bpf(RET_K, 0, 0, KILL));
        for nr in 0..LIMIT {
            let want = if nr % 97 == 3 { KILL } else { verdict(nr) };
            assert_eq!(
                hatchery_sys::seccomp::evaluate(&p, &data(ARCH, nr, [0; 6])),
                want,
                "{nr}"
            );
        }
    }
}
