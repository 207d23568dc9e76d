"""A real single-host Slurm for the act tests (the fixtures in conftest.py start it), on
loopback, stopped at the end.

Its own munge key and socket, its own config, state and spool folders (under the test's temp
folder), its own free ports. One ``slurmd -N <name>`` per NodeName, each on its own port:
Debian's build runs several slurmd daemons on one host that way (each answers for the node name
it is given), so every node is a live, idle node whose state changes as on a real cluster.
Node names are the simulator's (``n00001`` ...), so a simulated run's names need no map.

Skipped, with the reason, only when the binaries are absent (``make test`` installs them).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "scontrol", "sinfo", "squeue", "sbatch", "scancel")
NODES = tuple(f"n{i:05d}" for i in range(1, 9))  # a simulated 8-node run's names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(what: str, done: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Slurm:
    """The running cluster: its config, and helpers that read and change it as an admin."""

    def __init__(self, root: Path, nodes: tuple[str, ...] = NODES) -> None:
        self.root = root
        self.nodes = nodes
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self, *argv: str) -> str:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30,
                              check=False)
        assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
        return done.stdout

    def start(self) -> None:
        munge = self.root / "munge"
        munge.mkdir(mode=0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = munge / "sock"
        self._spawn("munged", "-f", "-F", f"--socket={sock}", f"--key-file={key}",
                    f"--pid-file={munge / 'pid'}", f"--log-file={munge / 'log'}",
                    f"--seed-file={munge / 'seed'}")
        poll("munged", sock.exists, 10)
        for folder in ("state", "spool"):
            (self.root / folder).mkdir()
        nodes = "\n".join(
            f"NodeName={name} NodeAddr=127.0.0.1 NodeHostname=localhost Port={_free_port()} "
            "CPUs=1 State=UNKNOWN" for name in self.nodes)
        r = self.root
        self.conf.write_text(f"""ClusterName=fltest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd-%n.log
PlugStackConfig={r}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/linear
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
JobRequeue=1
SlurmdTimeout=10
{nodes}
PartitionName=vc0 Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=vc1 Nodes=ALL MaxTime=INFINITE State=UP
""")
        (r / "plugstack.conf").write_text("")
        self._spawn("slurmctld", "-D", "-f", str(self.conf))
        for name in self.nodes:
            (r / "spool" / name).mkdir()
            self._spawn("slurmd", "-D", "-f", str(self.conf), "-N", name)
        poll("every node idle", lambda: self.states() == {n: "idle" for n in self.nodes})

    def _spawn(self, *argv: str) -> None:
        log = (self.root / f"{argv[0]}-{len(self.procs)}.out").open("wb")
        self.procs.append(subprocess.Popen(argv, env=self.env, stdout=log,
                                           stderr=subprocess.STDOUT))

    def states(self) -> dict[str, str]:
        try:
            out = subprocess.run(["sinfo", "--noheader", "--Node", "--format", "%N|%T"],
                                 env=self.env, capture_output=True, text=True, timeout=10,
                                 check=False).stdout
        except subprocess.TimeoutExpired:
            return {}
        return dict(line.split("|", 1) for line in out.split() if "|" in line)

    def node(self, name: str) -> tuple[str, str]:
        """(state, reason) of one node, as sinfo shows them."""
        out = self.run("sinfo", "--noheader", "--Node", "--nodes", name, "--format", "%T|%E")
        state, reason = out.splitlines()[0].split("|", 1)
        return state, reason.strip()

    def drain(self, name: str, reason: str) -> None:
        self.run("scontrol", "update", f"NodeName={name}", "State=DRAIN", f"Reason={reason}")

    def sbatch(self, *nodes: str, script: str = "sleep 600") -> str:
        out = self.run("sbatch", "--parsable", "--requeue", f"--nodes={len(nodes)}",
                       f"--nodelist={','.join(nodes)}", "--output=/dev/null",
                       f"--wrap={script}")
        job = out.strip().split(";")[0]
        poll(f"job {job} running", lambda: self.job(job).get("JobState") == "RUNNING")
        return job

    def job(self, job: str) -> dict[str, str]:
        out = self.run("scontrol", "--oneliner", "show", "job", job)
        return dict(w.split("=", 1) for w in out.split() if "=" in w)

    def reset(self) -> None:
        """Every job cancelled, every node idle again (between tests)."""
        subprocess.run(["scancel", "--user=root"], env=self.env, check=False, timeout=30)
        poll("no jobs left", lambda: not self.run("squeue", "--noheader").strip())
        # "idle*": idle, not heard from since a resume; the next ping clears the "*"
        busy = [name for name, state in self.states().items() if state.rstrip("*") != "idle"]
        if busy:
            self.run("scontrol", "update", f"NodeName={','.join(busy)}", "State=RESUME")
        poll("every node idle", lambda: self.states() == {n: "idle" for n in self.nodes})

    def stop(self) -> None:
        subprocess.run(["scancel", "--user=root"], env=self.env, check=False, timeout=30)
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
