//! A host process for the host-death test: builds a one-zygote call-mode pool with the helper
//! named on the command line (`fresh` or `reuse`), has its `plant` export leave a process
//! behind, prints the zygote's pid and waits to be killed.

use hatchery::pool::CallRequest;
use hatchery::{Isolation, Pool};

fn main() {
    let mut args = std::env::args().skip(1);
    let helper = args.next().expect("helper path");
    let iso = match args.next().as_deref() {
        Some("reuse") => Isolation::Reuse { max_requests: 100 },
        _ => Isolation::Fresh,
    };
    let pool = Pool::builder()
        .call_helper(helper)
        .isolation(iso)
        .min_zygotes(1)
        .max_zygotes(1)
        .build()
        .expect("pool");
    pool.call_request(CallRequest::new("plant", Vec::new()))
        .expect("plant");
    println!("{}", pool.zygote_pids()[0]);
    loop {
        std::thread::park();
    }
}
