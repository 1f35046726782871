"""`semhash serve` in a subprocess, for the benchmarks that measure the real app over HTTP.

    with serving_bundles({"text": text_dir, "digits": digits_dir}) as server:
        conn = server.connection()
        times = wall_times(lambda i: post(conn, "/v1/digits/recognize", body), n=500, warmup=50)

`server()` starts one server on a models folder and a migrated database and yields once `/readyz` answers
200 (models loaded, database at the migration head); it stops the server on the way out.
`serving_bundles()` adds the scratch around it: a models folder of links to the given bundles and a fresh
SQLite database, with one BLAS thread (what the latency numbers are measured with).
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SEMHASH = str(Path(sys.executable).with_name("semhash"))
# One BLAS thread per server process: threaded BLAS on a one-image product only adds hand-offs, and on a
# loaded machine its spinning threads cost milliseconds (2-3 vs 6-16 ms median for a digit).
ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
Output = int | IO[str] | None  # what subprocess.Popen takes for stdout and stderr


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def link_models(folder: Path, bundles: Mapping[str, Path]) -> Path:
    """`folder` made a models folder: one link per kind to its bundle directory."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, source in bundles.items():
        (folder / kind).symlink_to(source.resolve())
    return folder


def migrate(database_url: str, quiet: bool = True) -> None:
    """`semhash migrate` of `database_url` to the head revision."""
    subprocess.run([SEMHASH, "migrate", "--database-url", database_url], check=True, capture_output=quiet)


@dataclass(frozen=True)
class Server:
    """A running `semhash serve`."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        """A new keep-alive connection to the server."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)


def wait_ready(base: str, process: subprocess.Popen[bytes], seconds: float) -> None:
    """Return once `base`/readyz answers 200; raise if `process` exits or `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"semhash serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:  # not listening yet, or 503 (HTTPError) while models load
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"semhash serve did not get ready in {seconds:.0f} s")
        time.sleep(0.2)


@contextmanager
def server(
    *,
    models: Path | None = None,
    database_url: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] = (SEMHASH,),
    stdout: Output = subprocess.DEVNULL,
    stderr: Output = subprocess.DEVNULL,
    cwd: Path | None = None,
    ready_seconds: float = 600,
) -> Iterator[Server]:
    """`semhash serve` (without its access log) on `port` (a free one by default), ready.

    `models` and `database_url` default to the server's settings (the environment: `env` is added to
    this process's); `command` is what runs `semhash`. Terminated on exit (killed after 30 s).
    """
    port = free_port() if port is None else port
    argv = [*command, "serve", "--port", str(port), "--no-access-log"]
    if models is not None:
        argv += ["--models", str(models)]
    if database_url is not None:
        argv += ["--database-url", database_url]
    if workers is not None:
        argv += ["--workers", str(workers)]
    process = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=stdout, stderr=stderr, cwd=cwd)
    try:
        running = Server(port, process)
        wait_ready(running.base, process, ready_seconds)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def serving_bundles(bundles: Mapping[str, Path]) -> Iterator[Server]:
    """`server()` over a models folder holding only `bundles` (kind -> directory) and a fresh, migrated
    SQLite database, in a scratch directory removed afterwards; one BLAS thread."""
    with tempfile.TemporaryDirectory() as tmp:
        models = link_models(Path(tmp) / "models", bundles)
        database = f"sqlite:///{tmp}/semhash.db"
        migrate(database)
        with server(models=models, database_url=database, env=ONE_BLAS_THREAD) as running:
            yield running


def post(conn: http.client.HTTPConnection, path: str, body: str) -> None:
    """POST the JSON `body` to `path`; raise unless the answer is 200."""
    conn.request("POST", path, body, {"content-type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path}: status {response.status}: {payload[:300]!r}")


def wall_times(call: Callable[[int], object], n: int, warmup: int) -> list[float]:
    """Wall times (seconds) of call(i) for i in 0..n-1, after `warmup` untimed calls call(0..warmup-1)."""
    for i in range(warmup):
        call(i)
    times = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - started)
    return times
