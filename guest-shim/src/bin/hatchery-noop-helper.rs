//! The call-mode helper bundled for `hatchery bench`: one export, `noop`, that returns nothing.

fn main() {
    hatchery_guest::Exports::new()
        .export("noop", |_: &mut hatchery_guest::Call| {
            Ok::<_, String>(Vec::new())
        })
        .serve()
}
