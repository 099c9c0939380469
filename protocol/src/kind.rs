//! The message kinds: the wire value in each frame header, with each kind's fd allowance. The
//! lowest layer of the crate (framing and errors both name kinds).

/// What a frame carries. The numeric values are part of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[repr(u16)]
pub enum Kind {
    /// Guest → host, first frame: who is speaking.
    Hello = 1,
    /// Host → guest: how to build the container (stage 1).
    SetupPlan = 2,
    /// Guest → host: the container is built; what is enforced.
    Ready = 3,
    /// Guest → host: building the container failed at a named step.
    SetupFailed = 4,
    /// Host → guest: run one request.
    Request = 5,
    /// Guest → host: the one result of one request.
    Response = 6,
    /// Host → guest: kill a running request.
    Cancel = 7,
    /// Host → guest: health check.
    Ping = 8,
    /// Guest → host: answer to [`Kind::Ping`].
    Pong = 9,
    /// Host → guest: finish and exit.
    Shutdown = 10,
    /// Call mode, supervisor → helper zygote: fork a call process (one fd: its channel).
    Spawn = 11,
    /// Call mode, helper zygote → supervisor: the call process it forked.
    Spawned = 12,
    /// Call mode, helper zygote → supervisor: a process it forked was reaped.
    ChildExited = 13,
    /// Call mode: host → supervisor → call process: become the reuse worker serving the
    /// direct channel passed with it (one fd).
    Worker = 14,
    /// Call mode, supervisor → host on a worker's direct channel: the worker is gone.
    WorkerExited = 15,
    /// Guest → host, right before a request's [`Kind::Response`] when its plan explains or
    /// learns: the denials it saw, or what the command used.
    Report = 16,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 16] = [
        Kind::Hello,
        Kind::SetupPlan,
        Kind::Ready,
        Kind::SetupFailed,
        Kind::Request,
        Kind::Response,
        Kind::Cancel,
        Kind::Ping,
        Kind::Pong,
        Kind::Shutdown,
        Kind::Spawn,
        Kind::Spawned,
        Kind::ChildExited,
        Kind::Worker,
        Kind::WorkerExited,
        Kind::Report,
    ];

    /// The kind for a wire value, if it names one.
    pub fn from_wire(value: u16) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u16 == value)
    }

    /// The kind's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hello => "Hello",
            Kind::SetupPlan => "SetupPlan",
            Kind::Ready => "Ready",
            Kind::SetupFailed => "SetupFailed",
            Kind::Request => "Request",
            Kind::Response => "Response",
            Kind::Cancel => "Cancel",
            Kind::Ping => "Ping",
            Kind::Pong => "Pong",
            Kind::Shutdown => "Shutdown",
            Kind::Spawn => "Spawn",
            Kind::Spawned => "Spawned",
            Kind::ChildExited => "ChildExited",
            Kind::Worker => "Worker",
            Kind::WorkerExited => "WorkerExited",
            Kind::Report => "Report",
        }
    }

    /// How many fds a frame of this kind may carry; more is [`crate::ProtocolError::TooManyFds`].
    pub fn max_fds(self) -> usize {
        match self {
            Kind::SetupPlan => MAX_PLAN_FDS,
            Kind::Request => MAX_REQUEST_FDS,
            Kind::Spawn | Kind::Worker => 1,
            _ => 0,
        }
    }
}

/// Most fds a setup plan may carry (file blob and fds handed to a one-shot command).
pub const MAX_PLAN_FDS: usize = 64;
/// Most fds a request may carry (stdin, stdout, stderr and named slots).
pub const MAX_REQUEST_FDS: usize = 64;
