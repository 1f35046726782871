"""variant=convnet of /v1/digits/recognize and POST /v1/digits/read, with a tiny real convnet bundle."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bundles.convnet import ConvNetBundle
from bundles.digit_strips import make_strips
from service.main import create_app
from service.migrate import upgrade_to_head
from service.settings import Settings
from training.mnist import MnistSplits

Run = tuple[Path, dict[str, Any]]


def _start(root: Path, database: str) -> TestClient:
    client = TestClient(create_app(Settings(database_url=database, models_dir=root)))
    client.__enter__()
    return client


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('convnet_db')}/semhash.db"
    upgrade_to_head(url)
    return url


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory,
    models_dir: Path,
    convnet_run: Run,
    digits_run: Run,
    database: str,
) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("convnet_models")
    (root / "text").symlink_to(models_dir / "text")
    (root / "convnet").symlink_to(convnet_run[0])
    (root / "digits").symlink_to(digits_run[0])
    client = _start(root, database)
    yield client
    client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def without_convnet(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, digits_run: Run, database: str
) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("no_convnet_models")
    (root / "text").symlink_to(models_dir / "text")
    (root / "digits").symlink_to(digits_run[0])
    client = _start(root, database)
    yield client
    client.__exit__(None, None, None)


def _png(gray: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.clip(gray, 0, 1) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_recognize_with_the_convnet(client: TestClient, convnet_run: Run, mnist_splits: MnistSplits) -> None:
    bundle = ConvNetBundle.load(convnet_run[0])
    x = mnist_splits.test_x[:4]
    response = client.post(
        "/v1/digits/recognize?variant=convnet&preprocess=false", json={"images": x.tolist()}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 4
    expected = bundle.predict_proba(x)
    for item, p in zip(body["data"], expected, strict=True):
        assert item["variant"] == "convnet" and item["bundle_id"] == bundle.bundle_id
        assert np.allclose(item["probabilities"], p, atol=1e-5)


def test_the_default_is_the_recogniser_with_the_lowest_validation_error(
    client: TestClient, convnet_run: Run, digits_run: Run, mnist_splits: MnistSplits
) -> None:
    convnet = convnet_run[1]["validation_error"]["convnet"]
    digits = digits_run[1]["validation_error"]
    best_dbn = min(digits["finetuned"], digits["generative"])
    response = client.post("/v1/digits/recognize", json={"pixels": mnist_splits.test_x[0].tolist()})
    assert response.status_code == 200, response.text
    variant = response.json()["data"][0]["variant"]
    assert variant == ("convnet" if convnet <= best_dbn else client.app.state.digit_bundle.default_variant)  # type: ignore[attr-defined]


def test_read_a_strip_json_and_upload(client: TestClient, mnist_splits: MnistSplits) -> None:
    (strip,) = make_strips(mnist_splits.test_x, mnist_splits.test_y, 1, seed=5)
    by_json = client.post("/v1/digits/read", json={"pixels": strip.image.tolist()})
    assert by_json.status_code == 200, by_json.text
    (reading,) = by_json.json()["data"]
    assert reading["text"] == "".join(str(d["digit"]) for d in reading["digits"])
    h, w = strip.image.shape
    for found in reading["digits"]:
        top, left, bottom, right = found["box"]
        assert 0 <= top < bottom <= h and 0 <= left < right <= w
    by_upload = client.post("/v1/digits/read", files={"file": ("strip.png", _png(strip.image), "image/png")})
    assert by_upload.status_code == 200, by_upload.text
    assert by_upload.json()["data"][0]["digit_height"] == pytest.approx(reading["digit_height"], abs=1.0)


def test_read_refuses_a_blank_picture(client: TestClient) -> None:
    response = client.post("/v1/digits/read", json={"pixels": np.zeros((30, 90)).tolist()})
    assert response.status_code == 422
    assert "blank" in response.text


def test_without_the_convnet_bundle_its_routes_answer_503(without_convnet: TestClient) -> None:
    response = without_convnet.post("/v1/digits/read", json={"pixels": np.zeros((30, 90)).tolist()})
    assert response.status_code == 503 and "convnet" in response.json()["detail"]
    response = without_convnet.post(
        "/v1/digits/recognize?variant=convnet", json={"pixels": np.zeros(784).tolist()}
    )
    assert response.status_code == 503 and "convnet" in response.json()["detail"]


def test_the_server_starts_with_any_subset_of_bundles(
    tmp_path_factory: pytest.TempPathFactory, convnet_run: Run, database: str, mnist_splits: MnistSplits
) -> None:
    root = tmp_path_factory.mktemp("only_convnet")
    (root / "convnet").symlink_to(convnet_run[0])  # no text bundle, no digits bundle
    client = _start(root, database)
    try:
        assert client.get("/readyz").status_code == 200
        response = client.post("/v1/digits/recognize", json={"pixels": mnist_splits.test_x[0].tolist()})
        assert response.status_code == 200 and response.json()["data"][0]["variant"] == "convnet"
        response = client.post("/v1/hash", json={"text": "a text to hash"})
        assert response.status_code == 503 and "text model" in response.json()["detail"]
        response = client.post(
            "/v1/digits/recognize?variant=finetuned", json={"pixels": np.zeros(784).tolist()}
        )
        assert response.status_code == 503 and "digits" in response.json()["detail"]
    finally:
        client.__exit__(None, None, None)
