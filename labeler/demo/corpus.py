"""The demo's sample corpus: seeded, realistic logs of five systems with known anomalies.

Each system has its own header layout, routine events with variable fields, and incidents:
bursts of related lines of a real-world failure kind (disk full, OOM kill, connection refused,
upstream timeouts, kernel panic, machine check, SSH brute force, replication failure,
segfault, certificate expiry, ...). Every line's label is known: incident lines of a failure
are anomalous, everything else is normal (including routine warnings and errors such as a
404's `open() failed`, which an LLM that keys on severity words gets wrong).

Four systems are *sources* (written as plain logs in the layout an ingest `--format` reads);
the fifth, a container platform, is the *unseen target*, written as JSON lines whose `label`
field is the ground truth, so `eval` can score a detector that never saw that system.
The HPC RAS log carries BGL's alert column (`-` normal, else an alert category), so one
source also has ground truth, as in loghub.

Next to the storage log, `storage-blocks.log` holds sequence faults (`write_block_sessions`):
HDFS blocks, one session each, keyed by block id (`--session 'blk_\\d+'`), every line made of
the storage system's routine templates, so each line is normal on its own; a few blocks are
anomalous only in the order or the absence of their lines (never replicated, never finished, a
retry loop), labeled per session in `storage-blocks-sessions.csv` (`eval --session-labels`).
It has its own random stream, so the five files do not depend on it.

The texts are the project's own (no line is copied from a public data set). Sizes are chosen
so that the unique masked texts, which is what the LLM is asked, stay a few hundred.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from detector.core import atomic_output
from detector.runtime.formats import InputFormat, parse_format

DEFAULT_SEED = 7
DEFAULT_LINES = 2000
START = datetime(2024, 3, 12, 6, 0, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Event:
    """One kind of log line: header fields plus a message template with `{field}` slots."""

    level: str
    component: str
    text: str
    alert: str | None = None  # None: normal; else the failure's alert category (anomalous)

    @property
    def anomalous(self) -> bool:
        return self.alert is not None


@dataclass(frozen=True)
class Incident:
    """A failure: a burst of events in order, each repeated a random number of times.

    `sticky` fields keep one value for the whole burst (the attacker's address, the pod that
    crash-loops), as in a real incident.
    """

    kind: str
    steps: tuple[tuple[Event, int, int], ...]
    sticky: tuple[str, ...] = ()
    weight: float = 1.0


# ---------------------------------------------------------------------------- variable fields

USERS = ["deploy", "alice", "bob", "ci-runner", "backup", "ansible"]
BAD_USERS = ["admin", "test", "oracle", "ubuntu", "pi", "postgres", "guest", "ftpuser", "support",
             "git", "hadoop", "minecraft"]
PROCS = ["java", "python3", "postgres", "node", "redis-server"]
SERVICES = ["nginx", "postgresql", "redis", "kafka", "api-gateway"]
SERVERS = ["api.example.com", "shop.example.com", "static.example.com"]
NAMESPACE_OF_APP = {"checkout": "shop", "cart": "shop", "payments": "shop", "search": "platform",
                    "frontend": "platform"}
NODES = ["node-1", "node-2", "node-3", "node-4"]
IMAGES_TAG = {"checkout": "1.8.2", "cart": "2.1.0", "search": "0.9.14", "payments": "3.2.1",
              "frontend": "5.0.3"}


# Slots that name the same thing wherever they recur in one line (a request's server and host).
LINE_STICKY = frozenset({"app", "ns", "server", "uri", "method", "user", "pod", "image"})


class Fields:
    """Draws values for template slots; a sticky slot keeps its first value for the whole incident."""

    def __init__(self, rng: random.Random, sticky: tuple[str, ...] = (), fixed: dict[str, str] | None = None):
        self.rng = rng
        self.sticky = set(sticky)
        self.fixed: dict[str, str] = dict(fixed or {})  # slot -> its value for the whole incident
        self.line: dict[str, str] = {}

    def new_line(self, **values: str) -> "Fields":
        """The next line, with `values` for some of its slots."""
        self.line = dict(values)
        return self

    def __getitem__(self, name: str) -> str:
        value = self.fixed.get(name) or self.line.get(name)
        if value is None:
            value = self._draw(name)
            if name in self.sticky:
                self.fixed[name] = value
            elif name in LINE_STICKY:
                self.line[name] = value
        return value

    def _hex(self, digits: int) -> str:
        return f"{self.rng.getrandbits(4 * digits):0{digits}x}"

    def _draw(self, name: str) -> str:
        r = self.rng
        draw: dict[str, Callable[[], str]] = {
            "ip": lambda: f"10.{r.randint(0, 3)}.{r.randint(0, 255)}.{r.randint(2, 254)}",
            "attacker": lambda: f"{r.choice([45, 61, 103, 185, 218])}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
            "port": lambda: str(r.randint(1024, 65535)),
            "pid": lambda: str(r.randint(300, 65000)),
            "n": lambda: str(r.randint(1, 99999)),
            "small": lambda: str(r.randint(1, 40)),
            "ms": lambda: str(r.randint(1, 900)),
            "bytes": lambda: str(r.choice([134217728, 67108864, r.randint(512, 10_000_000)])),
            "blk": lambda: f"blk_{r.randint(1_073_741_825, 1_075_000_000)}_{r.randint(1000, 99999)}",
            "bp": lambda: f"BP-{r.randint(10**8, 10**9)}-10.0.0.2-{r.randint(10**12, 10**13)}",
            "hex8": lambda: self._hex(8),
            "hex16": lambda: self._hex(16),
            "hex64": lambda: self._hex(64),
            "user": lambda: r.choice(USERS),
            "baduser": lambda: r.choice(BAD_USERS),
            "proc": lambda: r.choice(PROCS),
            "svc": lambda: r.choice(SERVICES),
            "server": lambda: r.choice(SERVERS),
            "method": lambda: r.choice(["GET", "GET", "GET", "POST", "PUT"]),
            "uri": lambda: r.choice(["/api/v1/orders/", "/api/v1/cart/", "/static/js/app.", "/api/v2/search/"])
                          + str(r.randint(1, 99999)),
            "file": lambda: replica_file(r),
            "hdfs_path": lambda: f"/user/{r.choice(USERS)}/events/dt=2024-03-{r.randint(1, 12):02d}/part-{r.randint(0, 199):05d}",
            "dev": lambda: r.choice(["sda", "sdb", "nvme0n1"]),
            "app": lambda: r.choice(list(NAMESPACE_OF_APP)),
            "node": lambda: r.choice(NODES),
            "rack": lambda: r.choice(["R02-M1-N4", "R17-M0-NC", "R31-M1-N9", "R63-M0-N0"]),
            "unit": lambda: r.choice(["U01", "U11", "U31"]),
            "slot": lambda: r.choice(["J08", "J12", "J17"]),
            "core": lambda: str(r.randint(0, 3)),
        }
        if name == "ns":
            return NAMESPACE_OF_APP[self["app"]]
        if name == "pod":  # one of two replicas of the line's app, named as a ReplicaSet names them
            app = self["app"]
            return f"{self['ns']}/{app}-{sum(map(ord, app)) * 7919 % 10**6:06d}c-{r.choice(['x7k2p', 'm4qzt'])}"
        if name == "image":
            app = self["app"]
            return f"registry.example.com/shop/{app}:{IMAGES_TAG[app]}"
        return draw[name]()


def replica_file(rng: random.Random, block: str | None = None) -> str:
    """A block replica's file on one of a DataNode's volumes: `block`'s (`blk_<id>`), else a random block's."""
    volume, subdir = rng.randint(1, 6), rng.randint(0, 31)
    return f"/data/{volume}/dfs/dn/current/finalized/subdir{subdir}/{block or f'blk_{rng.randint(1_073_741_825, 1_075_000_000)}'}"


_SLOT = re.compile(r"\{(\w+)\}")


def render(template: str, fields: Fields) -> str:
    return _SLOT.sub(lambda m: fields[m.group(1)], template)


# ---------------------------------------------------------------------------- the five systems

def E(level: str, component: str, text: str, alert: str | None = None) -> Event:
    return Event(level, component, text, alert)


STORAGE_ROUTINE = [
    (20, E("INFO", "datanode.DataNode", "Receiving {bp}:{blk} src: /{ip}:{port} dest: /{ip}:9866")),
    (20, E("INFO", "datanode.DataNode", "Received {bp}:{blk} size {bytes} from /{ip}:{port}")),
    (14, E("INFO", "datanode.DataNode", "PacketResponder: {bp}:{blk}, type=LAST_IN_PIPELINE terminating")),
    (8, E("INFO", "datanode.DataNode", "PacketResponder: {bp}:{blk}, type=HAS_DOWNSTREAM_IN_PIPELINE terminating")),
    (6, E("INFO", "datanode.FsDatasetAsyncDiskService", "Deleted {bp} {blk} file {file}")),
    (3, E("INFO", "datanode.DataNode", "Successfully sent block report 0x{hex16} with lease ID 0x{hex16} to namenode: nn-1/10.0.0.2:8020, containing 6 storage report(s), of which we sent 6. The reports had {n} total blocks and used 1 RPC(s). This took {ms} msec to generate and {ms} msecs for RPC and NN processing.")),
    (14, E("INFO", "namenode.FSNamesystem", "BLOCK* allocate {bp}:{blk}, replicas={ip}:9866, {ip}:9866, {ip}:9866 for {hdfs_path}")),
    (10, E("INFO", "namenode.FSNamesystem", "BLOCK* blk_{n} is COMMITTED but not COMPLETE(numNodes= 0 <  minimum = 1) in file {hdfs_path}")),
    (10, E("INFO", "namenode.StateChange", "DIR* completeFile: {hdfs_path} is closed by DFSClient_NONMAPREDUCE_{n}_1")),
    (3, E("INFO", "namenode.FSEditLog", "Number of transactions: {n} Total time for transactions(ms): {ms} Number of transactions batched in Syncs: {small} Number of syncs: {n} SyncTimes(ms): {ms}")),
    (2, E("INFO", "namenode.FSNamesystem", "Roll Edit Log from 10.0.0.3")),
    (2, E("INFO", "blockmanagement.CacheReplicationMonitor", "Rescanning after {n} milliseconds")),
    (3, E("WARN", "util.JvmPauseMonitor", "Detected pause in JVM or host machine (eg GC): pause of approximately {ms}ms No GCs detected")),
    (2, E("WARN", "datanode.DataNode", "Slow BlockReceiver write data to disk cost:{ms}ms (threshold=300ms), volume=file:/data/{small}/dfs/dn/")),
]

STORAGE_INCIDENTS = [
    Incident("disk full", (
        (E("WARN", "datanode.DataNode", "IOException in BlockReceiver.run(): java.io.IOException: No space left on device", "DISKFULL"), 2, 5),
        (E("ERROR", "datanode.DataNode", "dn-{small}:9866:DataXceiver error processing WRITE_BLOCK operation  src: /{ip}:{port} dst: /{ip}:9866 java.io.IOException: No space left on device", "DISKFULL"), 1, 4),
        (E("WARN", "datanode.fsdataset.impl.FsDatasetImpl", "Removing failed volume /data/{small}/dfs/dn: org.apache.hadoop.util.DiskChecker$DiskErrorException: Directory is not writable: /data/{small}/dfs/dn/current", "DISKFULL"), 1, 1),
    )),
    Incident("replication failure", (
        (E("WARN", "blockmanagement.BlockPlacementPolicy", "Failed to place enough replicas, still in need of 2 to reach 3 (unavailableStorages=[DISK], storagePolicy=BlockStoragePolicy{HOT:7, storageTypes=[DISK], creationFallbacks=[], replicationFallbacks=[ARCHIVE]}, newBlock=true)", "REPLICATION"), 2, 6),
        (E("WARN", "blockmanagement.PendingReconstructionBlocks", "PendingReconstructionMonitor timed out {blk}", "REPLICATION"), 1, 4),
        (E("INFO", "namenode.FSNamesystem", "BLOCK* checkFileProgress: blk_{n} has not reached minimal replication 1", "REPLICATION"), 1, 3),
    )),
    Incident("connection refused", (
        (E("WARN", "hdfs.DataStreamer", "Exception in createBlockOutputStream {bp}:{blk} java.io.IOException: Bad connect ack with firstBadLink as {ip}:9866", "NETWORK"), 1, 3),
        (E("WARN", "hdfs.DataStreamer", "Abandoning {bp}:{blk}", "NETWORK"), 1, 2),
        (E("WARN", "hdfs.DFSClient", "Failed to connect to /{ip}:9866 for block {bp}:{blk}, add to deadNodes and continue. java.net.ConnectException: Connection refused", "NETWORK"), 2, 5),
    )),
    Incident("out of memory", (
        (E("ERROR", "datanode.DataNode", "DataNode is out of memory. Will retry in 30 seconds. java.lang.OutOfMemoryError: unable to create new native thread", "OOM"), 1, 3),
        (E("FATAL", "datanode.DataNode", "Exception in secureMain java.lang.OutOfMemoryError: Java heap space", "OOM"), 1, 1),
        (E("INFO", "datanode.DataNode", "SHUTDOWN_MSG: Shutting down DataNode at dn-{small}/{ip}", "OOM"), 1, 1),
    ), weight=0.6),
    Incident("checksum error", (
        (E("WARN", "hdfs.DFSClient", "Found Checksum error for {bp}:{blk} from DatanodeInfoWithStorage[{ip}:9866,DS-{hex8},DISK] at {n}", "CORRUPT"), 1, 3),
        (E("INFO", "namenode.FSNamesystem", "*DIR* reportBadBlocks for block: {bp}:{blk} on datanode: {ip}:9866", "CORRUPT"), 1, 2),
    ), weight=0.6),
]

SYSLOG_ROUTINE = [
    (14, E("", "sshd", "Accepted publickey for {user} from {ip} port {port} ssh2")),
    (14, E("", "sshd", "pam_unix(sshd:session): session opened for user {user}(uid={n}) by (uid=0)")),
    (12, E("", "sshd", "pam_unix(sshd:session): session closed for user {user}")),
    (10, E("", "sshd", "Received disconnect from {ip} port {port}:11: disconnected by user")),
    (8, E("", "sshd", "Connection closed by {attacker} port {port} [preauth]")),
    (12, E("", "CRON", "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)")),
    (10, E("", "CRON", "(root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)")),
    (8, E("", "systemd", "Started Session {n} of User {user}.")),
    (4, E("", "systemd", "Starting Daily apt download activities...")),
    (4, E("", "systemd", "Finished Daily apt download activities.")),
    (4, E("", "systemd", "logrotate.service: Deactivated successfully.")),
    (3, E("", "systemd", "Reloading The nginx HTTP and reverse proxy server...")),
    (6, E("", "sudo", "{user} : TTY=pts/0 ; PWD=/home/{user} ; USER=root ; COMMAND=/usr/bin/systemctl status {svc}")),
    (6, E("", "kernel", "[UFW BLOCK] IN=eth0 OUT= SRC={attacker} DST=10.0.0.11 LEN=40 TOS=0x00 PREC=0x00 TTL=242 ID={n} PROTO=TCP SPT={port} DPT=23 WINDOW=1024 RES=0x00 SYN URGP=0")),
    (4, E("", "systemd-timesyncd", "Initial synchronization to time server 185.125.190.57:123 (ntp.ubuntu.com).")),
    (3, E("", "systemd-resolved", "Using degraded feature set UDP instead of UDP+EDNS0 for DNS server 10.0.0.53.")),
    (3, E("", "kernel", "e1000e: eth0 NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx")),
]

SYSLOG_INCIDENTS = [
    Incident("ssh brute force", (
        (E("", "sshd", "Invalid user {baduser} from {attacker} port {port}", "AUTH"), 3, 8),
        (E("", "sshd", "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={attacker}", "AUTH"), 2, 6),
        (E("", "sshd", "Failed password for invalid user {baduser} from {attacker} port {port} ssh2", "AUTH"), 3, 8),
        (E("", "sshd", "error: maximum authentication attempts exceeded for root from {attacker} port {port} ssh2 [preauth]", "AUTH"), 1, 2),
        (E("", "sshd", "PAM 5 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost={attacker}  user=root", "AUTH"), 1, 1),
    ), sticky=("attacker",), weight=1.5),
    Incident("oom kill", (
        (E("", "kernel", "{proc} invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0", "OOM"), 1, 1),
        (E("", "kernel", "Out of memory: Killed process {pid} ({proc}) total-vm:{n}kB, anon-rss:{n}kB, file-rss:0kB, shmem-rss:0kB, UID:{n} pgtables:{n}kB oom_score_adj:0", "OOM"), 1, 1),
        (E("", "systemd", "{svc}.service: A process of this unit has been killed by the OOM killer.", "OOM"), 1, 1),
        (E("", "systemd", "{svc}.service: Main process exited, code=killed, status=9/KILL", "OOM"), 1, 1),
        (E("", "systemd", "{svc}.service: Failed with result 'oom-kill'.", "OOM"), 1, 1),
    ), sticky=("proc", "pid", "svc")),
    Incident("disk full", (
        (E("", "rsyslogd", "file '/var/log/syslog': write error - see https://www.rsyslog.com/solving-rsyslog-write-errors/ for help OS error: No space left on device", "DISKFULL"), 1, 3),
        (E("", "systemd-journald", "Failed to write entry ({small} items, {n} bytes), ignoring: No space left on device", "DISKFULL"), 1, 3),
        (E("", "postgres", "PANIC:  could not write to file \"pg_wal/xlogtemp.{pid}\": No space left on device", "DISKFULL"), 1, 1),
    )),
    Incident("disk i/o error", (
        (E("", "kernel", "blk_update_request: I/O error, dev {dev}, sector {n} op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 0", "DISKIO"), 2, 4),
        (E("", "kernel", "Buffer I/O error on dev {dev}1, logical block {n}, async page read", "DISKIO"), 1, 3),
        (E("", "kernel", "EXT4-fs error (device {dev}1): ext4_find_entry:1463: inode #{n}: comm {proc}: reading directory lblock 0", "DISKIO"), 1, 2),
    ), sticky=("dev",), weight=0.7),
    Incident("segfault", (
        (E("", "kernel", "{proc}[{pid}]: segfault at 0 ip {hex16} sp {hex16} error 4 in libc.so.6[{hex8}+195000]", "SEGV"), 1, 1),
        (E("", "systemd-coredump", "Process {pid} ({proc}) of user {n} dumped core.", "SEGV"), 1, 1),
        (E("", "systemd", "{svc}.service: Main process exited, code=dumped, status=11/SEGV", "SEGV"), 1, 1),
    ), sticky=("proc", "pid"), weight=0.7),
    Incident("kernel panic", (
        (E("", "kernel", "watchdog: BUG: soft lockup - CPU#{core} stuck for 23s! [kworker/{core}:1:{pid}]", "PANIC"), 1, 2),
        (E("", "kernel", "BUG: unable to handle page fault for address: ffff{hex8}", "PANIC"), 1, 1),
        (E("", "kernel", "Kernel panic - not syncing: Fatal exception in interrupt", "PANIC"), 1, 1),
    ), weight=0.4),
    Incident("mail relay refused", (
        (E("", "postfix/smtp", "connect to mx1.partner.example[{ip}]:25: Connection refused", "NETWORK"), 2, 4),
        (E("", "postfix/smtp", "{hex8}: to=<orders@partner.example>, relay=none, delay={n}, delays={n}/0/{n}/0, dsn=4.4.1, status=deferred (connect to mx1.partner.example[{ip}]:25: Connection refused)", "NETWORK"), 1, 3),
    ), weight=0.6),
]

HPC_ROUTINE = [
    (20, E("INFO", "KERNEL", "instruction cache parity error corrected")),
    (14, E("INFO", "KERNEL", "total of {small} ddr error(s) detected and corrected")),
    (12, E("INFO", "KERNEL", "CE sym {small}, at 0x{hex8}, mask 0x{hex8}")),
    (10, E("INFO", "KERNEL", "{n} double-hummer alignment exceptions")),
    (6, E("INFO", "KERNEL", "generating core.{n}")),
    (4, E("INFO", "KERNEL", "ddr: activating redundant bit steering: rank=0 symbol={small}")),
    (4, E("INFO", "MMCS", "ciodb has been restarted.")),
    (3, E("INFO", "MMCS", "idoproxydb has been started: $Name: V1R3M0_2024 $ Input parameters: -enableflush -loguserinfo db.properties BlueGene1")),
    (4, E("WARNING", "DISCOVERY", "Node card VPD check: {unit} node in processor card slot {slot} do not match. VPD ecid 0x{hex16}, found 0x{hex16}")),
    (4, E("SEVERE", "HARDWARE", "MidplaneSwitchController performing bit sparing on {rack} bit {small}")),
    (3, E("FATAL", "KERNEL", "instruction address: 0x{hex8}")),
    (3, E("FATAL", "KERNEL", "machine state register: 0x{hex8}")),
    (3, E("INFO", "APP", "ciod: generated {small} core files for program /home/{user}/lammps/lmp_bgl")),
]

HPC_INCIDENTS = [
    Incident("data TLB error", (
        (E("FATAL", "KERNEL", "data TLB error interrupt", "KERNDTLB"), 1, 6),
        (E("FATAL", "KERNEL", "rts: kernel terminated for reason 1004", "KERNTERM"), 1, 2),
    )),
    Incident("machine check", (
        (E("FATAL", "KERNEL", "machine check interrupt (bit=0x1d): L2 dcache unit data parity error", "KERNMC"), 1, 3),
        (E("FATAL", "KERNEL", "uncorrectable ECC error detected in ddr rank {core}, node card will be fenced", "KERNMC"), 1, 2),
        (E("FATAL", "KERNEL", "rts panic! - stopping execution", "KERNRTSP"), 1, 1),
    )),
    Incident("io node link lost", (
        (E("FATAL", "APP", "ciod: failed to read message prefix on control stream (CioStream socket to {ip}:{port}", "APPREAD"), 2, 6),
        (E("FATAL", "APP", "ciod: Error reading message prefix after LOAD_MESSAGE on CioStream socket to {ip}:{port}: Link has been severed", "APPSEV"), 1, 3),
    )),
    Incident("filesystem mount failure", (
        (E("FATAL", "KERNEL", "Lustre mount FAILED : bglio{small} : block_id : location", "KERNMNTF"), 1, 4),
        (E("ERROR", "MMCS", "idoproxy communication failure: socket closed", "MONNULL"), 1, 1),
    ), weight=0.6),
    Incident("torus error", (
        (E("FATAL", "KERNEL", "external input interrupt (unit=0x02 bit=0x00): uncorrectable torus error", "KERNEXT"), 1, 3),
        (E("FAILURE", "LINKCARD", "Link PGOOD error latched on link card {rack}", "LINKPAP"), 1, 2),
    ), weight=0.6),
    Incident("power fault", (
        (E("FAILURE", "MONITOR", "power module status fault detected on node card {rack}, status registers are: 0x{hex8}", "MONPOW"), 1, 2),
        (E("SEVERE", "MONITOR", "NodeCard temperature sensor chip {unit} exceeded critical threshold, shutting down node card {rack}", "MONPOW"), 1, 1),
    ), weight=0.5),
]

WEB_REQUEST = 'client: {ip}, server: {server}, request: "{method} {uri} HTTP/1.1", host: "{server}"'
WEB_UPSTREAM = 'client: {ip}, server: {server}, request: "{method} {uri} HTTP/1.1", upstream: "http://10.2.0.{small}:8080{uri}", host: "{server}"'

WEB_ROUTINE = [
    (16, E("info", "", "*{n} client {ip} closed keepalive connection")),
    (10, E("info", "", "*{n} client closed connection while waiting for request, client: {ip}, server: 0.0.0.0:443")),
    (8, E("info", "", "*{n} SSL_do_handshake() failed (SSL: error:0A00006C:SSL routines::bad key share) while SSL handshaking, client: {attacker}, server: 0.0.0.0:443")),
    (8, E("error", "", '*{n} open() "/usr/share/nginx/html/favicon.ico" failed (2: No such file or directory), ' + WEB_REQUEST)),
    (6, E("warn", "", "*{n} an upstream response is buffered to a temporary file /var/cache/nginx/proxy_temp/{small}/{n} while reading upstream, " + WEB_UPSTREAM)),
    (4, E("warn", "", "*{n} a client request body is buffered to a temporary file /var/cache/nginx/client_temp/{n}, " + WEB_REQUEST)),
    (4, E("info", "", "*{n} client sent invalid method while reading client request line, client: {attacker}, server: 0.0.0.0:80")),
    (3, E("notice", "", "signal 1 (SIGHUP) received from {pid}, reconfiguring")),
    (3, E("notice", "", "reconfiguring")),
    (3, E("notice", "", "using the \"epoll\" event method")),
    (4, E("notice", "", "start worker process {pid}")),
    (3, E("notice", "", "gracefully shutting down")),
    (3, E("notice", "", "exiting")),
    (2, E("warn", "", '"ssl_stapling" ignored, issuer certificate not found for certificate "/etc/letsencrypt/live/{server}/fullchain.pem"')),
]

WEB_INCIDENTS = [
    Incident("upstream connection refused", (
        (E("error", "", "*{n} connect() failed (111: Connection refused) while connecting to upstream, " + WEB_UPSTREAM, "NETWORK"), 3, 8),
        (E("warn", "", "*{n} upstream server temporarily disabled while connecting to upstream, " + WEB_UPSTREAM, "NETWORK"), 1, 3),
        (E("error", "", "*{n} no live upstreams while connecting to upstream, " + WEB_REQUEST, "NETWORK"), 1, 4),
    ), sticky=("server",), weight=1.4),
    Incident("upstream timeout", (
        (E("error", "", "*{n} upstream timed out (110: Connection timed out) while reading response header from upstream, " + WEB_UPSTREAM, "TIMEOUT"), 2, 6),
        (E("error", "", "*{n} upstream prematurely closed connection while reading response header from upstream, " + WEB_UPSTREAM, "TIMEOUT"), 1, 2),
    ), sticky=("server",)),
    Incident("certificate expired", (
        (E("error", "", "*{n} upstream SSL certificate verify error: (10:certificate has expired) while SSL handshaking to upstream, " + WEB_UPSTREAM, "CERT"), 2, 5),
    ), sticky=("server",), weight=0.7),
    Incident("disk full", (
        (E("crit", "", '*{n} pwrite() "/var/cache/nginx/client_temp/{n}" failed (28: No space left on device), ' + WEB_REQUEST, "DISKFULL"), 2, 5),
        (E("alert", "", "*{n} write() to \"/var/log/nginx/access.log\" failed (28: No space left on device) while logging request, " + WEB_REQUEST, "DISKFULL"), 1, 3),
    ), weight=0.7),
    Incident("worker crash", (
        (E("alert", "", "worker process {pid} exited on signal 11 (core dumped)", "SEGV"), 1, 2),
        (E("notice", "", "start worker process {pid}"), 1, 1),
    ), weight=0.6),
    Incident("file descriptors exhausted", (
        (E("alert", "", "*{n} socket() failed (24: Too many open files) while connecting to upstream, " + WEB_UPSTREAM, "RESOURCE"), 2, 4),
        (E("crit", "", "accept4() failed (24: Too many open files)", "RESOURCE"), 1, 3),
    ), weight=0.5),
]

K8S_ROUTINE = [
    (12, E("info", "kubelet", 'SyncLoop ADD source="api" pods=["{pod}"]')),
    (10, E("info", "kubelet", 'SyncLoop UPDATE source="api" pods=["{pod}"]')),
    (6, E("info", "kubelet", 'SyncLoop DELETE source="api" pods=["{pod}"]')),
    (10, E("info", "kubelet", 'SyncLoop (PLEG): event for pod pod="{pod}" event={"Type":"ContainerStarted","Data":"{hex64}"}')),
    (8, E("info", "containerd", 'PullImage "{image}" returns image reference "sha256:{hex64}"')),
    (10, E("info", "containerd", 'CreateContainer within sandbox "{hex64}" for container &ContainerMetadata{Name:{app},Attempt:0,} returns container id "{hex64}"')),
    (10, E("info", "containerd", 'StartContainer for "{hex64}" returns successfully')),
    (6, E("info", "kube-scheduler", 'Successfully bound pod to node pod="{pod}" node="{node}" evaluatedNodes=4 feasibleNodes=4')),
    (5, E("info", "kube-controller-manager", 'Event occurred object="{ns}/{app}" kind="Deployment" reason="ScalingReplicaSet" message="Scaled up replica set to 3"')),
    (5, E("info", "kubelet", 'MountVolume.SetUp succeeded for volume "config" pod="{pod}"')),
    (4, E("warning", "kubelet", "Nameserver limits exceeded, some nameserver entries were omitted, the applied nameserver line is: 10.96.0.10 10.0.0.53 1.1.1.1")),
    (4, E("info", "coredns", '[INFO] {ip}:{port} - {n} "A IN {app}.{ns}.svc.cluster.local. udp 58 false 512" NOERROR qr,aa,rd 110')),
    (3, E("info", "kubelet", 'Killing container with a grace period pod="{pod}" containerName="{app}" gracePeriod=30')),
]

K8S_INCIDENTS = [
    Incident("oom killed", (
        (E("info", "containerd", "TaskOOM event &TaskOOM{ContainerID:{hex64},XXX_unrecognized:[],}", "OOM"), 1, 1),
        (E("warning", "kernel", "Memory cgroup out of memory: Killed process {pid} ({proc}) total-vm:{n}kB, anon-rss:{n}kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:{n}kB oom_score_adj:999", "OOM"), 1, 1),
        (E("info", "kubelet", 'Container exited with reason OOMKilled pod="{pod}" containerName="{app}" exitCode=137', "OOM"), 1, 2),
    ), sticky=("app", "ns", "pod", "proc")),
    Incident("crash loop", (
        (E("error", "kubelet", 'Back-off restarting failed container {app} in pod {pod}', "CRASHLOOP"), 2, 6),
        (E("error", "kubelet", 'Error syncing pod, skipping err="failed to \\"StartContainer\\" for \\"{app}\\" with CrashLoopBackOff: \\"back-off 5m0s restarting failed container={app} pod={pod}\\"" pod="{pod}"', "CRASHLOOP"), 1, 4),
    ), sticky=("app", "ns", "pod")),
    Incident("liveness probe refused", (
        (E("info", "kubelet", 'Probe failed probeType="Liveness" pod="{pod}" containerName="{app}" probeResult="failure" output="Get \\"http://{ip}:8080/healthz\\": dial tcp {ip}:8080: connect: connection refused"', "PROBE"), 2, 5),
        (E("info", "kubelet", 'Container failed liveness probe, will be restarted pod="{pod}" containerName="{app}"', "PROBE"), 1, 1),
    ), sticky=("app", "ns", "pod", "ip")),
    Incident("disk pressure eviction", (
        (E("warning", "kubelet", 'Eviction manager: attempting to reclaim resourceName="ephemeral-storage"', "DISKFULL"), 1, 2),
        (E("error", "containerd", 'failed to write log: write /var/log/pods/{hex8}/{app}/0.log: no space left on device', "DISKFULL"), 1, 3),
        (E("info", "kubelet", 'Eviction manager: pod is evicted successfully pod="{pod}"', "DISKFULL"), 1, 3),
    ), sticky=("app", "ns", "pod")),
    Incident("image pull failure", (
        (E("error", "containerd", 'PullImage "{image}" failed error="failed to pull and unpack image: failed to resolve reference: unexpected status from HEAD request: 503 Service Unavailable"', "IMAGE"), 1, 3),
        (E("error", "kubelet", 'Error syncing pod, skipping err="failed to \\"StartContainer\\" for \\"{app}\\" with ImagePullBackOff: \\"Back-off pulling image\\"" pod="{pod}"', "IMAGE"), 1, 3),
    ), sticky=("app", "ns", "pod"), weight=0.7),
    Incident("expired certificate", (
        (E("error", "kubelet", 'Unable to authenticate the request due to an error err="x509: certificate has expired or is not yet valid: current time 2024-03-12T{small}:00:00Z is after 2024-03-11T23:59:59Z"', "CERT"), 2, 5),
        (E("error", "kubelet", 'Failed to update lease err="Unauthorized"', "CERT"), 1, 2),
    ), weight=0.6),
    Incident("node not ready", (
        (E("error", "kube-apiserver", "etcdserver: request timed out", "TIMEOUT"), 1, 3),
        (E("error", "kubelet", 'Failed to update lease err="Put \\"https://10.96.0.1:443/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}?timeout=10s\\": context deadline exceeded"', "TIMEOUT"), 1, 3),
        (E("info", "kube-controller-manager", 'Node is NotReady node="{node}" reason="NodeStatusUnknown" message="Kubelet stopped posting node status."', "TIMEOUT"), 1, 1),
    ), sticky=("node",), weight=0.6),
    Incident("segfault", (
        (E("warning", "containerd", 'shim reaped task: container {hex64} exited with signal SIGSEGV (segmentation fault)', "SEGV"), 1, 2),
        (E("error", "kubelet", 'Container exited with reason Error pod="{pod}" containerName="{app}" exitCode=139', "SEGV"), 1, 1),
    ), sticky=("app", "ns", "pod"), weight=0.5),
]


@dataclass(frozen=True)
class System:
    name: str
    role: str  # "source" or "target"
    description: str
    format: str  # an ingest --format value
    routine: list[tuple[int, Event]]
    incidents: list[Incident]
    header: Callable[[datetime, Event, Fields, str], str]  # (time, event, fields, message) -> line
    file: str
    text_field: str | None = None
    label_field: str | None = None

    def input_format(self) -> InputFormat:
        return parse_format(self.format, text_field=self.text_field, label_field=self.label_field)


def _storage_line(t: datetime, e: Event, f: Fields, message: str) -> str:
    return f"{t:%Y-%m-%d %H:%M:%S},{t.microsecond // 1000:03d} {e.level} [{_thread(e, f)}] org.apache.hadoop.hdfs.server.{e.component}: {message}"


def _thread(e: Event, f: Fields) -> str:
    if "namenode" in e.component or "blockmanagement" in e.component:
        return f"IPC Server handler {f['small']} on 8020"
    return f"DataXceiver-{f['small']}"


def _syslog_line(t: datetime, e: Event, f: Fields, message: str) -> str:
    host = f.rng.choice(["web-01", "web-02", "db-01", "app-01"])
    pid = {"kernel": "", "systemd": "[1]"}.get(e.component, f"[{f['pid']}]")
    return f"{t:%b} {t.day:>2} {t:%H:%M:%S} {host} {e.component}{pid}: {message}"


def _hpc_line(t: datetime, e: Event, f: Fields, message: str) -> str:
    node = f"R{f.rng.randint(0, 7)}{f.rng.randint(0, 7)}-M{f.rng.randint(0, 1)}-N{f.rng.randint(0, 15):X}-C:J{f.rng.randint(2, 17):02d}-U{f.rng.choice(['01', '11'])}"
    alert = e.alert or "-"
    return (f"{alert} {int(t.timestamp())} {t:%Y.%m.%d} {node} {t:%Y-%m-%d-%H.%M.%S}.{t.microsecond:06d} {node} "
            f"RAS {e.component} {e.level} {message}")


def _web_line(t: datetime, e: Event, f: Fields, message: str) -> str:
    pid = f.rng.choice([2211, 2212, 2213, 2214])
    return f"{t:%Y/%m/%d %H:%M:%S} [{e.level}] {pid}#{pid}: {message}"


def _k8s_line(t: datetime, e: Event, f: Fields, message: str) -> str:
    return json.dumps({"ts": f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z", "node": f["node"],
                       "component": e.component, "level": e.level, "msg": message,
                       "label": int(e.anomalous)})


SYSTEMS: list[System] = [
    System("storage", "source", "a Hadoop HDFS storage cluster (NameNode and DataNodes)",
           r"log:<Date> <Time> <Level> \[<Thread>\] <Component>: <Content>",
           STORAGE_ROUTINE, STORAGE_INCIDENTS, _storage_line, "storage.log"),
    System("syslog", "source", "the syslog of Linux servers (sshd, kernel, systemd, cron, postfix)",
           r"log:<Month> <Day> <Time> <Host> <Component>(\[<PID>\])?: <Content>",
           SYSLOG_ROUTINE, SYSLOG_INCIDENTS, _syslog_line, "syslog.log"),
    System("hpc", "source", "the RAS log of a BlueGene-like HPC supercomputer",
           "loghub:BGL", HPC_ROUTINE, HPC_INCIDENTS, _hpc_line, "hpc-ras.log"),
    System("web", "source", "the error log of nginx web servers and reverse proxies",
           r"log:<Date> <Time> \[<Level>\] <Pid>#<Tid>: <Content>",
           WEB_ROUTINE, WEB_INCIDENTS, _web_line, "nginx-error.log"),
    System("k8s", "target", "a Kubernetes container platform (kubelet, containerd, control plane)",
           "jsonl", K8S_ROUTINE, K8S_INCIDENTS, _k8s_line, "k8s.jsonl", text_field="msg", label_field="label"),
]


# ---------------------------------------------------------------------------- generation

@dataclass
class SampleLog:
    """One generated file and what the demo needs to know about it."""

    system: str
    role: str
    path: str
    format: str
    description: str
    lines: int
    anomalous_lines: int
    text_field: str | None = None
    label_field: str | None = None
    kinds: dict[str, int] = field(default_factory=dict)  # failure kind -> lines

    def input_format(self) -> InputFormat:
        return parse_format(self.format, text_field=self.text_field, label_field=self.label_field)


def generate_lines(system: System, n_lines: int, rng: random.Random,
                   incident_rate: float = 0.009) -> list[tuple[str, int, str | None]]:
    """(line, label, failure kind) for `n_lines` lines of one system, in time order.

    Every failure kind happens at least once (one of each at spread-out random times, so a
    small corpus has them all too); more incidents start with probability `incident_rate`
    per line. Incident lines interleave with routine traffic, as a real failure does not
    silence the rest of the system.
    """
    weights = [w for w, _ in system.routine]
    events = [e for _, e in system.routine]
    first_pass = rng.sample(system.incidents, len(system.incidents))
    slot = n_lines / (len(first_pass) + 1)
    scheduled = {int((i + rng.random()) * slot): incident for i, incident in enumerate(first_pass)}
    t = START + timedelta(seconds=rng.randint(0, 3600))
    active: list[tuple[Incident, list[Event], Fields]] = []
    out: list[tuple[str, int, str | None]] = []
    while len(out) < n_lines:
        t += timedelta(microseconds=int(rng.expovariate(1 / 1.5) * 1_000_000))
        incident = scheduled.pop(len(out), None)
        if incident is None and rng.random() < incident_rate:
            incident = rng.choices(system.incidents, [i.weight for i in system.incidents])[0]
        if incident is not None:
            queue = [event for event, low, high in incident.steps for _ in range(rng.randint(low, high))]
            active.append((incident, queue, Fields(rng, incident.sticky)))
        if active and rng.random() < 0.7:
            incident, queue, fields = active[0]
            fields.new_line()
            event = queue.pop(0)
            if not queue:
                active.pop(0)
            kind = incident.kind if event.anomalous else None
        else:
            event, fields, kind = rng.choices(events, weights)[0], Fields(rng), None
        label = int(event.anomalous)
        out.append((system.header(t, event, fields, render(event.text, fields)), label, kind))
    return out


# ---------------------------------------------------------------------------- block sessions

BLOCK_SESSIONS = 200  # blocks of storage-blocks.log by default (about 2,500 lines)
BLOCK_FAULT_RATE = 0.06  # share of the blocks that are faulty (at least one of each kind, as many of each)
BLOCK_SESSION_REGEX = r"blk_\d+"  # a line's block id, its session key (`--session`)
BLOCK_SYSTEM = "storage-blocks"
BLOCK_FAULTS = ("never replicated", "never finished", "retry loop")


def _storage_event(start: str) -> Event:
    """The routine storage event whose template starts with `start`: block sessions use no other."""
    (event,) = [e for _, e in STORAGE_ROUTINE if e.text.startswith(start)]
    return event


ALLOCATE, RECEIVING, RECEIVED, LAST, DOWNSTREAM, DELETED, COMMITTED, COMPLETE = map(_storage_event, (
    "BLOCK* allocate", "Receiving", "Received", "PacketResponder: {bp}:{blk}, type=LAST",
    "PacketResponder: {bp}:{blk}, type=HAS", "Deleted", "BLOCK* blk_{n} is COMMITTED", "DIR* completeFile"))


def _block_steps(kind: str | None, rng: random.Random) -> list[tuple[float, Event]]:
    """(seconds after the block's allocation, event) of one block's lines, in order.

    Normal: the NameNode allocates three replicas, the pipeline's DataNodes receive the block
    (about in pipeline order), acknowledge it from the last one back (a Received and a
    PacketResponder line each, about in reverse order), the block is committed and its file
    closed (`completeFile`, a line without the block's id, so in no session); a quarter of the
    blocks are deleted minutes later on every replica. The faults: `never replicated` (one
    replica received, the others never arrive, no completion), `never finished` (receiving,
    never received), `retry loop` (receive and delete, or receive and allocate, again and again).
    """
    clock = 0.0

    def at(gap: float, event: Event) -> tuple[float, Event]:
        nonlocal clock
        clock += gap
        return clock, event

    steps = [at(0.0, ALLOCATE)]
    if kind == "retry loop":  # received and dropped, or allocated anew, over and over
        again = rng.choice([DELETED, ALLOCATE])
        for _ in range(rng.randint(6, 15)):
            steps += [at(rng.uniform(0.5, 5.0), RECEIVING), at(rng.uniform(0.001, 0.2), again)]
        return steps
    receiving = 1 if kind == "never replicated" else rng.randint(1, 3) if kind == "never finished" else 3
    steps += [at(rng.uniform(0.002, 0.08), RECEIVING) for _ in range(receiving)]
    if kind == "never finished":
        return steps
    clock += rng.uniform(0.3, 8.0)  # the transfer
    if kind == "never replicated":
        return steps + [at(rng.uniform(0.001, 0.05), RECEIVED), at(rng.uniform(0.0, 0.005), LAST)]
    responders = [LAST, DOWNSTREAM, DOWNSTREAM]
    if rng.random() < 0.3:  # acknowledgements cross on the wire
        i = rng.randrange(2)
        responders[i], responders[i + 1] = responders[i + 1], responders[i]
    for responder in responders:
        steps += [at(rng.uniform(0.001, 0.05), RECEIVED), at(rng.uniform(0.0, 0.005), responder)]
    steps += [at(rng.uniform(0.001, 0.05), COMMITTED), at(rng.uniform(0.01, 0.5), COMPLETE)]
    if rng.random() < 1 / 4:
        clock += rng.uniform(30.0, 900.0)
        steps += [at(rng.uniform(0.001, 0.3), DELETED) for _ in range(3)]
    return steps


def generate_block_sessions(system: System, n_sessions: int, rng: random.Random,
                            fault_rate: float = BLOCK_FAULT_RATE) -> tuple[list[str], list[tuple[str, str | None]]]:
    """(lines in time order, (block id, fault kind or None) of each block in order of allocation).

    `n_sessions` HDFS blocks of `system` (the storage system: its header and routine events
    only), several written at once so their lines interleave. Every line of a block but its
    file's `completeFile` carries the block's id and no other (`blk_<id>`, allocated in
    increasing order as a NameNode does, so no two blocks share one); every line is routine on
    its own; a faulty block is anomalous only in the order or the absence of its lines.
    """
    n_faults = min(n_sessions, max(len(BLOCK_FAULTS), round(n_sessions * fault_rate)))
    faulty = rng.sample(range(n_sessions), n_faults)
    kind_of = {index: BLOCK_FAULTS[i % len(BLOCK_FAULTS)] for i, index in enumerate(faulty)}  # as many of each
    pool = Fields(rng)["bp"]  # the cluster's one block pool
    block_id, stamp = 1_073_741_825 + rng.randint(0, 5000), 1001 + rng.randint(0, 5000)
    start = START + timedelta(seconds=rng.randint(0, 3600) + rng.random())
    timed: list[tuple[datetime, int, str]] = []
    sessions: list[tuple[str, str | None]] = []
    for index in range(n_sessions):
        kind = kind_of.get(index)
        key = f"blk_{block_id}"
        fields = Fields(rng, sticky=("hdfs_path", "bytes"), fixed={"bp": pool, "blk": f"{key}_{stamp}"})
        for offset, event in _block_steps(kind, rng):
            t = start + timedelta(seconds=offset)
            # the slots that name the block besides `blk`: COMMITTED's `blk_{n}`, a deleted replica's file
            fields.new_line(**{"n": str(block_id)} if event is COMMITTED else
                            {"file": replica_file(rng, key)} if event is DELETED else {})
            timed.append((t, len(timed), system.header(t, event, fields, render(event.text, fields))))
        sessions.append((key, kind))
        block_id += rng.randint(1, 4)
        stamp += rng.randint(1, 4)
        start += timedelta(seconds=rng.expovariate(1 / 0.8))
    return [line for _, _, line in sorted(timed)], sessions


def write_block_sessions(folder: Path, system: System, seed: int, n_sessions: int) -> dict:
    """`storage-blocks.log` (as `system`'s file) and `storage-blocks-sessions.csv` (`key,label,kind`)
    in `folder`; their manifest entry."""
    lines, sessions = generate_block_sessions(system, n_sessions, random.Random(f"{seed}:{BLOCK_SYSTEM}"))
    path, labels = folder / f"{BLOCK_SYSTEM}.log", folder / f"{BLOCK_SYSTEM}-sessions.csv"
    with atomic_output(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    with atomic_output(labels) as tmp:
        tmp.write_text("key,label,kind\n" + "".join(f"{key},{int(kind is not None)},{kind or ''}\n"
                                                      for key, kind in sessions), encoding="utf-8")
    kinds = {kind: sum(k == kind for _, k in sessions) for kind in BLOCK_FAULTS}
    return {"system": BLOCK_SYSTEM, "path": str(path), "format": system.format, "session": BLOCK_SESSION_REGEX,
            "labels": str(labels), "description": f"HDFS block sessions of {system.description}, keyed by block id",
            "lines": len(lines), "sessions": len(sessions), "anomalous": sum(kinds.values()), "kinds": kinds}


LABEL_COLUMN = "Label"


def with_label_column(system: System) -> System:
    """The system written with a 0/1 `Label` column in front of each line (where its format carries
    no label of its own), so that every system can be scored as an unseen target (bench/transfer.py)."""
    if system.label_field or system.format.startswith("loghub:") or not system.format.startswith("log:"):
        return system
    header = system.header
    labeled = "log:<Label> " + system.format[len("log:"):]
    return replace(system, format=labeled, label_field=LABEL_COLUMN,
                               header=lambda t, e, f, message: f"{int(e.anomalous)} {header(t, e, f, message)}")


def write_corpus(folder: str | Path, *, seed: int = DEFAULT_SEED, lines: int = DEFAULT_LINES,
                 systems: list[System] | None = None, labeled: bool = False,
                 block_sessions: int = BLOCK_SESSIONS) -> list[SampleLog]:
    """Write one log file per system into `folder` (and `manifest.json`); same seed, same bytes.
    `labeled`: every file carries its lines' labels (`with_label_column`), the sources' too.
    Where the storage system is written, so are `block_sessions` blocks of it (`write_block_sessions`,
    unlabeled lines, labeled per session; 0: none), in the manifest's `sessions`; the samples
    returned are the systems' only."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    systems = systems or SYSTEMS
    samples = []
    for index, system in enumerate(systems):
        if labeled:
            system = with_label_column(system)
        rng = random.Random(f"{seed}:{system.name}")
        rows = generate_lines(system, lines, rng)
        path = folder / system.file
        with atomic_output(path) as tmp:
            tmp.write_text("".join(line + "\n" for line, _, _ in rows), encoding="utf-8")
        kinds: dict[str, int] = {}
        for _, _, kind in rows:
            if kind:
                kinds[kind] = kinds.get(kind, 0) + 1
        samples.append(SampleLog(system.name, system.role, str(path), system.format, system.description,
                                 len(rows), sum(label for _, label, _ in rows), system.text_field,
                                 system.label_field, kinds))
    manifest = {"seed": seed, "lines_per_system": lines, "systems": [asdict(s) for s in samples]}
    storage = [system for system in systems if system.name == "storage"]
    if storage and block_sessions > 0:
        manifest["sessions"] = write_block_sessions(folder, storage[0], seed, block_sessions)
    with atomic_output(folder / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return samples

