"""An S3-compatible server for the tests: moto's ``moto_server`` (package ``moto[server]``) as a
process on 127.0.0.1. It speaks the S3 HTTP API that boto3 talks to MinIO and AWS, installs from
PyPI with the test extra, and needs no binary download (MinIO's server is on neither PyPI nor
Debian). It keeps objects in memory: every test makes its own bucket.

    with S3Server() as server:
        store_settings = server.bucket("images")   # Config fields for an S3 store
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

MOTO_SERVER = str(Path(sys.executable).with_name("moto_server"))
ACCESS_KEY, SECRET_KEY, REGION = "test-access-key", "test-secret-key", "us-east-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class S3Server:
    """``moto_server`` on a free port of 127.0.0.1, stopped on exit."""

    def __init__(self, start_timeout: float = 30.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "S3Server":
        self.process = subprocess.Popen([MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"moto_server did not listen on {self.url} in {self.start_timeout}s")

    def __exit__(self, *_) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def bucket(self, prefix: str = "dermscreen") -> dict[str, str]:
        """Create a fresh bucket; the Config fields that point a store at it (under ``prefix``)."""
        name = f"test-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name)
        return {"store_url": f"s3://{name}/{prefix}", "s3_endpoint_url": self.url,
                "s3_region": REGION, "s3_access_key_id": ACCESS_KEY,
                "s3_secret_access_key": SECRET_KEY}
