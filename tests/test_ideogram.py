"""The Ideogram family end to end: the reference remix call, every path, limits, errors, billing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from polyrelay.billing.meter import usd_to_micros
from tests.conftest import Gateway, wait_until
from tests.fakes import forms
from tests.image_setup import ALICE, IDEOGRAM_KEY, JPEG, POOR, PRICES, RESTRICTED, WEBP, ImageSetup, png, start

# The reference page's example, URL-encoded text and all.
REFERENCE_IMAGE_REQUEST = (
    '{"image_weight":50,"model":"V_1","magic_prompt_option":"AUTO","style_type":"GENERAL",'
    '"prompt":"A%20serene%20tropical%20beach%20","aspect_ratio":"ASPECT_10_16","seed":12345,'
    '"negative_prompt":"brush%20strokes%2C%20painting"}'
)


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway]) -> Iterator[ImageSetup]:
    yield from start(gateway_factory)


def _remix(setup: ImageSetup, image_request: str = '{"prompt": "a beach", "model": "V_2"}',
           image: bytes = JPEG, **kwargs: object) -> httpx.Response:
    return setup.post("/ideogram/v1/remix", files={"image_file": ("photo.jpg", image, "image/jpeg")},
                      data={"image_request": image_request}, **kwargs)  # type: ignore[arg-type]


def test_reference_remix_call(setup: ImageSetup) -> None:
    response = httpx.post(
        setup.gateway.url + "/ideogram/v1/remix",
        headers={"Authorization": f"Bearer {ALICE}"},
        files={"image_file": ("beach.jpg", JPEG, "image/jpeg")},
        data={"image_request": REFERENCE_IMAGE_REQUEST},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"data", "created"}
    (image,) = answer["data"]
    assert image["seed"] == 12345 and image["resolution"] == "1024x1024" and image["is_image_safe"] is True
    assert image["url"].startswith("https://") and isinstance(image["prompt"], str)

    sent = setup.ideogram.last("/remix")
    assert sent.headers["Api-Key"] == IDEOGRAM_KEY
    assert "Authorization" not in sent.headers  # the caller's key never goes upstream
    form = forms.parse(sent.headers["Content-Type"], sent.body)
    upload = form.get("image_file")
    assert upload is not None and upload.data == JPEG and upload.filename == "beach.jpg"
    assert upload.content_type == "image/jpeg"
    # Everything as sent, except the unambiguously URL-encoded text, which is decoded (docs/providers.md).
    expected = {**json.loads(REFERENCE_IMAGE_REQUEST), "prompt": "A serene tropical beach ",
                "negative_prompt": "brush strokes, painting"}
    assert json.loads(form.text("image_request") or "") == expected

    row = setup.row(response)
    assert (row.family, row.endpoint, row.model, row.channel_name) == ("ideogram", "remix", "ideogram-V_1", "ideogram")
    assert (row.status_code, row.images, row.cost_micros) == (200, 1, usd_to_micros(0.06))


def test_multipart_goes_upstream_byte_for_byte(setup: ImageSetup) -> None:
    # A prompt with spaces is not an encoding artefact: "50%20" stays, and so does every byte.
    image_request = '{"prompt": "a 50%20 sale poster", "num_images": 2}'
    request = httpx.Request("POST", setup.gateway.url + "/ideogram/remix", headers={"Authorization": ALICE},
                            files={"image_file": ("x.webp", WEBP, "image/webp")}, data={"image_request": image_request})
    sent_bytes = request.read()
    with httpx.Client() as client:
        response = client.send(request)
    assert response.status_code == 200, response.text
    assert setup.ideogram.last("/remix").body == sent_bytes
    row = setup.row(response)
    assert (row.model, row.images, row.cost_micros) == ("ideogram-V_2", 2, 2 * usd_to_micros(0.08))


def test_model_mapping_rewrites_only_the_model(setup: ImageSetup) -> None:
    image = JPEG + bytes(9_500_000)  # near the 10 MB limit: the rewrite is spliced around the file, not a copy of it
    response = _remix(setup, '{"prompt": "a beach", "model": "V_1_TURBO", "seed": 3}', image)
    assert response.status_code == 200, response.text
    sent = setup.ideogram.last("/remix")
    form = forms.parse(sent.headers["Content-Type"], sent.body)
    assert json.loads(form.text("image_request") or "") == {"prompt": "a beach", "model": "V_1", "seed": 3}
    assert form.get("image_file").data == image  # type: ignore[union-attr]
    row = setup.row(response)
    assert (row.model, row.upstream_model, row.cost_micros) == ("ideogram-V_1_TURBO", "ideogram-V_1",
                                                                 usd_to_micros(0.02))


def test_caller_key_forms(setup: ImageSetup) -> None:
    for headers in ({"Authorization": ALICE}, {"Api-Key": ALICE}):
        response = setup.post("/ideogram/v1/generate", key=None, headers=headers,
                              json={"image_request": {"prompt": "a fox"}})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("files", "data", "status", "names"),
    [
        ({}, {"image_request": '{"prompt": "x"}'}, 400, "image_file"),
        ({"image_file": ("a.jpg", JPEG, "image/jpeg")}, {}, 400, "image_request"),
        ({"image_file": ("a.jpg", JPEG, "image/jpeg")}, {"image_request": '{"prompt": '}, 400, "image_request"),
        ({"image_file": ("a.png", b"GIF89a not allowed", "image/png")}, {"image_request": '{"prompt": "x"}'}, 400,
         "image_file"),
        ({"image_file": ("a.jpg", JPEG + bytes(10_000_000), "image/jpeg")}, {"image_request": '{"prompt": "x"}'}, 413,
         "image_file"),
        # ideogram-V_2A is served by a channel whose max_upload_bytes is 2048.
        ({"image_file": ("a.jpg", JPEG, "image/jpeg")}, {"image_request": '{"prompt": "x", "model": "V_2A"}'}, 413,
         "image_file"),
    ],
    ids=["missing-image_file", "missing-image_request", "bad-json", "not-an-image", "over-10MB", "channel-limit"],
)
def test_bad_uploads_are_refused_before_the_upstream_and_unbilled(
    setup: ImageSetup, files: dict[str, object], data: dict[str, str], status: int, names: str
) -> None:
    with setup.nothing_relayed_or_billed(lambda: _remix(setup)):
        response = setup.post("/ideogram/v1/remix", files=files or {"other": ("o.txt", b"x", "text/plain")}, data=data)
        assert response.status_code == status
        assert names in response.json()["error"]


def test_generate_bills_each_image_returned(setup: ImageSetup) -> None:
    for path in ("/ideogram/v1/generate", "/ideogram/generate"):
        response = setup.post(path, json={"image_request": {"prompt": "a fox", "num_images": 3, "model": "V_2"}})
        assert response.status_code == 200 and len(response.json()["data"]) == 3
        assert setup.ideogram.last("/generate").headers["Api-Key"] == IDEOGRAM_KEY
        row = setup.row(response)
        assert (row.endpoint, row.images, row.cost_micros) == ("generate", 3, 3 * usd_to_micros(0.08))


def test_upscale_and_describe(setup: ImageSetup) -> None:
    upscale = setup.post("/ideogram/v1/upscale", files={"image_file": ("a.png", png(), "image/png")},
                         data={"image_request": '{"resemblance": 60}'})
    assert upscale.status_code == 200 and len(upscale.json()["data"]) == 1
    row = setup.row(upscale)
    assert (row.model, row.images, row.cost_micros) == ("ideogram-upscale", 1, usd_to_micros(0.06))

    describe = setup.post("/ideogram/describe", files={"image_file": ("a.png", png(), "image/png")})
    assert describe.status_code == 200
    assert describe.json()["descriptions"][0]["text"]
    form = forms.parse(setup.ideogram.last("/describe").headers["Content-Type"], setup.ideogram.last("/describe").body)
    assert form.get("image_file").data == png()  # type: ignore[union-attr]
    row = setup.row(describe)
    assert (row.model, row.images, row.cost_micros) == ("ideogram-describe", 0, usd_to_micros(0.01))


@pytest.mark.parametrize(
    ("endpoint", "files", "data"),
    [
        ("generate", {}, {"prompt": "a red fox", "rendering_speed": "TURBO", "num_images": "2"}),
        ("remix", {"image": JPEG}, {"prompt": "as a watercolour", "image_weight": "40"}),
        ("edit", {"image": JPEG, "mask": png()}, {"prompt": "add a hat"}),
        ("reframe", {"image": JPEG}, {"resolution": "1536x640", "rendering_speed": "QUALITY"}),
        ("replace-background", {"image": JPEG}, {"prompt": "on the moon"}),
    ],
)
def test_v3_endpoints(setup: ImageSetup, endpoint: str, files: dict[str, bytes], data: dict[str, str]) -> None:
    uploads = {name: (f"{name}.bin", content, "application/octet-stream") for name, content in files.items()}
    uploads = uploads or {"style_reference_images": ("ref.webp", WEBP, "image/webp")}
    response = setup.post(f"/ideogram/v1/ideogram-v3/{endpoint}", files=uploads, data=data)
    assert response.status_code == 200, response.text
    sent = setup.ideogram.last(f"/v1/ideogram-v3/{endpoint}")
    assert sent.headers["Api-Key"] == IDEOGRAM_KEY
    form = forms.parse(sent.headers["Content-Type"], sent.body)
    for name, content in files.items():
        assert form.get(name).data == content  # type: ignore[union-attr]
    row = setup.row(response)
    speed = data.get("rendering_speed", "DEFAULT")
    count = int(data.get("num_images", 1))
    price = 0.03 if speed == "TURBO" else 0.06
    assert (row.model, row.images, row.cost_micros) == (f"ideogram-V_3-{speed}", count, count * usd_to_micros(price))


def test_v3_generate_json_and_missing_parts(setup: ImageSetup) -> None:
    response = setup.post("/ideogram/v1/ideogram-v3/generate", json={"prompt": "a fox", "rendering_speed": "TURBO"})
    assert response.status_code == 200, response.text
    with setup.nothing_relayed_or_billed(lambda: _remix(setup)):
        missing_mask = setup.post("/ideogram/v1/ideogram-v3/edit", files={"image": ("a.jpg", JPEG, "image/jpeg")},
                                  data={"prompt": "x"})
        assert missing_mask.status_code == 400 and "mask" in missing_mask.json()["error"]
        bad_speed = setup.post("/ideogram/v1/ideogram-v3/generate", json={"prompt": "x", "rendering_speed": "WARP"})
        assert bad_speed.status_code == 400 and "rendering_speed" in bad_speed.json()["error"]


def test_polyrelay_errors_in_ideogram_shape(setup: ImageSetup) -> None:
    body = {"image_request": {"prompt": "a fox"}}
    bad_key = setup.post("/ideogram/v1/generate", key="sk-nobody", json=body)
    assert bad_key.status_code == 401 and isinstance(bad_key.json()["error"], str)
    not_allowed = setup.post("/ideogram/v1/generate", key=RESTRICTED, json=body)
    assert not_allowed.status_code == 403 and "not allowed" in not_allowed.json()["error"]
    poor = setup.post("/ideogram/v1/generate", key=POOR, json=body)
    assert poor.status_code == 429 and "quota" in poor.json()["error"]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (429, {"error": "You have reached the maximum number of in-flight images.", "reject_reason": "inflight_limit"}),
        (402, {"error": "Insufficient funds", "reject_reason": "insufficient_funds"}),
    ],
)
def test_upstream_errors_keep_status_and_body(setup: ImageSetup, status: int, body: dict[str, str]) -> None:
    setup.ideogram.knobs["answer"] = (status, body)
    try:
        response = _remix(setup)
    finally:
        del setup.ideogram.knobs["answer"]
    assert response.status_code == status and response.json() == body


def test_safety_rejection_is_relayed_and_not_billed(setup: ImageSetup) -> None:
    response = setup.post("/ideogram/v1/generate", json={"image_request": {"prompt": "something unsafe"}})
    assert response.status_code == 422
    assert response.json()["error"].startswith("Prompt provided failed safety check")
    rows = wait_until(lambda: setup.gateway.query("SELECT cost_micros FROM usage_logs WHERE status_code = 422"),
                      what="the usage-log row of the refused request")
    assert all(r.cost_micros == 0 for r in rows)


# --- a revoked channel key: failover, and the error when every channel refuses ----------------------

REVOKED_KEY = "ideo-revoked-key"


@pytest.fixture(scope="module")
def revoked(gateway_factory: Callable[..., Gateway], setup: ImageSetup) -> ImageSetup:
    """ideogram-V_2: a revoked channel first (higher priority), then a working one; ideogram-V_1: only revoked ones."""
    url = setup.ideogram.url
    config = {
        "key_rest_s": 0,
        "cooldown_s": 0,
        "channels": [
            {"name": "revoked", "type": "ideogram", "base_url": url, "keys": [REVOKED_KEY], "priority": 10,
             "models": ["ideogram-V_2", "ideogram-V_1"]},
            {"name": "spare", "type": "ideogram", "base_url": url, "keys": [IDEOGRAM_KEY], "models": ["ideogram-V_2"]},
            {"name": "revoked-too", "type": "ideogram", "base_url": url, "keys": [REVOKED_KEY],
             "models": ["ideogram-V_1"]},
        ],
        "tokens": [{"name": "alice", "key": ALICE, "quota_usd": 50.0}],
        "prices": PRICES,
    }
    return ImageSetup(gateway_factory(config), *setup.fakes)


def _ideogram_call(setup: ImageSetup, endpoint: str, model: str) -> httpx.Response:
    if endpoint == "generate":
        return setup.post("/ideogram/v1/generate", json={"image_request": {"prompt": "a fox", "model": model}})
    return _remix(setup, json.dumps({"prompt": "a fox", "model": model}))


@pytest.mark.parametrize(("endpoint", "refusal"), [("generate", 401), ("remix", 403)])
def test_a_revoked_channel_fails_over_unseen(revoked: ImageSetup, endpoint: str, refusal: int) -> None:
    asked = len(revoked.ideogram.requests)
    response = _ideogram_call(revoked, endpoint, "V_2")
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 1
    sent = revoked.ideogram.requests[asked:]
    assert [r.headers["Api-Key"] for r in sent] == [REVOKED_KEY, IDEOGRAM_KEY]
    row = revoked.row(response)
    assert (row.channel_name, row.attempts, row.status_code) == ("spare", 2, 200)
    assert row.cost_micros == usd_to_micros(0.08)


@pytest.mark.parametrize("endpoint", ["generate", "remix"])
def test_every_channel_refusing_our_keys_is_a_502_in_ideogram_shape(revoked: ImageSetup, endpoint: str) -> None:
    asked = len(revoked.ideogram.requests)
    response = _ideogram_call(revoked, endpoint, "V_1")
    assert response.status_code == 502  # not 401/403: the caller's key was fine, the gateway's were not
    error = response.json()["error"]
    assert isinstance(error, str) and "refused polyrelay's credentials" in error
    assert REVOKED_KEY not in response.text
    assert [r.headers["Api-Key"] for r in revoked.ideogram.requests[asked:]] == [REVOKED_KEY, REVOKED_KEY]
    row = revoked.row(response)
    assert (row.attempts, row.status_code, row.cost_micros) == (2, 502, 0)
