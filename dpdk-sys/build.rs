//! Generates the DPDK bindings and the C wrappers of DPDK's `static inline`
//! fast-path functions, all with the cflags that pkg-config reports for
//! `libdpdk` (never `-march=native`: the binary must run where DPDK runs).

use std::env;
use std::path::PathBuf;

fn main() {
    pkg_config::Config::new()
        .atleast_version("22.11")
        .cargo_metadata(true)
        .probe("libdpdk")
        .unwrap_or_else(|e| panic!("pkg-config could not find libdpdk >= 22.11 ({e}); run scripts/setup.sh"));

    // DPDK's own cflags: include paths, `-include rte_config.h`, `-march=corei7`.
    let cflags_out = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("pkg-config --cflags libdpdk");
    let cflags: Vec<String> = String::from_utf8_lossy(&cflags_out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let wrappers_c = out.join("inline_wrappers.c");

    let builder = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(&cflags)
        .clang_arg("-DALLOW_EXPERIMENTAL_API")
        .allowlist_function("rte_.*")
        .allowlist_function("lsd_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        // These packed/aligned headers trip rustc (E0588); nothing here reads
        // their fields through bindgen, the wire module has its own views.
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        // Takes an SSE vector by value: not FFI-safe, and lockstep looks up
        // one address at a time.
        .blocklist_function("rte_lpm_lookupx4")
        .derive_default(true)
        .derive_debug(false)
        .layout_tests(true)
        .generate_comments(false)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .wrap_static_fns(true)
        .wrap_static_fns_path(out.join("inline_wrappers"))
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    let bindings = builder.generate().expect("bindgen failed on DPDK headers");
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");

    // Every `static inline` function bindgen saw gets a C wrapper
    // (`<name>__extern`), compiled here with DPDK's cflags.
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let mut cc = cc::Build::new();
    cc.file(&wrappers_c).file(manifest.join("errno.c")).include(&manifest);
    for f in &cflags {
        cc.flag(f);
    }
    // The wrappers end up in executables, and the TLS they read (the lcore
    // id, rte_errno) lives in librte_eal, loaded at start-up: the
    // initial-exec model reads it with one %fs-relative load instead of a
    // __tls_get_addr call (which made rte_pktmbuf_alloc cost ~2x).
    cc.flag("-ftls-model=initial-exec");
    cc.define("ALLOW_EXPERIMENTAL_API", None)
        .opt_level(3)
        .warnings(false)
        .compile("dpdk_inline");

    // Driver libraries are plugins EAL loads by itself, so pkg-config does
    // not list them; link the two whose API lockstep calls directly
    // (`rte_vdev_init`, `rte_eth_from_ring`). EAL's later dlopen of the same
    // plugin file finds it already loaded.
    println!("cargo:rustc-link-lib=dylib=rte_bus_vdev");
    println!("cargo:rustc-link-lib=dylib=rte_net_ring");
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=errno.c");
}
