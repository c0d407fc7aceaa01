"""Living in a Python process: Ctrl-C, fork, logging, many clusters at once."""

import logging
import os
import sys
import threading
import time
import _thread

import pytest

import scalestore


def test_ctrl_c_interrupts_a_blocking_call_promptly():
    with scalestore.Cluster(nodes=3, shards=1) as c:
        kv = c.client()
        kv.put("k", "v")
        c.set_network(drop_rate=1.0)  # nothing answers: a call would wait out its timeout
        timer = threading.Timer(0.5, _thread.interrupt_main)
        timer.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            kv.get("k", timeout=30)
        assert time.monotonic() - started < 3
        c.set_network()
        assert kv.get("k") == b"v"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_does_not_hang_and_can_start_its_own_cluster():
    with scalestore.Cluster(nodes=1, shards=1) as parent:
        kv = parent.client()
        kv.put("parent", "1")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                try:
                    kv.get("parent")
                    code = 2  # must not work: the parent's runtime threads are not here
                except scalestore.ClosedError:
                    with scalestore.Cluster(nodes=1, shards=1) as child:
                        child.client().put("child", "1")
                        code = 0 if child.client().get("child") == b"1" else 3
            finally:
                os.write(w, bytes([code]))
                os._exit(code)
        os.close(w)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, 9)
            pytest.fail("the forked child hung")
        assert os.read(r, 1) == b"\x00"
        assert os.waitstatus_to_exitcode(status) == 0
        assert kv.get("parent") == b"1"


def test_rust_logs_reach_python_logging():
    records = []

    class Catch(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Catch(level=logging.DEBUG)
    logger = logging.getLogger("scalestore")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with scalestore.Cluster(nodes=3, shards=1) as c:
            c.wait_for_leaders(30)
            c.stop_node(c.leader_of(0))
            c.wait_for_leaders(30)
        deadline = time.monotonic() + 5
        while not records and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    assert records, "no log record arrived from Rust"
    assert all(r.name.startswith("scalestore") for r in records)


def test_two_clusters_live_side_by_side_in_one_process():
    with scalestore.Cluster(nodes=1, shards=1) as a, scalestore.Cluster(nodes=1, shards=1) as b:
        a.client().put("k", "a")
        b.client().put("k", "b")
        assert a.client().get("k") == b"a" and b.client().get("k") == b"b"
    assert a.closed and b.closed


def test_clients_of_a_closed_cluster_raise_closed_error():
    c = scalestore.Cluster(nodes=1, shards=1)
    kv = c.client()
    run = c.start_load(writers=2)
    c.close()
    with pytest.raises(scalestore.ClosedError):
        kv.put("k", "v")
    with pytest.raises(scalestore.ClosedError):
        c.client()
    assert kv.closed
    del run


def test_an_open_cluster_is_closed_and_its_temp_dir_removed_at_exit(tmp_path):
    import subprocess

    script = (
        "import scalestore\n"
        "c = scalestore.Cluster(nodes=1, shards=1)\n"
        "c.client().put('k', 'v')\n"
        "print(c.data_dir, flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data_dir = out.stdout.strip()
    assert data_dir and not os.path.exists(data_dir)
