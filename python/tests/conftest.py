import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

import scalestore


@pytest.fixture(scope="module")
def cluster():
    with scalestore.Cluster(nodes=3, shards=4) as c:
        c.wait_for_leaders(30)
        yield c


@pytest.fixture
def kv(cluster):
    with cluster.client() as client:
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_binary() -> str:
    """The scalestore-server built by the workspace (cargo test builds it)."""
    explicit = os.environ.get("SCALESTORE_SERVER_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", str(Path(__file__).resolve().parents[2] / "target"))
    for candidate in (Path(target) / "debug" / "scalestore-server", Path.home() / ".cargo/bin/scalestore-server"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("scalestore-server")
    if found:
        return found
    pytest.fail("scalestore-server not found: build it (cargo build -p scalestore-server) or set SCALESTORE_SERVER_BIN")


@pytest.fixture
def server_cluster(tmp_path):
    """Three scalestore-server processes on loopback; yields their endpoints."""
    binary = server_binary()
    ports = [free_port() for _ in range(3)]
    initial = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports))
    procs = []
    for i, port in enumerate(ports):
        log = open(tmp_path / f"node-{i + 1}.log", "w")
        procs.append(
            subprocess.Popen(
                [binary, "--id", str(i + 1), "--listen", f"127.0.0.1:{port}",
                 "--data-dir", str(tmp_path / f"node-{i + 1}"), "--initial-cluster", initial, "--shards", "4"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        )
    endpoints = [f"127.0.0.1:{p}" for p in ports]
    try:
        yield endpoints
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def nat_server(tmp_path):
    """One scalestore-server that listens at one port and advertises another nobody listens on,
    as a node behind NAT or Docker's port mapping; yields (reachable, advertised)."""
    binary = server_binary()
    reachable, advertised = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    log = open(tmp_path / "node-1.log", "w")
    proc = subprocess.Popen(
        [binary, "--id", "1", "--listen", reachable, "--advertise", advertised,
         "--data-dir", str(tmp_path / "node-1"), "--initial-cluster", f"1={advertised}", "--shards", "2"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield reachable, advertised
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def eventually(check, timeout=20.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except scalestore.Error:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
