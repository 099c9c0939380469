//! Small helpers shared by the one-shot and pool paths to build what goes on the wire.

use std::ffi::{OsStr, OsString};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use hatchery_protocol::{Bytes, ExecSpec};

/// A memfd holding `bytes`, sealed against every change (write, grow, shrink, reseal) and
/// rewound: the guest reads immutable data, and nothing it does can alter it.
pub(crate) fn sealed_memfd(name: &str, bytes: &[u8]) -> std::io::Result<OwnedFd> {
    let m = memfd::MemfdOptions::default()
        .close_on_exec(true)
        .allow_sealing(true)
        .create(name)
        .map_err(std::io::Error::other)?;
    m.as_file().write_all(bytes)?;
    m.add_seals(&[
        memfd::FileSeal::SealShrink,
        memfd::FileSeal::SealGrow,
        memfd::FileSeal::SealWrite,
        memfd::FileSeal::SealSeal,
    ])
    .map_err(std::io::Error::other)?;
    let mut f = m.into_file();
    f.seek(SeekFrom::Start(0))?;
    Ok(f.into())
}

fn bytes(s: &OsStr) -> Bytes {
    Bytes(s.as_bytes().to_vec())
}

/// The wire form of a command: argv\[0\] is `program`, the environment is exactly `env`.
pub(crate) fn exec_spec<'a>(
    program: &OsStr,
    args: &[OsString],
    env: impl Iterator<Item = (&'a OsString, &'a OsString)>,
    cwd: Option<&Path>,
) -> ExecSpec {
    ExecSpec {
        program: bytes(program),
        argv: std::iter::once(program)
            .chain(args.iter().map(OsString::as_os_str))
            .map(bytes)
            .collect(),
        env: env
            .map(|(k, v)| {
                let mut e = k.as_bytes().to_vec();
                e.push(b'=');
                e.extend_from_slice(v.as_bytes());
                Bytes(e)
            })
            .collect(),
        cwd: cwd.map(|c| bytes(c.as_os_str())),
    }
}
