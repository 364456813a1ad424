"""Every message that crosses a dispy connection, as a frozen dataclass.

Each message class has a ``TYPE`` number (the frame header's type byte); nested records
(:class:`JobSpec`, :class:`JobResult`, :class:`FileData`, :class:`AvailInfo`) travel
inside messages. Fields are JSON-able control data, except fields documented as
*payload*: lists of buffers made by :func:`dispy_core.serialization.dumps`, opaque to
everything but the process that runs user code, and unpickled only after authentication.
Received payload buffers are ``memoryview`` objects.

Conversations (every connection starts with the handshake of :mod:`dispy_core.auth`;
both sides then see a :class:`Welcome` first):

Client -> node (TCP, node port 9701)::

    InfoRequest            ->
                           <-  NodeInfo
    [FilesQuery            ->                  (with a dest_path: which of the files Compute
                           <-  FilesHeld]       would carry does the node already hold there,
                                                identical? Those travel as Compute.kept,
                                                without their bytes)
    Compute                ->                  (computation + depends + files + setup args)
                           <-  ComputeReady | ComputeFailed
    SubmitJobs (batches)   ->                  (pipelined: up to 2 x cpus jobs in flight)
                           <-  JobResults (batches, in completion order; a job's
                                               ProvisionalResult entries, from
                                               dispy_provisional_result, come before its
                                               final result and do not end it)
                           <-  JobFile          (a file a job sent with dispy_send_file,
                                                before that job's final result)
    NodeJobsRequest        ->                  (node_jobs(node, from_node=True): which of
                           <-  NodeJobs         the computation's jobs are running there now)
    CancelJob              ->                  (the job's result follows: Cancelled if it
                           <-  [ErrorReport]    had not started, else whatever the
                                                interrupted job gave; an ErrorReport
                                                "cancel: ..." if the job is unknown there)
    AckResults             ->                  (job ids whose final results arrived; also
                                                as SubmitJobs.acks. The node keeps each
                                                final result until it is acknowledged, on
                                                disk once its client is gone)
                           <-  Pulse            (every Compute.pulse_interval seconds)
    CloseComputation       ->
                           <-  ComputationClosed

    Resume                 ->                  (on a new connection: a reconnecting client
                           <-  JobResults       or recover_jobs; every unacknowledged
                           <-  Resumed          result again, then whether it still runs)

SharedJobCluster -> dispyscheduler (TCP, scheduler port 9702): the client treats the
scheduler as its one node and the conversation above is kept (InfoRequest, Compute,
SubmitJobs, JobResults, AckResults, CancelJob, Resume, Pulse, CloseComputation), with::

    Compute.options        ->                  (node specs as data, exclusive, ...; the
                                                scheduler answers ComputeReady once the
                                                cluster is admitted: an exclusive one
                                                waits for the others to close)
    JobSpec.node           ->                  (submit_node: the node a job must run on)
                           <-  JobsStarted      (jobs placed on nodes: where and when)
                           <-  ClusterNode      (a node's state for this cluster)
    NodeRequest            ->                  (allocate / deallocate / close / set_cpus /
                           <-  NodeReply        send_file / node_jobs on one node)

Final results reach the client through the scheduler, which acknowledges them to their
node only when its client has. Provisional results and files of jobs come straight from
the node when the client could attach to it (below), unless the job asked for
``relay=True``; otherwise they come through the scheduler too.

SharedJobCluster -> node (TCP, node port; handshake with Hello.key_id and the
computation's key, which the client got in ClusterNode.attach)::

    Attach                 ->
                           <-  Attached
                           <-  JobResults       (provisional results)
                           <-  JobFile
    Delivered              ->                  (one job id per item received: the job's
                                                final result waits on the node until its
                                                earlier items arrived)
    SendFile               ->                  (cluster.send_file(path, node), unless
                           <-  FileSaved        relay=True)

Discovery (UDP datagrams sealed with :func:`dispy_core.auth.seal_datagram`; only for
wildcard node specs)::

    client -> node port (broadcast, multicast or unicast)  DiscoverRequest
    node -> the requester                                 DiscoverReply
    node -> --scheduler_node's client port (unicast)      NodeAnnounce

Client or dispyscheduler -> dispynetrelay (TCP, the relay port, 9701 like a node's;
the same handshake, with the cluster's secret)::

    InfoRequest            ->
                           <-  RelayNodes       (instead of NodeInfo: the nodes the relay
                                                knows on its network; the client connects
                                                to each itself)
                           <-  RelayNodes       (again whenever the relay hears of a node,
                                                for as long as the connection stays open)

dispynetrelay -> --scheduler_node's client port (unicast): NodeAnnounce, one per node it
knows, naming that node (a discovering client connects to it as to a node's own).

dispyadmin -> node (TCP, node port; handshake with Hello.key_id = :data:`ADMIN_KEY_ID`
and the node's *admin secret* (``dispynode --admin_secret``), not the cluster secret;
a node without one, or with another, refuses the handshake with Denied; frames always
carry MACs)::

    AdminInfoRequest       ->
                           <-  AdminNodeInfo
    AdminSetCpus           ->
    | AdminSetServiceTimes
    | AdminSetServe
                           <-  AdminNodeInfo    (the node's state after the change)
                             | AdminRefused     (why not; nothing changed)

Such a connection may send nothing else (the node closes it): no computation, no job,
so no admin request can run code.

Inside a node (abstract Unix sockets, authenticated with a per-node random token):

    zygote -> main: ZygoteHello; main -> zygote: ForkHost(compute_id)
    host   -> main: HostHello;   main -> host:  Compute  (host runs setup)
                                 host -> main:  HostReady(error)
                                 main -> host:  SpawnWorker(worker_id)
                                 host -> main:  WorkerStarted / WorkerExited
                                 main -> host:  CleanupHost; host -> main: HostDone
    worker -> main: WorkerHello; main -> worker: SubmitJobs / CancelJob;
                    worker -> main: JobResults (provisional ones while the job runs),
                                    JobFile (dispy_send_file; relayed to the client)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, dataclass_transform

from . import codec
from ._fieldcheck import BUFFERS, Blob, Hex, Matches, Mode, Mtime, NonNegative, Port, Range, Sha256, TextOrBlob, record_builder
from .errors import ProtocolError

__all__ = [
    "Message",
    "message_types",
    "encode",
    "decode",
    # handshake
    "Hello",
    "Challenge",
    "Proof",
    "Welcome",
    "Denied",
    # client <-> node
    "InfoRequest",
    "NodeInfo",
    "AvailInfo",
    "Compute",
    "ComputeReady",
    "ComputeFailed",
    "FileData",
    "FileDigest",
    "FilesQuery",
    "FilesHeld",
    "JobSpec",
    "JobResult",
    "SubmitJobs",
    "JobResults",
    "CancelJob",
    "CloseComputation",
    "ComputationClosed",
    "ErrorReport",
    "JobFile",
    "Ping",
    "Pong",
    "Resume",
    "Resumed",
    "AckResults",
    "Pulse",
    "NodeLeaving",
    "NodeJobsRequest",
    "NodeJobs",
    # SharedJobCluster <-> dispyscheduler
    "JobsStarted",
    "ClusterNode",
    "NodeRequest",
    "NodeReply",
    "Attach",
    "Attached",
    "Delivered",
    # discovery
    "DiscoverRequest",
    "DiscoverReply",
    "NodeAnnounce",
    # dispynetrelay
    "RelayedNode",
    "RelayNodes",
    # dispyadmin <-> node
    "ADMIN_KEY_ID",
    "AdminInfoRequest",
    "AdminNodeInfo",
    "AdminSetCpus",
    "AdminSetServiceTimes",
    "AdminSetServe",
    "AdminRefused",
    # inside a node
    "ZygoteHello",
    "ForkHost",
    "HostHello",
    "HostReady",
    "SpawnWorker",
    "WorkerStarted",
    "WorkerExited",
    "CleanupHost",
    "HostDone",
    "WorkerHello",
]

# Buffers from serialization.dumps; memoryviews when received (the decoder checks that
# every item is one).
Payload = Annotated[list[Any], BUFFERS]

_BY_TYPE: dict[int, type[Message]] = {}


class Message:
    """Base of all messages; subclasses are frozen dataclasses with a unique ``TYPE``."""

    TYPE: ClassVar[int] = 0
    __slots__ = ()


def message_types() -> dict[int, type[Message]]:
    return dict(_BY_TYPE)


def encode(msg: Message) -> tuple[list[Any], int]:
    """Encode a message's body: (buffers, length)."""
    return codec.encode_body({name: getattr(msg, name) for name in msg.__dispy_fields__})  # type: ignore[attr-defined]


def decode(type_: int, body: memoryview) -> Message:
    """Decode a frame's body into its message, every field checked against the class's
    annotations (and the value bounds they carry: :mod:`dispy_core._fieldcheck`).

    Raises ProtocolError for anything else, naming the message, the field and what was
    wrong ("malformed Hello message: nonce must be a string, got int"): a message that
    decodes can be used without further type checks.
    """
    cls = _BY_TYPE.get(type_)
    if cls is None:
        raise ProtocolError(f"unknown message type {type_}")
    try:
        fields_dict = codec.decode_body(body)
    except ProtocolError as exc:
        raise ProtocolError(f"malformed {cls.__name__} message: {exc}") from None
    return _BUILD[cls](fields_dict)  # type: ignore[no-any-return]


# The decoder's builder of each class: checks a received field dict, then makes the object.
# Generated on the class's first decoding (when every class its annotations name exists;
# and a process pays only for the messages it receives), then called directly.
_BUILD: dict[type, Any] = {}


def _builder(cls: type) -> type:
    def first(d: dict[str, Any]) -> Any:
        build = record_builder(cls)
        _BUILD[cls] = build
        codec.register(cls, build)
        return build(d)

    _BUILD[cls] = first
    return codec.register(cls, first)


@dataclass_transform(frozen_default=True)
def _message(type_: int) -> Any:
    def wrap(cls: type) -> type:
        if type_ in _BY_TYPE:
            raise TypeError(f"message type {type_} used twice")
        cls.TYPE = type_  # type: ignore[attr-defined]
        cls = _builder(dataclass(frozen=True, slots=True)(cls))
        _BY_TYPE[type_] = cls
        return cls

    return wrap


@dataclass_transform(frozen_default=True)
def _record(cls: type) -> type:
    return _builder(dataclass(frozen=True, slots=True)(cls))


# -- handshake (unauthenticated frames, see auth.py) ---------------------------------
@_message(1)
class Hello(Message):
    protocol: int
    nonce: Hex
    software: str  # e.g. "dispy-client 0.1.0 / Python 3.11.7"
    # Non-empty: the initiator authenticates with the key of the computation this names
    # (a SharedJobCluster attaching to a node, see Attach), not with the responder's secret.
    key_id: str = ""


@_message(2)
class Challenge(Message):
    nonce: Hex
    proof: Hex  # responder's proof that it knows the secret


@_message(3)
class Proof(Message):
    proof: Hex


@_message(4)
class Welcome(Message):
    """Handshake done; delivered to both sides' applications as the first message."""

    software: str = ""


@_message(5)
class Denied(Message):
    """The responder refused the connection; ``reason`` is for the user."""

    reason: str


# -- client <-> node ------------------------------------------------------------------
@_record
class AvailInfo:
    """Availability of a node (psutil): cpu %, memory bytes, disk bytes, swap %."""

    cpu: float
    memory: NonNegative
    disk: NonNegative
    swap: float


@_message(10)
class InfoRequest(Message):
    pass


@_message(11)
class NodeInfo(Message):
    name: str
    ip_addr: str
    port: Port
    cpus: NonNegative  # CPUs the node offers to dispy now
    max_cpus: NonNegative  # CPUs the machine has
    platform: str
    python_version: str  # "3.11.7"
    software: str
    avail_info: AvailInfo | None = None


@_record
class FileData:
    """A file's content and metadata; ``name`` is a base name, never a path."""

    name: str
    data: Blob  # bytes-like (received: a memoryview)
    mode: Mode = 0o644
    mtime: Mtime = 0.0


_SHA256_HEX = frozenset("0123456789abcdef")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@_record
class FileDigest:
    """A file described without its bytes: base name, size in bytes, modification time
    (seconds since the epoch), SHA-256 of the content (64 lowercase hex digits) and mode
    bits. Two files are *identical* when name, size, mtime and SHA-256 agree (mtimes
    within :data:`MTIME_SLACK`: a node stores them with its file system's precision).
    A received one is checked by the decoder (types, and the bounds its annotations carry:
    a malformed one is a ProtocolError); one made here is checked by ``__post_init__`` too.
    Whether ``name`` is an acceptable base name is the node's to check."""

    name: str
    size: NonNegative
    mtime: Mtime
    sha256: Sha256
    mode: Mode = 0o644

    #: Seconds two mtimes may differ and still be the same (the SHA-256 decides anyway).
    MTIME_SLACK: ClassVar[float] = 1e-3

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError("FileDigest.name must be a non-empty string")
        if not _is_int(self.size) or self.size < 0:
            raise TypeError("FileDigest.size must be an integer >= 0")
        if isinstance(self.mtime, bool) or not isinstance(self.mtime, (int, float)):
            raise TypeError("FileDigest.mtime must be a number")
        if not isinstance(self.sha256, str) or len(self.sha256) != 64 or not _SHA256_HEX.issuperset(self.sha256):
            raise TypeError("FileDigest.sha256 must be 64 lowercase hex digits")
        if not _is_int(self.mode) or not 0 <= self.mode <= 0o7777:
            raise TypeError("FileDigest.mode must be permission bits (0..0o7777)")

    def same_file(self, other: FileDigest) -> bool:
        """Identical content and metadata (mode aside: a node can fix a mode in place)."""
        return (self.name == other.name and self.size == other.size and self.sha256 == other.sha256
                and abs(self.mtime - other.mtime) <= self.MTIME_SLACK)


@_message(60)
class FilesQuery(Message):
    """Client -> node, before Compute when the computation has a ``dest_path``: which of
    these files does the node hold, identical (see FileDigest), in that directory (as
    left there by an earlier computation with ``cleanup=False``)? Answered FilesHeld."""

    dest_path: str
    files: list[FileDigest]


@_message(61)
class FilesHeld(Message):
    """Node -> client, reply to FilesQuery: the names of the files it holds identical
    (they may go as Compute.kept); ``error`` when it could not look (then none)."""

    names: list[str]
    error: str = ""


@_message(12)
class Compute(Message):
    compute_id: str
    name: str
    kind: str  # "function" or "program"
    payload: Payload  # cloudpickled {"computation", "depends", "setup", "cleanup"}
    setup_args: Payload  # cloudpickled tuple for setup()/cleanup()
    files: list[FileData] = field(default_factory=list)
    cpus: int = 0  # CPUs the client wants (0: all the node offers)
    dest_path: str | None = None
    cleanup_files: bool = True
    process_per_job: bool = False
    python_version: str = ""
    pulse_interval: float = 0.0  # seconds between Pulse messages to the client; 0: none
    #: SharedJobCluster -> dispyscheduler only: "nodes" (list of {"host", "port", "cpus",
    #: "files": [FileData], "setup_args": payload}), "exclusive", "reentrant",
    #: "ships_code". Nodes ignore it.
    options: dict[str, Any] = field(default_factory=dict)
    #: Files of the computation that the node said it holds (FilesHeld) and that are not
    #: in ``files``: it checks them again and refuses the computation, naming them in
    #: ComputeFailed.missing, if they changed meanwhile.
    kept: list[FileDigest] = field(default_factory=list)
    #: Inside a node only (main -> host): where jobs with files of their own get their
    #: directories. Whatever a client puts here is replaced by the node.
    jobs_dir: str = ""
    #: {file name: text} of the files the payload's by-value code comes from, so that
    #: tracebacks on the node show source lines (see dispy_core.sources).
    sources: dict[str, str] = field(default_factory=dict)


@_message(13)
class ComputeReady(Message):
    compute_id: str
    cpus: int
    dest_path: str


@_message(14)
class ComputeFailed(Message):
    compute_id: str
    error: str
    #: Names from Compute.kept that the node no longer holds identical: the client may
    #: send the computation again with these files in Compute.files.
    missing: list[str] = field(default_factory=list)


@_record
class JobSpec:
    job_id: int
    args: Payload  # cloudpickled (args, kwargs)
    files: list[FileData] = field(default_factory=list)
    depends: Payload | None = None  # cloudpickled list of per-job functions/classes
    timeout: float | None = None  # seconds it may run (from its start on the node); None: no bound
    node: str | None = None  # SharedJobCluster -> dispyscheduler only: the node it must run on (IP)
    #: As Compute.sources, for files only this job's depends or arguments use.
    sources: dict[str, str] = field(default_factory=dict)


@_record
class JobResult:
    job_id: int
    status: int  # DispyJob status number (Finished, Terminated, ProvisionalResult ...)
    result: Payload | None = None  # cloudpickled return value
    stdout: TextOrBlob = ""  # str for functions, bytes-like for programs
    stderr: TextOrBlob = ""
    exception: str | None = None  # traceback text
    start_time: float = 0.0
    end_time: float = 0.0
    host: str = ""  # dispyscheduler -> client: the node that ran it (nodes leave it empty)


@_message(15)
class SubmitJobs(Message):
    compute_id: str
    jobs: list[JobSpec]
    acks: list[int] = field(default_factory=list)  # job ids whose results arrived (AckResults)


@_message(16)
class JobResults(Message):
    compute_id: str
    results: list[JobResult]
    # Worker -> node only: provisional results sent with dispy_provisional_result(relay=True)
    # (for a shared cluster: through dispyscheduler, not on the client's attached connection)
    relay: bool = False


@_message(17)
class CancelJob(Message):
    compute_id: str
    job_id: int


@_message(18)
class CloseComputation(Message):
    compute_id: str
    terminate: bool = False


@_message(19)
class ComputationClosed(Message):
    compute_id: str
    error: str | None = None


@_message(20)
class ErrorReport(Message):
    """A request could not be carried out; the connection stays usable."""

    reason: str
    compute_id: str = ""



@_message(23)
class Ping(Message):
    """Node -> client: are you still there? (sent to a client silent for half of the
    node's --zombie_interval; a client that answers is never taken for a zombie)."""

    nonce: int = 0


@_message(24)
class Pong(Message):
    nonce: int = 0

@_message(25)
class JobFile(Message):
    """Worker -> node main -> client: a file a running job sent (``dispy_send_file``).

    ``path`` is relative (no ``..``): the client saves the file under its working
    directory at that path. Sent before the job's final result."""

    compute_id: str
    job_id: int
    path: str
    file: FileData
    relay: bool = False  # worker -> node: dispy_send_file(relay=True), see JobResults.relay


@_message(26)
class Resume(Message):
    """Client -> node: carry on with computation ``compute_id`` on this connection (after
    a dropped connection, or from ``recover_jobs`` in another process). The node first
    resends every final result not acknowledged yet (JobResults), then answers Resumed.
    The compute id (random, 128 bits) is the capability: only its client knows it."""

    compute_id: str


@_message(27)
class Resumed(Message):
    """Reply to Resume. ``running``: the computation is still set up there, its jobs go
    on and their results come on this connection; ``unfinished`` jobs of it are queued
    or running. Otherwise only the stored results (sent before this) were left."""

    compute_id: str
    running: bool
    unfinished: int = 0


@_message(28)
class AckResults(Message):
    """Client -> node: these jobs' final results arrived; the node forgets them (also
    carried by SubmitJobs.acks when jobs go out anyway)."""

    compute_id: str
    job_ids: list[int]


@_message(29)
class Pulse(Message):
    """Node -> client, every ``Compute.pulse_interval`` seconds: alive, with its load."""

    compute_id: str
    busy: int  # jobs of this computation running there
    avail_info: AvailInfo | None = None


@_message(33)
class NodeLeaving(Message):
    """Node -> client: the node is shutting down (dispynode got SIGINT); send no more
    jobs. The jobs it has finish there; ``jobs``, which it will not run (they arrived
    after this, or jobs are held there), are given back whole, to run elsewhere."""

    compute_id: str
    reason: str
    jobs: list[JobSpec] = field(default_factory=list)


@_message(21)
class SendFile(Message):
    """A file for a computation's directory on the node (``cluster.send_file``)."""

    compute_id: str
    file: FileData


@_message(22)
class FileSaved(Message):
    """Reply to SendFile: the file's base name, and ``error`` if it was not saved."""

    compute_id: str
    name: str
    error: str | None = None


# -- SharedJobCluster <-> dispyscheduler ---------------------------------------------
@_message(34)
class JobsStarted(Message):
    """Scheduler -> client: jobs went to nodes; ``jobs`` holds ``[job_id, node_ip,
    node_port, start_time, node_job_id]`` lists (``node_job_id``: the id the node knows
    the job by, in what comes from the node directly)."""

    compute_id: str
    jobs: list[list[Any]]


@_message(35)
class ClusterNode(Message):
    """Scheduler -> client: a node's state for this cluster (``status``: NodeStatus
    Initialized, Closed or AvailInfo), with what DispyNode shows."""

    compute_id: str
    status: int
    ip_addr: str
    port: Port
    name: str = ""
    cpus: int = 0
    platform: str = ""
    avail_info: AvailInfo | None = None
    busy: int = 0
    jobs_done: int = 0
    cpu_time: float = 0.0
    tx: int = 0
    rx: int = 0
    # With status Initialized: how the client may attach to the node (Attach), as
    # ``[node-side compute id, key, tls, frame_macs]`` (frame MACs when the cluster has a
    # secret, as on its connection to the scheduler); None: everything comes through the
    # scheduler.
    attach: list[Any] | None = None


@_message(36)
class NodeRequest(Message):
    """Client -> scheduler: a node-management call of a shared cluster. ``op``:
    "allocate" (``node`` as in the ``nodes`` argument, or ``spec``: a node spec dict as in
    Compute.options), "deallocate", "close" (``arg``: terminate), "set_cpus" (``arg``:
    CPUs), "send_file" (``file``), "node_jobs" (the scheduler asks the node, NodeJobsRequest;
    NodeReply.job_ids). ``node`` names a node by IP address or host name."""

    compute_id: str
    req_id: int
    op: str
    node: str = ""
    arg: Any = None
    spec: dict[str, Any] | None = None
    file: FileData | None = None


@_message(37)
class NodeReply(Message):
    """Scheduler -> client: the outcome of a NodeRequest (``status`` as the cluster method
    returns it; ``error`` says why it failed)."""

    compute_id: str
    req_id: int
    status: int
    error: str = ""
    job_ids: list[int] | None = None  # node_jobs: the client's ids of the jobs running there


@_message(50)
class Attach(Message):
    """SharedJobCluster -> node, on a connection authenticated with the computation's key
    (Hello.key_id): send this computation's provisional results and files here (those
    whose job did not ask for ``relay=True``). Such a connection may only attach, send
    Delivered, send files for the computation's directory (SendFile, answered FileSaved:
    ``send_file`` without relay) and answer Ping."""

    compute_id: str


@_message(51)
class Attached(Message):
    """Node -> client: reply to Attach; ``error`` says why not."""

    compute_id: str
    error: str = ""


@_message(52)
class Delivered(Message):
    """Client -> node on an attached connection: the items (provisional results, files)
    of these jobs arrived, one id per item. A job's final result (which goes through the
    scheduler) waits on the node until every item of the job sent before it arrived."""

    compute_id: str
    job_ids: list[int]


@_message(62)
class NodeJobsRequest(Message):
    """Client (or dispyscheduler) -> node: which jobs of this computation are running
    there now (``cluster.node_jobs(node, from_node=True)``); answered with NodeJobs."""

    compute_id: str


@_message(63)
class NodeJobs(Message):
    """Node -> client: the ids (JobSpec.job_id) of the computation's jobs that are running
    on the node now, in the order they started; ``error`` says why there are none to
    tell (e.g. the computation is not this client's there)."""

    compute_id: str
    job_ids: list[int]
    error: str = ""


# -- discovery datagrams (sealed with auth.seal_datagram) ----------------------------
@_message(30)
class DiscoverRequest(Message):
    """Broadcast by a client looking for nodes; nodes answer with DiscoverReply."""

    nonce: str
    time: float


@_message(31)
class DiscoverReply(Message):
    nonce: str  # echoes the request's nonce
    time: float
    ip_addr: str
    port: Port  # the node's TCP port
    name: str
    cpus: NonNegative
    # Random, one per node process: a client that asks several of its own host's
    # addresses may hear one node at each address it serves, and uses it once.
    node_id: str = ""


@_message(32)
class NodeAnnounce(Message):
    """Sent by a node started with ``--scheduler_node``, unicast to that address's client
    port, at start and again while no client has set up a computation there; a client
    discovering nodes (wildcard specs) connects to the node as if it had answered a
    DiscoverRequest. Sealed like every datagram; ``time`` bounds replays."""

    time: float
    ip_addr: str  # the address (or --ext_ip_addr) clients should connect to
    port: Port  # the node's TCP port
    name: str
    cpus: NonNegative


# -- dispynetrelay (numbers 70 and up) -------------------------------------------------
@_record
class RelayedNode:
    """A node a relay found on its network: where to connect to it."""

    ip_addr: str
    port: Port
    name: str = ""
    cpus: NonNegative = 0


@_message(70)
class RelayNodes(Message):
    """A dispynetrelay's answer to InfoRequest, and what it sends on that connection
    whenever it hears of a node (started later, or heard again): the nodes it knows.
    Only where they are: the client connects to each and authenticates it itself."""

    nodes: list[RelayedNode]
    relay: str = ""  # the relay's software, for the client's log


# -- dispyadmin <-> node (numbers 80 to 89) ----------------------------------------------
#: Hello.key_id of a dispyadmin connection: authenticate with the node's admin secret.
#: (Compute ids, the other key ids, are hex: they can't be this.)
ADMIN_KEY_ID = "dispy-admin"

#: A time of day as the service options take it: "HH:MM", 24-hour.
HHMM = Annotated[str, Matches(r"([01]?[0-9]|2[0-3]):[0-5][0-9]", "a time of day HH:MM (00:00 to 23:59)")]
#: A CPU count as ``dispynode -c`` takes it (negative: leave that many unused); the node
#: checks it against its machine.
CpuCount = Annotated[int, Range(-65536, 65536)]
#: ``--serve``: -1 for no limit, else a positive number of clients.
ServeCount = Annotated[int, Range(-1, None)]


@_message(80)
class AdminInfoRequest(Message):
    """dispyadmin -> node: the node's state (answered AdminNodeInfo)."""


@_message(81)
class AdminNodeInfo(Message):
    """Node -> dispyadmin: the node's state. ``cpus``: CPUs it uses now; ``max_cpus``: the
    machine's; service times as "HH:MM" or None; ``serve``: clients it serves before it
    quits (-1: no limit) and ``clients_done``: clients served so far; ``busy``: jobs
    running; ``jobs_done``; ``cpu_time``: seconds jobs ran; ``clients``: the addresses
    ("ip:port") of the clients or schedulers whose computations are set up there;
    ``state``: one line on what it does now."""

    name: str
    ip_addr: str
    port: Port
    cpus: NonNegative
    max_cpus: NonNegative
    software: str = ""
    platform: str = ""
    service_start: HHMM | None = None
    service_stop: HHMM | None = None
    service_end: HHMM | None = None
    serve: ServeCount = -1
    clients_done: NonNegative = 0
    busy: NonNegative = 0
    jobs_done: NonNegative = 0
    cpu_time: float = 0.0
    clients: list[str] = field(default_factory=list)
    state: str = ""
    avail_info: AvailInfo | None = None


@_message(82)
class AdminSetCpus(Message):
    """dispyadmin -> node: use ``cpus`` CPUs (as ``dispynode -c``)."""

    cpus: CpuCount


@_message(83)
class AdminSetServiceTimes(Message):
    """dispyadmin -> node: the whole service window (each time "HH:MM" or None for
    none; all None: always serve), checked as ``--service_start/stop/end`` are."""

    start: HHMM | None = None
    stop: HHMM | None = None
    end: HHMM | None = None


@_message(84)
class AdminSetServe(Message):
    """dispyadmin -> node: serve this many clients in all (as ``--serve``; -1: no limit)."""

    serve: ServeCount


@_message(85)
class AdminRefused(Message):
    """Node -> dispyadmin: the request was not carried out, and why."""

    reason: str


# -- inside a node ------------------------------------------------------------------
@_message(40)
class ZygoteHello(Message):
    pid: int


@_message(41)
class ForkHost(Message):
    compute_id: str
    ip_addr: str = ""  # the node address the client reached (dispy_node_ip_addr in jobs)


@_message(42)
class HostHello(Message):
    compute_id: str
    pid: int


@_message(43)
class HostReady(Message):
    error: str | None = None  # None: setup succeeded


@_message(44)
class SpawnWorker(Message):
    worker_id: int


@_message(45)
class WorkerStarted(Message):
    worker_id: int
    pid: int


@_message(46)
class WorkerExited(Message):
    worker_id: int
    pid: int
    returncode: int  # negative: killed by that signal


@_message(47)
class CleanupHost(Message):
    pass


@_message(48)
class HostDone(Message):
    error: str | None = None
    shutdown: bool = False  # the computation called dispynode_shutdown()


@_message(49)
class WorkerHello(Message):
    compute_id: str
    worker_id: int
    pid: int

