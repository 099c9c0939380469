//! Prints the fd numbers open in this process (without the one used to list them), space
//! separated.

fn main() {
    let dir = std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd");
    let mut fds: Vec<i32> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            // Skip the directory handle of read_dir itself.
            let target = std::fs::read_link(e.path()).ok()?;
            let t = target.to_string_lossy();
            if t.starts_with("/proc/") && t.ends_with("/fd") {
                return None;
            }
            e.file_name().to_str()?.parse().ok()
        })
        .collect();
    fds.sort_unstable();
    let s: Vec<String> = fds.iter().map(|f| f.to_string()).collect();
    println!("{}", s.join(" "));
}
