//! `hatchery-shim`: started by the hatchery host inside fresh namespaces; not meant to be run by
//! hand (it speaks the hatchery protocol on fd 3).

fn main() {
    std::process::exit(hatchery_guest::shim_main());
}
