"""pytest fixtures for the sample-vmcore lab (vmcores-sample/lab.py).

    sample           -- a lab.Sample per suite (bullseye, bookworm, trixie, forky);
                        built on first use and cached; a failed build is an ERROR.
    sample_bookworm  -- just bookworm's.
    live_guest       -- factory: live_guest("bookworm") boots a guest stopped at
                        READY with a gdbstub on 127.0.0.1 (usable as a context
                        manager too); every guest is killed at teardown.
"""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "vmcores-sample"))
import lab  # noqa: E402


@pytest.fixture(scope="session", params=lab.SUITES, ids=lab.SUITES)
def sample(request):
    # No try/except: a sample that cannot be built must fail the run, not skip.
    return lab.sample(request.param)


@pytest.fixture(scope="session")
def sample_bookworm():
    return lab.sample("bookworm")


@pytest.fixture
def live_guest():
    started = []

    def start(suite: str = "bookworm", mem=None):
        cm = lab.live_guest(suite, mem=mem)
        guest = cm.__enter__()
        started.append(cm)
        return guest

    yield start
    for cm in reversed(started):
        cm.__exit__(None, None, None)
