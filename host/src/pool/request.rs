//! What a request carries in (an exec [`Request`] or a [`CallRequest`], either an [`AnyRequest`])
//! and what comes back ([`RunResult`]).
//!
//! Inputs and outputs are fds, never paths. Bytes given as stdin go into a sealed memfd (the
//! helper reads immutable input from it, no pipe, no copy on its side); a file or a pipe can be
//! passed as it is. Captured output goes to a memfd whose size is capped with `RLIMIT_FSIZE`
//! set one byte above the largest capture limit of the request: a helper writing past it gets
//! `SIGXFSZ`/`EFBIG`, and the result is [`Outcome::OutputExceeded`] — also when the helper
//! ignores `SIGXFSZ` and exits normally after `EFBIG`, because an output (a capture, or a
//! regular file given as stdout, stderr or a named fd) larger than the limit is detected from
//! its size, never from the signal. The same `RLIMIT_FSIZE` applies to every regular file the
//! request writes (files in its tmpfs too). A capture with a smaller limit than the largest is
//! cut to its own limit and also gives `OutputExceeded`; the helper is then stopped only at the
//! largest limit.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use hatchery_protocol::{
    FdAssignment, FdSlot, Outcome, Placement, Request as WireRequest, RequestLimits, Resource,
    Rlimit, Work,
};

use crate::pool::error::PoolError;

/// Largest argument passed inline with a call (the rest of a frame is the request itself).
pub const MAX_INLINE_ARG: usize = 96 << 10;

/// Default cap of captured stdout.
pub const DEFAULT_STDOUT_LIMIT: u64 = 64 << 20;
/// Default cap of captured stderr.
pub const DEFAULT_STDERR_LIMIT: u64 = 1 << 20;

/// Where a request's stdin comes from.
#[derive(Debug, Default)]
#[non_exhaustive]
pub enum Input {
    /// `/dev/null` (the default).
    #[default]
    Null,
    /// These bytes, in a sealed memfd.
    Bytes(Vec<u8>),
    /// Any readable fd: a file, a pipe, a memfd you sealed yourself (zero copies).
    Fd(OwnedFd),
}

/// Where a request's stdout or stderr goes.
#[derive(Debug)]
#[non_exhaustive]
pub enum Sink {
    /// Discarded.
    Null,
    /// Captured into a memfd of at most this many bytes, returned in the [`RunResult`].
    Capture(u64),
    /// Written (streamed) to this fd: a pipe, a file, a socket.
    Fd(OwnedFd),
}

/// What exec requests and calls share: stdio, named fds and limits.
#[derive(Debug)]
struct Common {
    stdin: Input,
    stdout: Sink,
    stderr: Sink,
    named: Vec<(String, OwnedFd, i32)>,
    /// (container path, source): read-only copies placed in a per-request tmpfs.
    placed: Vec<(String, OwnedFd)>,
    wall_time: Option<Duration>,
    tmp_bytes: Option<u64>,
    rlimits: Vec<Rlimit>,
}

impl Default for Common {
    fn default() -> Common {
        Common {
            stdin: Input::Null,
            stdout: Sink::Capture(DEFAULT_STDOUT_LIMIT),
            stderr: Sink::Capture(DEFAULT_STDERR_LIMIT),
            named: Vec::new(),
            placed: Vec::new(),
            wall_time: None,
            tmp_bytes: None,
            rlimits: Vec::new(),
        }
    }
}

/// An exec request: a program to run in a fresh process of a warm zygote. Calls to a call-mode
/// helper are [`CallRequest`]s.
#[derive(Debug)]
pub struct Request {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    common: Common,
}

/// A call to an export of a call-mode helper ([`PoolBuilder::call_helper`]), run with
/// [`Pool::call_request`] (or [`Pool::run`] / [`Pool::submit`] for the raw [`RunResult`]).
/// It has the stdio, fds and limits of an exec [`Request`], but no program, arguments,
/// environment or working directory: the helper is already running.
///
/// ```no_run
/// use hatchery::pool::{CallRequest, Sink};
/// # fn f(pool: &hatchery::Pool) -> Result<(), hatchery::pool::CallError> {
/// let out = pool.call_request(
///     CallRequest::new("gunzip_stdin", Vec::new())
///         .stdin_bytes(std::fs::read("big.gz").unwrap())
///         .stdout(Sink::Capture(256 << 20)),
/// )?;
/// println!("{} bytes", out.output.len());
/// # Ok(()) }
/// ```
///
/// A call has no arguments to add:
///
/// ```compile_fail
/// let call = hatchery::pool::CallRequest::new("add", b"1 2".to_vec()).arg("3");
/// ```
///
/// [`PoolBuilder::call_helper`]: crate::pool::PoolBuilder::call_helper
/// [`Pool::call_request`]: crate::Pool::call_request
/// [`Pool::run`]: crate::Pool::run
/// [`Pool::submit`]: crate::Pool::submit
#[derive(Debug)]
pub struct CallRequest {
    export: String,
    arg: Vec<u8>,
    tenant: Option<String>,
    common: Common,
}

/// Either kind of request. [`Pool::run`](crate::Pool::run), [`Pool::submit`](crate::Pool::submit)
/// and `Pool::run_async` take anything that converts into it: a [`Request`] or a
/// [`CallRequest`].
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyRequest {
    /// Run a program.
    Exec(Request),
    /// Call an export.
    Call(CallRequest),
}

impl From<Request> for AnyRequest {
    fn from(r: Request) -> AnyRequest {
        AnyRequest::Exec(r)
    }
}

impl From<CallRequest> for AnyRequest {
    fn from(r: CallRequest) -> AnyRequest {
        AnyRequest::Call(r)
    }
}

impl Request {
    /// Runs `program` (searched on the request's `PATH`, or the default PATH, inside the
    /// container when it has no `/`). argv\[0\] is `program`. The environment starts empty.
    pub fn exec(program: impl AsRef<OsStr>) -> Request {
        Request {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            common: Common::default(),
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env
            .push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }

    /// Working directory inside the container.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// A read-only copy (mode 0444) of `source`'s contents at `path`, for helpers that need an
    /// input by path rather than on stdin (`pdfinfo FILE`): `path` must lie in one of the
    /// request's own tmpfs mounts (the default profile's `/tmp`). The copy is made by the
    /// request's trusted setup before the command starts, from offset 0 of `source` (a regular
    /// file or memfd), never through a symbolic link and never over an existing entry, and it
    /// counts against that tmpfs's size.
    pub fn place(mut self, path: &str, source: impl Into<OwnedFd>) -> Self {
        self.common.placed.push((path.to_string(), source.into()));
        self
    }
}

impl CallRequest {
    /// Calls `export` of a call-mode helper with `arg` (at most [`MAX_INLINE_ARG`] bytes; pass
    /// larger inputs as stdin, e.g. [`stdin_bytes`](CallRequest::stdin_bytes), and read them
    /// with `Call::stdin`). The result comes back as stdout.
    pub fn new(export: &str, arg: impl Into<Vec<u8>>) -> CallRequest {
        CallRequest {
            export: export.to_string(),
            arg: arg.into(),
            tenant: None,
            common: Common::default(),
        }
    }

    /// The export called.
    pub fn export(&self) -> &str {
        &self.export
    }

    /// With `Isolation::Reuse`: the tenant this call belongs to. A reuse worker only ever serves
    /// calls of one tenant: a call with another key (or none, after calls with one) gets a new
    /// worker, so no state of one tenant's calls is ever seen by another's. Costs a worker start
    /// (a fork of the warm helper) whenever the tenant changes on a zygote.
    pub fn tenant(mut self, key: impl Into<String>) -> Self {
        self.tenant = Some(key.into());
        self
    }
}

/// The builder methods both request types share (on `self.common`).
macro_rules! common_builders {
    ($t:ident) => {
        impl $t {
            /// stdin from bytes (a sealed memfd).
            pub fn stdin_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
                self.common.stdin = Input::Bytes(bytes.into());
                self
            }

            /// stdin from any fd (file, pipe, memfd).
            pub fn stdin_fd(mut self, fd: impl Into<OwnedFd>) -> Self {
                self.common.stdin = Input::Fd(fd.into());
                self
            }

            /// Where stdout goes (default: captured, up to 64 MiB).
            pub fn stdout(mut self, sink: Sink) -> Self {
                self.common.stdout = sink;
                self
            }

            /// Where stderr goes (default: captured, up to 1 MiB).
            pub fn stderr(mut self, sink: Sink) -> Self {
                self.common.stderr = sink;
                self
            }

            /// Passes `fd` as fd number `target` (≥ 3); the helper also finds it through the
            /// environment variable `HATCHERY_FD_<NAME>` (upper-cased).
            pub fn fd(mut self, name: &str, fd: impl Into<OwnedFd>, target: i32) -> Self {
                self.common
                    .named
                    .push((name.to_string(), fd.into(), target));
                self
            }

            /// Kills the request (its whole process tree) after this long.
            pub fn wall_time(mut self, limit: Duration) -> Self {
                self.common.wall_time = Some(limit);
                self
            }

            /// Size of the request's private tmpfs mounts (default: the profile's).
            pub fn tmp_size(mut self, bytes: u64) -> Self {
                self.common.tmp_bytes = Some(bytes);
                self
            }

            /// A resource limit for this request (overrides the profile's).
            pub fn rlimit(mut self, resource: Resource, soft: u64, hard: u64) -> Self {
                self.common.rlimits.push(Rlimit {
                    resource,
                    soft,
                    hard,
                });
                self
            }
        }
    };
}

common_builders!(Request);
common_builders!(CallRequest);

/// A request turned into its wire message and the fds that go with it.
pub(crate) struct Prepared {
    pub wire: WireRequest,
    /// Sent with the message, in order, after the reply socket (index 0).
    pub fds: Vec<OwnedFd>,
    /// Capture memfds kept by the host: (fd, limit).
    pub stdout: Option<(std::fs::File, u64)>,
    pub stderr: Option<(std::fs::File, u64)>,
    /// The regular files the request writes to, watched for its output cap.
    pub files: FileWatch,
}

/// The regular files a request writes to (stdout, stderr and named fds opened for writing),
/// each with its size at the start, and the output cap (`RLIMIT_FSIZE` is one byte above it).
/// A file that ends larger than the cap, and larger than it started, is one the helper tried to
/// make larger still: the outcome is `OutputExceeded`, never a truncated success. The zygote
/// checks this too where it supervises the request; a reuse worker's calls only the host sees.
#[derive(Debug, Default)]
pub(crate) struct FileWatch {
    cap: Option<u64>,
    files: Vec<(std::fs::File, u64)>,
}

impl FileWatch {
    fn watch(&mut self, fd: &OwnedFd) {
        let writable = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .is_ok_and(|fl| fl & libc::O_ACCMODE != libc::O_RDONLY);
        if !writable {
            return;
        }
        let Ok(copy) = fd.try_clone() else {
            return;
        };
        let f = std::fs::File::from(copy);
        if let Ok(m) = f.metadata() {
            if m.is_file() {
                self.files.push((f, m.len()));
            }
        }
    }

    /// Whether some file grew past the cap.
    pub(crate) fn exceeded(&self) -> bool {
        let Some(cap) = self.cap else {
            return false;
        };
        self.files.iter().any(|(f, start)| {
            f.metadata()
                .is_ok_and(|m| m.len() > cap && m.len() > *start)
        })
    }
}

fn memfd(name: &str) -> Result<memfd::Memfd, PoolError> {
    memfd::MemfdOptions::default()
        .close_on_exec(true)
        .allow_sealing(true)
        .create(name)
        .map_err(|e| PoolError::io("memfd_create")(std::io::Error::other(e)))
}

/// A sealed memfd holding `bytes`: immutable for the helper, shareable between requests
/// (give each request its own open file description, e.g. through `/proc/self/fd/N`).
pub fn sealed_memfd(name: &str, bytes: &[u8]) -> Result<OwnedFd, PoolError> {
    crate::wire::sealed_memfd(name, bytes).map_err(PoolError::io("sealed memfd"))
}

impl AnyRequest {
    /// The tenant of a call (`None` for exec requests).
    pub(crate) fn tenant(&self) -> Option<&str> {
        match self {
            AnyRequest::Call(c) => c.tenant.as_deref(),
            AnyRequest::Exec(_) => None,
        }
    }

    /// The wire message and its fds; request `id`, `default_wall` unless the request has its
    /// own wall-time limit.
    pub(crate) fn prepare(
        self,
        id: u64,
        default_wall: Option<Duration>,
    ) -> Result<Prepared, PoolError> {
        match self {
            AnyRequest::Exec(r) => {
                let work = Work::Exec(crate::wire::exec_spec(
                    &r.program,
                    &r.args,
                    r.env.iter().map(|(k, v)| (k, v)),
                    r.cwd.as_deref(),
                ));
                r.common.prepare(id, default_wall, work)
            }
            AnyRequest::Call(c) => {
                if c.arg.len() > MAX_INLINE_ARG {
                    return Err(PoolError::InvalidRequest {
                        what: format!("call argument of {} bytes", c.arg.len()),
                        reason: "larger than MAX_INLINE_ARG; pass it as stdin",
                    });
                }
                let work = Work::Call {
                    export: c.export,
                    arg: hatchery_protocol::Bytes(c.arg),
                };
                c.common.prepare(id, default_wall, work)
            }
        }
    }
}

impl Common {
    fn prepare(
        self,
        id: u64,
        default_wall: Option<Duration>,
        work: Work,
    ) -> Result<Prepared, PoolError> {
        let mut fds: Vec<OwnedFd> = Vec::new();
        // Index 0 is the reply socket, added at dispatch.
        let slot = |fd: OwnedFd, fds: &mut Vec<OwnedFd>| -> u8 {
            fds.push(fd);
            fds.len() as u8
        };
        let stdin = match self.stdin {
            Input::Null => FdSlot::Null,
            Input::Bytes(b) => FdSlot::Passed(slot(sealed_memfd("hatchery-stdin", &b)?, &mut fds)),
            Input::Fd(fd) => FdSlot::Passed(slot(fd, &mut fds)),
        };
        let mut files = FileWatch::default();
        let mut capture = |sink: Sink,
                           name: &str,
                           fds: &mut Vec<OwnedFd>|
         -> Result<(FdSlot, Option<(std::fs::File, u64)>), PoolError> {
            Ok(match sink {
                Sink::Null => (FdSlot::Null, None),
                Sink::Fd(fd) => {
                    files.watch(&fd);
                    (FdSlot::Passed(slot(fd, fds)), None)
                }
                Sink::Capture(limit) => {
                    let m = memfd(name)?.into_file();
                    let dup = m.try_clone().map_err(PoolError::io("dup"))?;
                    (FdSlot::Passed(slot(dup.into(), fds)), Some((m, limit)))
                }
            })
        };
        let (stdout, out_cap) = capture(self.stdout, "hatchery-stdout", &mut fds)?;
        let (stderr, err_cap) = capture(self.stderr, "hatchery-stderr", &mut fds)?;
        let mut named = Vec::new();
        for (name, fd, target) in self.named {
            if target < 3 {
                return Err(PoolError::InvalidRequest {
                    what: format!("fd {name:?} -> {target}"),
                    reason: "targets 0-2 are stdin/stdout/stderr",
                });
            }
            files.watch(&fd);
            let index = slot(fd, &mut fds);
            named.push(FdAssignment {
                index,
                target,
                name: Some(name),
            });
        }
        let mut placed = Vec::new();
        for (path, fd) in self.placed {
            if !path.starts_with('/') || path.split('/').any(|c| c == ".." || c == ".") {
                return Err(PoolError::InvalidRequest {
                    what: format!("placed file {path:?}"),
                    reason: "an absolute path without . or .. components",
                });
            }
            let index = slot(fd, &mut fds);
            placed.push(Placement {
                index,
                path: path.as_str().into(),
            });
        }
        if fds.len() + 1 > hatchery_protocol::frame::MAX_REQUEST_FDS {
            return Err(PoolError::InvalidRequest {
                what: format!("{} fds", fds.len()),
                reason: "at most 63 fds per request (64 with the reply socket)",
            });
        }
        let output_bytes = [&out_cap, &err_cap]
            .iter()
            .filter_map(|c| c.as_ref().map(|(_, l)| *l))
            .max();
        files.cap = output_bytes;
        let wire = WireRequest {
            id,
            reply: 0,
            work,
            limits: RequestLimits {
                wall_time_us: self
                    .wall_time
                    .or(default_wall)
                    .map(|d| d.as_micros().min(u64::MAX as u128) as u64),
                output_bytes,
                tmp_bytes: self.tmp_bytes,
                rlimits: self.rlimits,
            },
            stdio: [stdin, stdout, stderr],
            named,
            placed,
        };
        Ok(Prepared {
            wire,
            fds,
            stdout: out_cap,
            stderr: err_cap,
            files,
        })
    }
}

/// Reads a capture memfd, cut to its own limit; `true` when the helper wrote more than that
/// limit (the zygote sets `RLIMIT_FSIZE` one byte above the largest capture limit, so exactly
/// the limit is a complete output and anything more is an overflow, whether or not the helper
/// died of `SIGXFSZ`).
pub(crate) fn read_capture(
    cap: Option<(std::fs::File, u64)>,
) -> Result<(Vec<u8>, bool), PoolError> {
    let Some((mut f, limit)) = cap else {
        return Ok((Vec::new(), false));
    };
    let len = f.metadata().map_err(PoolError::io("fstat"))?.len();
    f.seek(SeekFrom::Start(0)).map_err(PoolError::io("lseek"))?;
    let mut buf = Vec::with_capacity(len.min(limit) as usize);
    f.take(limit)
        .read_to_end(&mut buf)
        .map_err(PoolError::io("read capture"))?;
    Ok((buf, len > limit))
}

/// Time spent in each phase of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Waiting for a free zygote.
    pub queued: Duration,
    /// From dispatch to the helper's exec (clone, namespaces, fd setup, exec), measured in the
    /// zygote.
    pub dispatch: Duration,
    /// The request's process tree, from clone to reap, measured in the zygote.
    pub run: Duration,
    /// Everything, as the caller saw it.
    pub total: Duration,
}

/// The one result of one request.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// How it ended.
    pub outcome: Outcome,
    /// What it used (`real_time` is the request's process tree, clone to reap, as measured
    /// in the zygote).
    pub usage: crate::Rusage,
    /// Where the time went.
    pub timings: Timings,
    /// Captured stdout (empty unless captured).
    pub stdout: Vec<u8>,
    /// Captured stderr (empty unless captured).
    pub stderr: Vec<u8>,
    /// Call mode: how the export call ended, as the call process reported it (`None` for exec
    /// requests and for calls that ended before the export answered: see `outcome`).
    pub call: Option<hatchery_protocol::CallStatus>,
    /// Every refusal, with how to allow it, when the pool's profile explains
    /// ([`Container::explain`](crate::Container::explain)); empty otherwise.
    pub denials: Vec<crate::Denial>,
}

impl RunResult {
    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.outcome == Outcome::Exited(0)
    }

    /// The exit code, if the command exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        match self.outcome {
            Outcome::Exited(c) => Some(c),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn null() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    #[test]
    fn an_exec_request_becomes_exec_work() {
        let req = Request::exec("/bin/echo")
            .arg("a")
            .args(["b", "c"])
            .env("K", "V")
            .current_dir("/tmp");
        let p = AnyRequest::from(req).prepare(7, None).unwrap();
        assert_eq!(p.wire.id, 7);
        let Work::Exec(spec) = &p.wire.work else {
            panic!("{:?}", p.wire.work)
        };
        let argv: Vec<&[u8]> = spec.argv.iter().map(|a| a.0.as_slice()).collect();
        assert_eq!(argv, [&b"/bin/echo"[..], b"a", b"b", b"c"]);
        assert_eq!(spec.env[0].0, b"K=V");
        assert_eq!(
            spec.cwd.as_ref().map(|c| c.0.as_slice()),
            Some(&b"/tmp"[..])
        );
    }

    #[test]
    fn a_call_request_becomes_call_work_with_its_tenant() {
        let req = CallRequest::new("add", b"12".to_vec()).tenant("t1");
        assert_eq!(req.export(), "add");
        let any = AnyRequest::from(req);
        assert_eq!(any.tenant(), Some("t1"));
        let p = any.prepare(1, None).unwrap();
        assert_eq!(
            p.wire.work,
            Work::Call {
                export: "add".into(),
                arg: hatchery_protocol::Bytes(b"12".to_vec()),
            }
        );
        assert_eq!(AnyRequest::from(Request::exec("/bin/true")).tenant(), None);
    }

    #[test]
    fn a_call_argument_past_the_inline_limit_is_refused() {
        let big = CallRequest::new("echo", vec![0u8; MAX_INLINE_ARG + 1]);
        assert!(matches!(
            AnyRequest::from(big).prepare(1, None),
            Err(PoolError::InvalidRequest { .. })
        ));
        let max = CallRequest::new("echo", vec![0u8; MAX_INLINE_ARG]);
        assert!(AnyRequest::from(max).prepare(1, None).is_ok());
    }

    #[test]
    fn both_kinds_share_stdio_fds_and_limits() {
        let exec = Request::exec("/bin/true")
            .stdin_bytes(b"in".to_vec())
            .stdout(Sink::Capture(10))
            .stderr(Sink::Null)
            .fd("data", null(), 5)
            .wall_time(Duration::from_millis(1500))
            .tmp_size(1 << 20)
            .rlimit(Resource::Nofile, 64, 64);
        let call = CallRequest::new("f", Vec::new())
            .stdin_bytes(b"in".to_vec())
            .stdout(Sink::Capture(10))
            .stderr(Sink::Null)
            .fd("data", null(), 5)
            .wall_time(Duration::from_millis(1500))
            .tmp_size(1 << 20)
            .rlimit(Resource::Nofile, 64, 64);
        let a = AnyRequest::from(exec).prepare(1, None).unwrap();
        let b = AnyRequest::from(call).prepare(1, None).unwrap();
        for p in [&a, &b] {
            // stdin memfd, stdout capture, the named fd; the reply socket comes at dispatch.
            assert_eq!(p.fds.len(), 3);
            assert_eq!(
                p.wire.stdio,
                [FdSlot::Passed(1), FdSlot::Passed(2), FdSlot::Null]
            );
            assert_eq!(p.wire.named[0].target, 5);
            assert_eq!(p.wire.limits.wall_time_us, Some(1_500_000));
            assert_eq!(p.wire.limits.output_bytes, Some(10));
            assert_eq!(p.wire.limits.tmp_bytes, Some(1 << 20));
            assert_eq!(p.wire.limits.rlimits.len(), 1);
            assert!(p.stdout.is_some() && p.stderr.is_none());
        }
    }

    #[test]
    fn the_pools_default_wall_time_applies_unless_the_request_sets_one() {
        let d = Some(Duration::from_secs(3));
        let p = AnyRequest::from(CallRequest::new("f", Vec::new()))
            .prepare(1, d)
            .unwrap();
        assert_eq!(p.wire.limits.wall_time_us, Some(3_000_000));
        let p = AnyRequest::from(Request::exec("/bin/true").wall_time(Duration::from_secs(1)))
            .prepare(1, d)
            .unwrap();
        assert_eq!(p.wire.limits.wall_time_us, Some(1_000_000));
    }

    #[test]
    fn a_named_fd_cannot_take_stdio_numbers() {
        let r = Request::exec("/bin/true").fd("x", null(), 2);
        assert!(matches!(
            AnyRequest::from(r).prepare(1, None),
            Err(PoolError::InvalidRequest { .. })
        ));
    }
}
