"""Living in a Python process: Ctrl-C, fork, logging, many clusters at once."""

import logging
import os
import sys
import threading
import time
import _thread

import pytest

import scalestore


def _press_ctrl_c_after(seconds, before=None):
    """Simulates Ctrl-C from a timer thread (after ``before()``, if given); cancel and join it."""

    def press():
        if before is not None:
            before()
        _thread.interrupt_main()

    timer = threading.Timer(seconds, press)
    timer.start()
    return timer


def test_ctrl_c_interrupts_a_blocking_call_promptly():
    with scalestore.Cluster(nodes=3, shards=1) as c:
        kv = c.client()
        kv.put("k", "v")
        c.set_network(drop_rate=1.0)  # nothing answers: a call would wait out its timeout
        started = time.monotonic()
        timer = _press_ctrl_c_after(0.5)
        try:
            with pytest.raises(KeyboardInterrupt):
                kv.get("k", timeout=30)
        finally:
            timer.cancel()  # a call that failed early must not leave a Ctrl-C for later code
            timer.join()
        assert time.monotonic() - started < 3
        c.set_network()
        assert kv.get("k", timeout=30) == b"v"


def test_ctrl_c_is_not_swallowed_by_a_callback_released_while_a_call_waits():
    # A client dropped with an awaitable call in flight leaves that call's callback behind. It
    # must be released right there, with the GIL: left to a runtime thread, pyo3 releases it on
    # whichever thread next takes the GIL, which can be the main thread waiting in a blocking
    # call, and a finalizer running Python there eats a pending Ctrl-C ("Exception ignored").
    main = threading.main_thread()
    released_on = []
    answered = []

    class Callback:
        def __call__(self, ok, value):
            answered.append(ok)

        def __del__(self):
            released_on.append(threading.current_thread())
            if threading.current_thread() is main:
                time.sleep(0.5)  # the Ctrl-C arrives while this finalizer runs

    with scalestore.Cluster(nodes=3, shards=1) as c:
        kv = c.client()
        kv.put("k", "v")
        address = c.serve()
        # Whether a runtime thread or the dropping one lets go last is a race in the old code:
        # several clients make "always the dropping one" the only way to pass.
        remotes = [scalestore.connect(address, timeout=30) for _ in range(8)]
        c.set_network(drop_rate=1.0)  # nothing answers: every call stays in flight
        for remote in remotes:
            remote._inner._native.get("k", "linearizable", 30.0, Callback())
        del remote
        started = time.monotonic()
        timer = _press_ctrl_c_after(0.3, before=remotes.clear)  # drop the clients, then Ctrl-C
        try:
            with pytest.raises(KeyboardInterrupt):
                kv.get("k", timeout=10)
        finally:
            timer.cancel()
            timer.join()
        assert time.monotonic() - started < 3
        assert answered == []
        assert released_on == [timer] * 8, "a callback was not released where its client was dropped"
        c.set_network()
        assert kv.get("k", timeout=30) == b"v"


def test_ctrl_c_while_an_error_is_built_stays_a_keyboard_interrupt(monkeypatch):
    # Building a ScaleStore exception runs Python (its __init__) on the calling thread: a Ctrl-C
    # that lands there must come out as KeyboardInterrupt, not folded into some other error.
    class Interrupted(scalestore.errors.InvalidArgument):
        def __init__(self, *args, **kwargs):
            _thread.interrupt_main()  # pressed now: the handler raises in the Python below
            super().__init__(*args, **kwargs)

    with scalestore.Cluster(nodes=1, shards=1) as c:
        kv = c.client()
        monkeypatch.setattr(scalestore.errors, "InvalidArgument", Interrupted)
        with pytest.raises(KeyboardInterrupt):
            kv.get("k", consistency="bogus")
        monkeypatch.undo()
        with pytest.raises(scalestore.InvalidArgument):
            kv.get("k", consistency="bogus")


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
