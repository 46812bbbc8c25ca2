//! Generates many distinct mixing functions and a table of them, so the component carries a
//! few megabytes of code that the compiler cannot fold away.

use std::fmt::Write as _;

/// Generated functions; each adds a few hundred bytes of WebAssembly.
const FUNCTIONS: u64 = 6_000;

fn main() {
    let mut code = String::new();
    for i in 0..FUNCTIONS {
        let (a, b, c) = (i.wrapping_mul(0x9E37_79B9) | 1, (i * 7 + 13) % 61 + 1, i ^ 0x5bd1_e995);
        writeln!(
            code,
            "#[inline(never)] fn mix{i}(mut x: u64, data: &[u8]) -> u64 {{ \
               for (n, byte) in data.iter().enumerate() {{ \
                 x = x.wrapping_mul({a}).rotate_left({b}) ^ u64::from(*byte); \
                 if n % 3 == 0 {{ x = x.wrapping_add({c}) ^ (x >> 17); }} else {{ x = x.wrapping_sub({c}).rotate_right(7); }} \
               }} \
               x ^ {c} }}"
        )
        .unwrap();
    }
    code.push_str("static MIXERS: &[fn(u64, &[u8]) -> u64] = &[");
    for i in 0..FUNCTIONS {
        write!(code, "mix{i},").unwrap();
    }
    code.push_str("];\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("mixers.rs");
    std::fs::write(out, code).unwrap();
    println!("cargo::rerun-if-changed=build.rs");
}
