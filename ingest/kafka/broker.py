"""A real, local, single-node Apache Kafka broker (KRaft), run without Docker.

The official jars come from Maven Central through ``mvn`` (kafka_2.13 and kafka-tools, plus log4j2
because Kafka 4 ships no logging backend) and are cached, so a second start needs no network.
``up`` writes a KRaft configuration with broker and controller on 127.0.0.1, formats the storage
once (``--standalone``), starts ``kafka.Kafka`` in the background and waits until it answers a
metadata request; ``down`` stops it by its pid. State lives in ``<data_dir>/broker.json``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from fleetlog.ingest.contract.errors import FleetlogError

KAFKA_VERSION: Final = "4.3.1"  # newest release whose kafka-tools jar Maven Central serves here
LOG4J_VERSION: Final = "2.26.1"
SLF4J_VERSION: Final = "2.0.17"
MAIN_CLASS: Final = "kafka.Kafka"
STORAGE_TOOL: Final = "kafka.tools.StorageTool"
DEFAULT_PORT: Final = 9092
DEFAULT_DATA_DIR: Final = Path(".fleetlog/kafka")


class BrokerError(FleetlogError):
    """A broker operation failed; the message names the cause and what to do."""


@dataclass(frozen=True)
class BrokerState:
    bootstrap: str
    pid: int
    log_file: str
    data_dir: str
    kafka_version: str
    started_at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cache_dir() -> Path:
    root = os.environ.get("FLEETLOG_CACHE") or os.environ.get("XDG_CACHE_HOME")
    base = Path(root) if root else Path.home() / ".cache"
    if not os.environ.get("FLEETLOG_CACHE"):
        base = base / "fleetlog"
    return base / f"kafka-{KAFKA_VERSION}"


def data_dir_default() -> Path:
    return Path(os.environ.get("FLEETLOG_KAFKA_DIR", str(DEFAULT_DATA_DIR)))


_POM: Final = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.fleetlog</groupId>
  <artifactId>fleetlog-kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>
      <version>{kafka}</version></dependency>
    <!-- Pinned: a transitive dependency drags in slf4j-api 1.7, which ignores log4j2. -->
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2: Final = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.org.name = org.apache.kafka
logger.org.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def fetch_jars(*, quiet: bool = True) -> Path:
    """Download the broker's jars once; later calls return the cached folder at once."""
    libs = cache_dir() / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is not on PATH: install Maven to fetch the Kafka jars")
    work = cache_dir()
    work.mkdir(parents=True, exist_ok=True)
    pom = _POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION, slf4j=SLF4J_VERSION)
    (work / "pom.xml").write_text(pom, "utf-8")
    staging = work / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        mvn, "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}", "-DincludeScope=runtime",
    ]
    if quiet:
        command.insert(1, "-q")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        (work / "mvn.log").write_text(result.stdout + result.stderr, "utf-8")
        last = _last_error_line(result.stdout + result.stderr)
        raise BrokerError(
            f"fetching Kafka {KAFKA_VERSION} from Maven Central failed ({last}); "
            f"see {work / 'mvn.log'}"
        )
    if not any(staging.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise BrokerError(
            f"Maven finished but kafka_2.13-{KAFKA_VERSION}.jar is missing in {staging}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    marker.write_text(KAFKA_VERSION, "utf-8")
    return libs


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if "ERROR" in line or "Exception" in line]
    return (lines[0] if lines else (text.strip().splitlines() or ["no output"])[-1])[:300]


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    if candidate and candidate.exists():
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise BrokerError("Java 17+ is not on PATH (nor JAVA_HOME): install a JDK 17 or newer")
    return found


def java_major(java: str) -> int:
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    for token in (result.stderr + result.stdout).replace('"', " ").split():
        head = token.split(".")[0]
        if head.isdigit() and "." in token:
            return 8 if head == "1" else int(head)
    return 0


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(data_dir: Path, port: int, controller_port: int) -> Path:
    config_dir = data_dir / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    logs = (data_dir / "logs").resolve()
    properties = f"""# Written by `fleetlog kafka up`: single-node KRaft, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={logs}
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=268435456
message.max.bytes=16777216
"""
    path = config_dir / "server.properties"
    path.write_text(properties, "utf-8")
    (config_dir / "log4j2.properties").write_text(_LOG4J2, "utf-8")
    return path


def _classpath(libs: Path) -> str:
    return str(libs / "*")


def _java_command(libs: Path, config_dir: Path, main: str, *args: str, heap: str) -> list[str]:
    return [
        java_binary(), f"-Xmx{heap}", "-Xms128m", "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={config_dir / 'log4j2.properties'}",
        "-cp", _classpath(libs), main, *args,
    ]


def cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64, as Kafka's own ``Uuid`` prints it.
    Like Kafka's ``Uuid.randomUuid`` it never starts with '-' (1 in 64 would): the storage
    tool's argument parser would take such an id for an option and refuse to format."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def format_storage(libs: Path, data_dir: Path, config: Path) -> None:
    if (data_dir / "logs" / "meta.properties").exists():
        return
    command = _java_command(
        libs, config.parent, STORAGE_TOOL, "format", "-t", cluster_id(), "-c", str(config),
        "--standalone", heap="256m",
    )
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        log = data_dir / "format.log"
        log.write_text(result.stdout + result.stderr, "utf-8")
        raise BrokerError(
            f"formatting Kafka storage failed ({_last_error_line(result.stdout + result.stderr)});"
            f" see {log}"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as dead.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return True
    return status != "Z"


def read_state(data_dir: Path) -> BrokerState | None:
    try:
        raw = json.loads((data_dir / "broker.json").read_text("utf-8"))
        return BrokerState(**raw)
    except (OSError, ValueError, TypeError):
        return None


def answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """Does a broker at ``bootstrap`` answer a metadata request?"""
    from kafka import KafkaConsumer  # imported late: the CLI's --help must stay fast
    from kafka.errors import KafkaError

    for name in ("kafka", "kafka.conn", "kafka.client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap.split(","),
            request_timeout_ms=int(timeout_s * 1000) + 1000,
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        consumer.topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        consumer.close()


def _tail(path: Path, lines: int = 200) -> list[str]:
    try:
        return path.read_text("utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _cause_from_log(log: Path) -> str:
    lines = _tail(log)
    for line in reversed(lines):
        if any(marker in line for marker in ("ERROR", "FATAL", "Exception", "Error:")):
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else "no output"


def up(
    data_dir: Path | None = None,
    *,
    port: int = DEFAULT_PORT,
    controller_port: int | None = None,
    timeout_s: float = 90.0,
    heap: str = "1g",
) -> BrokerState:
    """Start the broker (fetching and formatting on first use); returns once it answers."""
    data_dir = (data_dir or data_dir_default()).resolve()
    existing = read_state(data_dir)
    if existing and _pid_alive(existing.pid):
        if answers(existing.bootstrap):
            return existing
        raise BrokerError(
            f"a broker (pid {existing.pid}) is running from {data_dir} but does not answer; "
            f"see {existing.log_file}, or run `fleetlog kafka down` first"
        )
    controller_port = controller_port or port + 1
    for p in (port, controller_port):
        if not port_free(p):
            raise BrokerError(
                f"port {p} on 127.0.0.1 is in use (another broker?): pass --port, or use that "
                "broker with FLEETLOG_KAFKA_BOOTSTRAP"
            )
    java = java_binary()
    if java_major(java) < 17:
        raise BrokerError(f"Kafka {KAFKA_VERSION} needs Java 17+, but {java} is older")
    libs = fetch_jars()
    config = write_config(data_dir, port, controller_port)
    format_storage(libs, data_dir, config)
    log = data_dir / "broker.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            _java_command(libs, config.parent, MAIN_CLASS, str(config), heap=heap),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI; stopped by pid with `down`
        )
    state = BrokerState(
        bootstrap=f"127.0.0.1:{port}", pid=process.pid, log_file=str(log),
        data_dir=str(data_dir), kafka_version=KAFKA_VERSION, started_at=time.time(),
    )
    (data_dir / "broker.json").write_text(json.dumps(state.to_json(), indent=2), "utf-8")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerError(
                f"the Kafka broker exited with code {process.returncode}: "
                f"{_cause_from_log(log)} (log: {log})"
            )
        if answers(state.bootstrap, timeout_s=2.0):
            return state
        time.sleep(0.5)
    process.kill()
    raise BrokerError(
        f"the Kafka broker did not answer within {timeout_s:.0f}s: {_cause_from_log(log)} "
        f"(log: {log})"
    )


def down(data_dir: Path | None = None, *, timeout_s: float = 30.0) -> BrokerState | None:
    """Stop the broker started from ``data_dir``; returns its state, or None if none ran."""
    data_dir = (data_dir or data_dir_default()).resolve()
    state = read_state(data_dir)
    if state is None:
        return None
    if _pid_alive(state.pid):
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _pid_alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _pid_alive(state.pid):
            os.kill(state.pid, signal.SIGKILL)
    (data_dir / "broker.json").unlink(missing_ok=True)
    return state


def status(data_dir: Path | None = None) -> dict[str, Any]:
    data_dir = (data_dir or data_dir_default()).resolve()
    state = read_state(data_dir)
    if state is None:
        return {"running": False, "answering": False, "data_dir": str(data_dir),
                "bootstrap": None, "pid": None, "log_file": None}
    running = _pid_alive(state.pid)
    return {
        **state.to_json(),
        "running": running,
        "answering": running and answers(state.bootstrap, timeout_s=3.0),
    }


def run_tool(main_class: str, *args: str, timeout_s: float = 600.0) -> str:
    """Run a Java tool from the Kafka jars (e.g. ``org.apache.kafka.tools.ProducerPerformance``)
    and return what it printed; used by the benchmarks for the broker's own ceilings."""
    libs = fetch_jars()
    config_dir = cache_dir() / "tool-config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "log4j2.properties").write_text(_LOG4J2.replace("INFO", "WARN"), "utf-8")
    result = subprocess.run(
        _java_command(libs, config_dir, main_class, *args, heap="1g"),
        capture_output=True, text=True, check=False, timeout=timeout_s,
    )
    if result.returncode != 0:
        raise BrokerError(
            f"{main_class} failed: {_last_error_line(result.stdout + result.stderr)}"
        )
    return result.stdout
