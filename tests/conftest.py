import os
import signal

import pytest
import torch

# one thread per pytest-xdist worker (the README's command runs two on two cores), else up to two
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))

NO_CUDA = "needs a CUDA GPU (torch.cuda.is_available() is False here)"


def pytest_configure(config):
    # one cache for the whole session and its subprocesses (the digits proxy classifier is trained once), never the
    # user's ~/.cache
    if not os.environ.get("SCOREKIT_CACHE"):
        import tempfile

        os.environ["SCOREKIT_CACHE"] = tempfile.mkdtemp(prefix="scorekit-test-cache-")
    config.addinivalue_line("markers", "cuda: checks what only a CUDA GPU can (skipped without one; "
                                       "`pytest -m cuda` runs these alone)")
    if os.environ.get("SCOREKIT_TEST_STALL"):
        _stall(os.environ["SCOREKIT_TEST_STALL"])


def _stall(pid_file: str) -> None:
    """SCOREKIT_TEST_STALL=FILE: hang like a wedged CUDA call (the GPU proof's test of its time box): start a child
    that sleeps, write both pids to FILE, and sleep deaf to the per-test alarm."""
    import subprocess
    import sys
    import time

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    with open(pid_file, "w") as f:
        f.write(f"{os.getpid()} {child.pid}\n")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM, signal.SIGINT})
    time.sleep(3600)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=NO_CUDA)
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """SCOREKIT_TEST_TIMEOUT=S fails a test that runs longer than S seconds (the GPU proof sets it, so that one
    hanging test cannot eat a short device session); off by default."""
    limit = int(os.environ.get("SCOREKIT_TEST_TIMEOUT", "0") or 0)
    if limit <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"{item.nodeid}: over SCOREKIT_TEST_TIMEOUT={limit} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
