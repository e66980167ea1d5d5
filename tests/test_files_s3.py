"""Files in an S3-compatible object store (``files.backend: s3``), against a real SeaweedFS on loopback.

Two gateways on one database and one bucket: what one re-hosts or caches, the other
serves at the same URL. Then presigned redirects, a store that goes down (a clear 503,
never a 500, and provider URLs kept), a start refused for a missing bucket or missing
credentials, and no store secret in any log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import obstore
import openai
import pytest

from polyrelay.store.files import FileSettings
from polyrelay.store.s3blobs import S3ConfigError, credentials
from tests.conftest import Gateway, start_gateway, wait_until
from tests.fakes import bfl_upstream, midjourney_proxy
from tests.fakes.server import FakeServer
from tests.s3server import S3Server, start_seaweedfs

ALICE = "sk-files-s3-alice-0123456789"
BFL_KEY = "bfl-up-key"
PUBLIC = "https://files.relay.example"  # the balancer's address: no node's own
SAMPLE_ID = hashlib.sha256(bfl_upstream.SAMPLE_PNG).hexdigest() + ".png"
SAMPLE_KEY = f"files/{SAMPLE_ID[:2]}/{SAMPLE_ID}"


@pytest.fixture(scope="module")
def s3(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One store per database backend: the last test stops it."""
    server = start_seaweedfs(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeServer, FakeServer]]:
    bfl = FakeServer(bfl_upstream.create_app({BFL_KEY})).start()
    mj = FakeServer(midjourney_proxy.create_app()).start()
    yield bfl, mj
    bfl.stop()
    mj.stop()


def _config(fakes: tuple[FakeServer, FakeServer], files: dict[str, Any]) -> dict[str, Any]:
    bfl, mj = fakes
    return {
        "allow_private_image_hosts": True,  # the fakes are on loopback
        "tasks": {"poll_interval_s": 0.05},
        "channels": [
            {"name": "bfl", "type": "flux", "base_url": bfl.url, "keys": [BFL_KEY], "models": ["flux-*"],
             "options": {"poll_interval_s": 0.01, "poll_timeout_s": 10}},
            {"name": "mj", "type": "midjourney", "base_url": mj.url, "keys": [midjourney_proxy.SECRET],
             "models": ["mj_*"]},
        ],
        "tokens": [{"name": "alice", "key": ALICE, "quota_usd": 50}],
        "prices": {"flux-pro-1.1": {"per_image": 0.04}, "mj_*": {"per_request": 0.05}},
        "files": {"rehost": True, "public_base_url": PUBLIC, **files},
    }


@dataclass
class Pair:
    a: Gateway  # files.serve: stream
    b: Gateway  # files.serve: redirect; the same database and bucket


@pytest.fixture(scope="module")
def pair(gateway_factory: Callable[..., Gateway], s3: S3Server, fakes: tuple[FakeServer, FakeServer]) -> Pair:
    a = gateway_factory(_config(fakes, s3.files_config()), extra_env=s3.env)
    # polyrelay's own variable names, and AWS's absent: either set is enough.
    own_names = {"POLYRELAY_S3_ACCESS_KEY_ID": s3.access_key, "POLYRELAY_S3_SECRET_ACCESS_KEY": s3.secret_key}
    b = gateway_factory({**_config(fakes, s3.files_config(serve="redirect")), "database_url": a.database_url},
                        extra_env=own_names)
    return Pair(a, b)


def _mj_image(gateway: Gateway) -> str:
    """The id of a finished imagine task submitted through ``gateway``."""
    submitted = httpx.post(gateway.url + "/mj/submit/imagine", json={"prompt": "a cat"},
                           headers={"Authorization": f"Bearer {ALICE}"}, timeout=10)
    assert submitted.status_code == 200 and submitted.json()["code"] == 1, submitted.text
    task_id = submitted.json()["result"]

    def finished() -> bool:
        task = httpx.get(f"{gateway.url}/mj/task/{task_id}/fetch", headers={"Authorization": f"Bearer {ALICE}"})
        return task.json()["status"] == "SUCCESS"

    wait_until(finished, 20, "the imagine task SUCCESS")
    return task_id


def _image_url(gateway: Gateway) -> str:
    client = openai.OpenAI(api_key=ALICE, base_url=gateway.v1, max_retries=0)
    images = client.images.generate(model="flux-pro-1.1", prompt="a lighthouse")
    assert images.data is not None and images.data[0].url
    return images.data[0].url


def _no_secrets(s3: S3Server, *gateways: Gateway) -> None:
    for gateway in gateways:
        logs = gateway.logs()
        assert s3.secret_key not in logs and s3.access_key not in logs


def test_a_file_rehosted_by_one_node_is_served_by_another_at_the_same_url(pair: Pair, s3: S3Server) -> None:
    url = _image_url(pair.b)
    assert url == f"{PUBLIC}/files/{SAMPLE_ID}"  # the balancer's URL, whichever node re-hosted it
    stored = obstore.get(s3.store(), SAMPLE_KEY)
    assert bytes(stored.bytes()) == bfl_upstream.SAMPLE_PNG and stored.attributes["Content-Type"] == "image/png"

    served = httpx.get(pair.a.url + f"/files/{SAMPLE_ID}", timeout=10)
    assert served.status_code == 200 and served.content == bfl_upstream.SAMPLE_PNG
    assert served.headers["content-type"] == "image/png"
    assert served.headers["x-content-type-options"] == "nosniff" and "immutable" in served.headers["cache-control"]
    assert "sandbox" in served.headers["content-security-policy"]
    size = len(bfl_upstream.SAMPLE_PNG)
    for wanted, status, body in [("bytes=0-7", 206, bfl_upstream.SAMPLE_PNG[:8]),
                                 ("bytes=-5", 206, bfl_upstream.SAMPLE_PNG[-5:]),
                                 ("bytes=100-999999", 206, bfl_upstream.SAMPLE_PNG[100:]),
                                 ("bytes=500-", 416, b"")]:
        ranged = httpx.get(pair.a.url + f"/files/{SAMPLE_ID}", headers={"Range": wanted}, timeout=10)
        assert (ranged.status_code, ranged.content) == (status, body), wanted
    assert ranged.headers["content-range"] == f"bytes */{size}"
    head = httpx.head(pair.a.url + f"/files/{SAMPLE_ID}", timeout=10)
    assert head.status_code == 200 and int(head.headers["content-length"]) == size

    assert _image_url(pair.a) == url  # the other node builds the very same URL for the same file
    _no_secrets(s3, pair.a, pair.b)


def test_redirect_mode_sends_callers_to_a_presigned_url(pair: Pair, s3: S3Server) -> None:
    assert _image_url(pair.b) == f"{PUBLIC}/files/{SAMPLE_ID}"
    response = httpx.get(pair.b.url + f"/files/{SAMPLE_ID}", timeout=10)
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(f"{s3.endpoint_url}/{s3.bucket}/{SAMPLE_KEY}?") and "X-Amz-Signature=" in location
    assert "X-Amz-Expires=300" in location  # short-lived (files.s3.presign_expires_s)
    assert s3.secret_key not in location
    followed = httpx.get(location, timeout=10)
    assert followed.status_code == 200 and followed.content == bfl_upstream.SAMPLE_PNG
    assert followed.headers["content-type"] == "image/png"
    tampered = httpx.get(location.replace(SAMPLE_ID, SAMPLE_ID.replace(".png", ".jpg")), timeout=10)
    assert tampered.status_code == 403  # the signature covers the key: a presigned URL opens one file only
    _no_secrets(s3, pair.b)


def test_missing_and_malformed_files_are_404_in_openai_format(pair: Pair) -> None:
    absent = hashlib.sha256(b"never stored").hexdigest() + ".png"
    for gateway in (pair.a, pair.b):
        for file_id in (absent, "nothing", absent.replace(".png", ".exe")):
            response = httpx.get(f"{gateway.url}/files/{file_id}", timeout=10)
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "file_not_found"


def test_a_midjourney_image_cached_by_one_node_is_served_by_another(pair: Pair, fakes: tuple[FakeServer, FakeServer],
                                                                    s3: S3Server) -> None:
    mj = fakes[1]
    task_id = _mj_image(pair.a)
    gets_before = len(mj.knobs.get("image_gets", []))
    first = httpx.get(f"{pair.a.url}/mj/image/{task_id}", timeout=10)
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.content.startswith(midjourney_proxy.PNG)
    assert len(mj.knobs["image_gets"]) == gets_before + 1
    digest = hashlib.sha256(first.content).hexdigest()
    assert bytes(obstore.get(s3.store(), f"mj-images/blobs/{digest[:2]}/{digest}").bytes()) == first.content
    again = httpx.get(f"{pair.a.url}/mj/image/{task_id}", timeout=10)
    assert again.status_code == 200 and again.content == first.content

    redirected = httpx.get(f"{pair.b.url}/mj/image/{task_id}", timeout=10)  # the other node: from the bucket
    assert redirected.status_code == 302
    followed = httpx.get(redirected.headers["location"], timeout=10)
    assert followed.content == first.content and followed.headers["content-type"] == "image/png"
    assert len(mj.knobs["image_gets"]) == gets_before + 1  # downloaded once for the whole cluster


def test_start_is_refused_for_a_missing_bucket(
    s3: S3Server, fakes: tuple[FakeServer, FakeServer], pair: Pair, tmp_path: Path
) -> None:
    base = {**_config(fakes, s3.files_config()), "database_url": pair.a.database_url}
    absent = {**base, "files": {**base["files"], "s3": {**base["files"]["s3"], "bucket": "no-such-bucket"}}}
    with pytest.raises(AssertionError, match="polyrelay exited") as refused:
        start_gateway(absent, tmp_path, s3.env)
    assert "bucket 'no-such-bucket' at " + s3.endpoint_url + " does not exist" in str(refused.value)
    assert s3.secret_key not in str(refused.value)


def test_credentials_come_from_the_environment_only() -> None:
    with pytest.raises(S3ConfigError, match="no credentials are set"):
        credentials({"AWS_ACCESS_KEY_ID": "only-the-id"})
    aws = {"AWS_ACCESS_KEY_ID": "aws-id", "AWS_SECRET_ACCESS_KEY": "aws-secret"}
    assert credentials(aws) == {"access_key_id": "aws-id", "secret_access_key": "aws-secret"}
    own = {**aws, "POLYRELAY_S3_ACCESS_KEY_ID": "own-id", "POLYRELAY_S3_SECRET_ACCESS_KEY": "own-secret",
           "AWS_SESSION_TOKEN": "token"}
    assert credentials(own) == {"access_key_id": "own-id", "secret_access_key": "own-secret",
                                "session_token": "token"}


def test_settings_rules() -> None:
    s3 = {"endpoint_url": "http://127.0.0.1:1", "bucket": "b"}
    assert FileSettings().backend == "local"
    with pytest.raises(ValueError, match="public_base_url"):
        FileSettings(rehost=True, backend="s3", s3=s3)
    with pytest.raises(ValueError, match="needs files.s3"):
        FileSettings(backend="s3")
    with pytest.raises(ValueError, match="Extra inputs"):  # keys never go in the config file
        FileSettings(backend="s3", s3={**s3, "secret_access_key": "x"})
    assert FileSettings(backend="s3", s3=s3).s3.addressing_style == "path"  # type: ignore[union-attr]


# Last: it stops this backend's store.
def test_a_store_that_goes_down_gives_clear_errors_not_500(pair: Pair, fakes: tuple[FakeServer, FakeServer],
                                                           s3: S3Server) -> None:
    task_id = _mj_image(pair.a)  # finished while the store was up, its image never fetched
    s3.stop()

    for gateway in (pair.a, pair.b):
        response = httpx.get(gateway.url + f"/files/{SAMPLE_ID}", timeout=30)
        assert response.status_code == 503 and response.headers["retry-after"]
        error = response.json()["error"]
        assert (error["code"], error["type"]) == ("file_store_unavailable", "server_error")
        assert "unavailable" in error["message"] and s3.endpoint_url not in error["message"]
        assert httpx.head(gateway.url + f"/files/{SAMPLE_ID}", timeout=30).status_code == 503

    # A call the provider already served still succeeds: its own (expiring) URL is kept, and logged.
    assert _image_url(pair.a).startswith(fakes[0].url + "/samples/")
    assert "not re-hosted" in pair.a.logs()
    # A Midjourney image is downloaded and served uncached.
    image = httpx.get(f"{pair.b.url}/mj/image/{task_id}", timeout=30)
    assert image.status_code == 200 and image.content.startswith(midjourney_proxy.PNG)
    assert "not cached" in pair.b.logs()
    _no_secrets(s3, pair.a, pair.b)
