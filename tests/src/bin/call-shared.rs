//! A call-mode helper that preloads shared writable memory (an anonymous `MAP_SHARED` mapping,
//! as a cache or a ring would be) before `serve`: every call process forked from it would share
//! that memory with the zygote and every later call. Its exports write the argument there and
//! read back what is there.

use hatchery_guest::{Call, Exports};

const LEN: usize = 4096;

fn region() -> *mut u8 {
    static ADDR: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ADDR.get_or_init(|| {
        // SAFETY: a new anonymous mapping, owned by this process for its whole life.
        #[allow(unsafe_code)]
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        p as usize
    }) as *mut u8
}

fn main() {
    let _ = region();
    Exports::new()
        .export("put", |c: &mut Call| {
            let n = c.arg().len().min(LEN - 1);
            // SAFETY: the region is LEN bytes, mapped for the life of the process, and n < LEN.
            #[allow(unsafe_code)]
            let mem = unsafe { std::slice::from_raw_parts_mut(region(), LEN) };
            mem[..n].copy_from_slice(&c.arg()[..n]);
            mem[n] = 0;
            Ok::<_, String>(Vec::new())
        })
        .export("get", |_: &mut Call| {
            // SAFETY: the region is LEN bytes, mapped for the life of the process.
            #[allow(unsafe_code)]
            let all = unsafe { std::slice::from_raw_parts(region(), LEN) };
            let end = all.iter().position(|&b| b == 0).unwrap_or(LEN);
            Ok::<_, String>(all[..end].to_vec())
        })
        .serve()
}
