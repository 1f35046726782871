"""POST /v1/frames/predict with a tiny predictive bundle really trained on MNIST-like digits."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bundles.predict import PredictiveBundle
from training.mnist import MnistSplits
from training.moving_mnist import sequence_set
from training.predict import PROFILES

Run = tuple[Path, dict[str, Any]]
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def frames_models_dir(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, predictive_run: Run
) -> Path:
    root = tmp_path_factory.mktemp("frames_models")
    (root / "text").symlink_to(models_dir / "text")
    (root / "predictive").symlink_to(predictive_run[0])
    return root


@pytest.fixture
def client(make_client: Callable[..., TestClient], frames_models_dir: Path) -> TestClient:
    return make_client(models_dir=frames_models_dir)


@pytest.fixture(scope="module")
def video(mnist_splits: MnistSplits) -> np.ndarray:
    """One tiny-profile test sequence (12 frames of 32x32)."""
    return sequence_set(mnist_splits, "test", 1, PROFILES["tiny"].data, 0).frames[0]


def _png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.round(frame * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _decode(png: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png))), dtype=np.float32) / 255.0


def test_predicts_k_frames_like_the_bundle(
    client: TestClient, predictive_run: Run, video: np.ndarray
) -> None:
    bundle = PredictiveBundle.load(predictive_run[0])
    response = client.post(
        "/v1/frames/predict", json={"frames": video[:6].tolist(), "k": 3, "include_pixels": True}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["bundle_id"], body["k"], body["n_input_frames"], body["size"]) == (
        "predictive",
        bundle.bundle_id,
        3,
        6,
        32,
    )
    expected = bundle.rollout(video[None, :6], 3)[0]
    assert [f["step"] for f in body["frames"]] == [1, 2, 3]
    for item, frame in zip(body["frames"], expected, strict=True):
        np.testing.assert_allclose(np.asarray(item["pixels"]), frame, atol=1e-4)
        np.testing.assert_allclose(_decode(item["png"]), frame, atol=1 / 255 + 1e-6)
    models = client.get("/v1/models").json()["data"]
    assert "predictive" in {m["kind"] for m in models}


def test_png_uploads_give_the_same_prediction(client: TestClient, video: np.ndarray) -> None:
    quantised = np.round(video[:5] * 255) / 255
    files = [("files", (f"f{i}.png", _png(frame), "image/png")) for i, frame in enumerate(quantised)]
    uploaded = client.post("/v1/frames/predict", files=files, data={"k": "2"})
    assert uploaded.status_code == 200, uploaded.text
    as_json = client.post("/v1/frames/predict", json={"frames": quantised.tolist(), "k": 2})
    assert [f["png"] for f in uploaded.json()["frames"]] == [f["png"] for f in as_json.json()["frames"]]
    assert uploaded.json()["frames"][0]["pixels"] is None


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"frames": []}, "at least 5"),
        ({"k": 2}, "Field required"),
        ("too_few", "at least 5"),
        ("too_many", "at most 15"),
        ("wrong_size", "the model reads 32x32"),
        ("out_of_range", "lie in [0, 1]"),
        ("ragged", "rows of equal length"),
        ("k0", "greater than or equal to 1"),
        ("k99", "less than or equal to 20"),
        ("extra", "Extra inputs"),
    ],
)
def test_bad_requests_are_422(client: TestClient, video: np.ndarray, body: Any, needle: str) -> None:
    frames = video[:6].tolist()
    cases = {
        "too_few": {"frames": frames[:4]},
        "too_many": {"frames": np.concatenate([video, video]).tolist()},
        "wrong_size": {"frames": [np.zeros((28, 28)).tolist()] * 6},
        "out_of_range": {"frames": [np.full((32, 32), 1.5).tolist()] * 6},
        "ragged": {"frames": [[[0.0] * 32] * 31 + [[0.0] * 31]] * 6},
        "k0": {"frames": frames, "k": 0},
        "k99": {"frames": frames, "k": 99},
        "extra": {"frames": frames, "colour": True},
    }
    response = client.post(
        "/v1/frames/predict", json=cases.get(body, body) if isinstance(body, str) else body
    )
    assert response.status_code == 422, response.text
    assert needle in response.text


def test_bad_uploads_and_content_types(client: TestClient, video: np.ndarray) -> None:
    few = [("files", (f"f{i}.png", _png(video[i]), "image/png")) for i in range(3)]
    assert client.post("/v1/frames/predict", files=few).status_code == 422
    junk = [("files", (f"f{i}.png", b"not a png", "image/png")) for i in range(5)]
    response = client.post("/v1/frames/predict", files=junk)
    assert response.status_code == 422 and "not an image" in response.text
    good = [("files", (f"f{i}.png", _png(video[i]), "image/png")) for i in range(5)]
    assert client.post("/v1/frames/predict", files=good, data={"k": "zero"}).status_code == 422
    response = client.post("/v1/frames/predict", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert (
        client.post(
            "/v1/frames/predict", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )


def test_without_a_bundle_the_route_says_how_to_train_one(
    make_client: Callable[..., TestClient], models_dir: Path
) -> None:
    response = make_client(models_dir=models_dir).post("/v1/frames/predict", json={"frames": []})
    assert response.status_code == 503 and "semhash train predictive" in response.text
