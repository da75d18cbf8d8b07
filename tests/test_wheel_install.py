"""The wheel installs one import package, ``eventfleet``, and an application whose own folder
holds ``worker.py``, ``store/`` and ``ledger.py`` (common names) runs next to it: the
application imports its modules, eventfleet its own, in the same interpreter, with the
application's folder first on ``sys.path``.

The wheel is built from this checkout (``pip wheel --no-deps``) and installed into a fresh venv
(``--no-deps --no-index``: nothing is fetched); the dependencies come from the test's own
environment through a path file, so the venv holds eventfleet from the wheel and nothing else of
ours. A worker of that venv runs in the application's folder against a real Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from eventfleet.local.redisserver import LocalRedis
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]

APP = {
    "worker.py": 'WHO = "the application\'s worker"\n',
    "ledger.py": 'WHO = "the application\'s ledger"\n',
    "store/__init__.py": 'WHO = "the application\'s store"\n',
    "producer/__init__.py": 'WHO = "the application\'s producer"\n',
    "main.py": """\
import json
import sys

import ledger
import producer
import store
import worker

import eventfleet
from eventfleet.store.keys import Keys
from eventfleet.worker.loop import Worker

mine = [m.WHO for m in (worker, store, ledger, producer)]
client = eventfleet.Client.from_url()
receipt = client.topup(user=int(sys.argv[1]), amount=250, key="wheel-test")
balance = client.balance(int(sys.argv[1]), after=receipt, timeout=60)
print(json.dumps({
    "mine": mine,
    "eventfleet": eventfleet.__file__,
    "worker_loop": sys.modules[Worker.__module__].__file__,
    "keys": sys.modules[Keys.__module__].__file__,
    "balance": balance,
}))
""",
}


def _build_wheel(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = out.glob("eventfleet-*.whl")
    return wheel


def _fresh_venv(where: Path, wheel: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(where)
    py = where / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # The dependencies (redis, pydantic, ...) from this environment: a plain path line, so the
    # directory's own path files (this checkout's editable install among them) are not run.
    (Path(site) / "eventfleet-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py


@pytest.mark.timeout(300)
def test_the_wheel_installs_eventfleet_alone_next_to_an_application(
    redis_server: LocalRedis, namespace: str, tmp_path: Path
) -> None:
    wheel = _build_wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"eventfleet"}, top
    assert "eventfleet/worker/loop.py" in names and "eventfleet/producer/client.py" in names
    assert any(n.startswith("eventfleet/store/lua/") and n.endswith(".lua") for n in names)
    assert "eventfleet/py.typed" in names

    py = _fresh_venv(tmp_path / "venv", wheel)
    app = tmp_path / "app"
    for name, text in APP.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTFLEET_", "REDIS_"))}
    env.pop("PYTHONPATH", None)
    env.update(
        REDIS_URL=redis_server.url, EVENTFLEET_NAMESPACE=namespace, EVENTFLEET_LEASE_TTL_MS="1500"
    )

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(py), *args], cwd=app, env=env, capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip

    init = run("-m", "eventfleet", "init", "--user-shards", "2", "--item-shards", "2")
    assert init.returncode == 0, init.stdout + init.stderr
    # `python -m` puts the application's folder first on sys.path, where its worker.py sits.
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen(
            [str(py), "-m", "eventfleet.worker"], cwd=app, env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            done = run("main.py", "7")
            assert done.returncode == 0, done.stdout + done.stderr
        finally:
            worker.terminate()
            worker.wait(30)
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["mine"] == [
        "the application's worker",
        "the application's store",
        "the application's ledger",
        "the application's producer",
    ]
    assert seen["balance"] == 250
    venv_site = str(tmp_path / "venv")
    for key in ("eventfleet", "worker_loop", "keys"):
        assert seen[key].startswith(venv_site), (key, seen[key])  # the wheel's, not this checkout
    wait_for(lambda: worker.poll() is not None, 30, "the worker to stop")
    text = (tmp_path / "worker.log").read_text()
    assert worker.returncode == 0, text
    assert "Traceback" not in text, text
