"""POST /v1/digits/recognize and /v1/images/encode with tiny real bundles: inputs, outputs, bad inputs."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from bundles.digit_preprocess import normalise_digit
from bundles.vision import DigitBundle, ImageBundle
from service.main import create_app
from service.migrate import upgrade_to_head
from service.settings import Settings
from training.mnist import MnistSplits

Run = tuple[Path, dict[str, Any]]


def normalised(x: np.ndarray) -> np.ndarray:
    """(n, 784) pixels through the service's preprocessing path."""
    return np.stack([normalise_digit(row.reshape(28, 28)).reshape(784) for row in x])


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def drawn_one() -> bytes:
    image = Image.new("L", (120, 160), 255)
    ImageDraw.Draw(image).line([(60, 20), (60, 140)], fill=0, width=12)
    return png(image)


@pytest.fixture(scope="module")
def vision_models_dir(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, digits_run: Run, images_run: Run
) -> Path:
    """A models directory with the service's tiny text bundle and tiny trained digits and images bundles."""
    root = tmp_path_factory.mktemp("vision_models")
    for kind, source in (("text", models_dir / "text"), ("digits", digits_run[0]), ("images", images_run[0])):
        (root / kind).symlink_to(source)
    return root


@pytest.fixture(scope="module")
def vision_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('vision_db')}/semhash.db"
    upgrade_to_head(url)
    return url


@pytest.fixture(scope="module")
def make_vision_client(vision_models_dir: Path, vision_database: str) -> Iterator[Callable[..., TestClient]]:
    """Start the real app (lifespan included); `models_dir` and other settings can be overridden."""
    clients: list[TestClient] = []

    def start(**overrides: Any) -> TestClient:
        settings = Settings(**{"database_url": vision_database, "models_dir": vision_models_dir, **overrides})
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client(make_vision_client: Callable[..., TestClient]) -> TestClient:
    return make_vision_client()


def test_the_app_loads_both_bundles(client: TestClient, digits_run: Run, images_run: Run) -> None:
    models = json.dumps(client.get("/v1/models").json())
    for path, cls in ((digits_run[0], DigitBundle), (images_run[0], ImageBundle)):
        assert cls.load(path).bundle_id in models


def test_recognize_json_single_square_and_batch(client: TestClient, mnist_splits: MnistSplits) -> None:
    bundle_id = client.app.state.digit_bundle.bundle_id  # type: ignore[attr-defined]
    x = mnist_splits.test_x
    for body in ({"pixels": x[0].tolist()}, {"pixels": x[0].reshape(28, 28).tolist()}):
        response = client.post("/v1/digits/recognize", json=body)
        assert response.status_code == 200, response.text
        (item,) = response.json()["data"]
        assert item["bundle_id"] == bundle_id and len(item["probabilities"]) == 10
        assert item["digit"] == int(np.argmax(item["probabilities"]))
        assert sum(item["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    bundle: DigitBundle = client.app.state.digit_bundle  # type: ignore[attr-defined]
    for query, inputs in (("", normalised(x[:3])), ("&preprocess=false", x[:3])):
        response = client.post(
            f"/v1/digits/recognize?variant=generative{query}", json={"images": x[:3].tolist()}
        )
        assert response.status_code == 200 and response.json()["count"] == 3
        assert {item["variant"] for item in response.json()["data"]} == {"generative"}
        probabilities = [item["probabilities"] for item in response.json()["data"]]
        np.testing.assert_allclose(probabilities, bundle.predict_proba(inputs, "generative"), atol=1e-5)


def test_uploads_and_json_of_any_size_give_the_same_answer(client: TestClient) -> None:
    picture = np.asarray(Image.open(io.BytesIO(drawn_one())), dtype=np.float32) / 255.0  # 160 x 120
    by_json = client.post("/v1/digits/recognize", json={"pixels": picture.tolist()})
    by_upload = client.post("/v1/digits/recognize", files={"file": ("one.png", drawn_one(), "image/png")})
    assert by_json.status_code == by_upload.status_code == 200, by_json.text
    assert by_json.json()["data"] == by_upload.json()["data"]
    response = client.post("/v1/digits/recognize?preprocess=false", json={"pixels": picture.tolist()})
    assert response.status_code == 422 and "must be 28x28" in response.text


def test_recognize_uploads(client: TestClient) -> None:
    response = client.post("/v1/digits/recognize", files={"file": ("one.png", drawn_one(), "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["count"] == 1
    files = [("files", (f"d{i}.png", drawn_one(), "image/png")) for i in range(3)]
    response = client.post("/v1/digits/recognize", files=files)
    assert response.status_code == 200 and response.json()["count"] == 3


def test_encode_with_and_without_reconstruction(client: TestClient, mnist_splits: MnistSplits) -> None:
    x = mnist_splits.test_x[:2]
    response = client.post("/v1/images/encode?reconstruct=true&preprocess=false", json={"images": x.tolist()})
    assert response.status_code == 200, response.text
    bundle: ImageBundle = client.app.state.image_bundle  # type: ignore[attr-defined]
    for item, row in zip(response.json()["data"], x, strict=True):
        np.testing.assert_allclose(item["code"], bundle.encode(row[None])[0], rtol=1e-5, atol=1e-5)
        assert set(item["binary_code"]) <= {"0", "1"} and len(item["binary_code"]) == bundle.code_size
        image = Image.open(io.BytesIO(base64.b64decode(item["reconstruction_png"])))
        assert image.size == (28, 28)
        expected = ((bundle.reconstruct(bundle.encode(row[None]))[0] - row) ** 2).sum()
        assert item["reconstruction_error"] == pytest.approx(float(expected), rel=1e-4)
    default = client.post("/v1/images/encode", json={"images": x.tolist()}).json()["data"]
    np.testing.assert_allclose(
        [d["code"] for d in default], bundle.encode(normalised(x)), rtol=1e-5, atol=1e-5
    )
    plain = client.post("/v1/images/encode", files={"file": ("one.png", drawn_one(), "image/png")}).json()
    assert plain["data"][0]["reconstruction_png"] is None and plain["data"][0]["reconstruction_error"] is None


GOOD = [1.0 if i % 28 == 14 and 4 <= i // 28 < 24 else 0.0 for i in range(784)]  # a vertical stroke
BLANK = [0.0] * 784


def test_a_blank_image_is_not_a_digit_but_still_encodes(client: TestClient) -> None:
    response = client.post("/v1/digits/recognize", json={"images": [GOOD, BLANK]})
    assert response.status_code == 422 and "blank" in response.text
    assert response.json()["detail"][0]["loc"] == ["body", "images", 1]
    assert client.post("/v1/digits/recognize", json={"pixels": GOOD}).status_code == 200
    assert client.post("/v1/images/encode", json={"pixels": BLANK}).status_code == 200


@pytest.mark.parametrize("path", ["/v1/digits/recognize", "/v1/images/encode"])
@pytest.mark.parametrize(
    ("kwargs", "status", "fragment"),
    [
        ({"files": {"file": ("x.png", b"not an image at all", "image/png")}}, 422, "not an image"),
        ({"files": {"file": ("x.png", drawn_one()[:150], "image/png")}}, 422, "corrupt"),
        ({"files": {"file": ("x.png", b"", "image/png")}}, 422, "empty"),
        ({"data": {"file": "just text"}, "files": {"x": ("x.png", b"1", "image/png")}}, 422, "upload"),
        ({"data": {"pixels": "0.5"}}, 415, "unsupported content type"),
        ({"files": {"other": ("x.png", drawn_one(), "image/png")}}, 422, "`file`"),
        ({"json": {"pixels": [0.5] * 783}}, 422, "784 numbers"),
        ({"json": {"pixels": [2.0] * 784}}, 422, "[0, 1]"),
        ({"json": {"images": [GOOD, [0.5] * 10]}}, 422, "784 numbers"),
        ({"json": {"pixels": ["a"] * 784}}, 422, "valid number"),
        ({"json": {}}, 422, "exactly one"),
        ({"json": {"pixels": GOOD, "images": [GOOD]}}, 422, "exactly one"),
        ({"json": {"pixels": GOOD, "colour": 1}}, 422, "Extra inputs"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "unsupported content type"),
    ],
)
def test_bad_inputs_get_clear_4xx(
    client: TestClient, path: str, kwargs: dict[str, Any], status: int, fragment: str
) -> None:
    response = client.post(path, **kwargs)
    assert response.status_code == status, response.text
    assert fragment in json.dumps(response.json()["detail"])


def test_locations_name_the_bad_item(client: TestClient) -> None:
    response = client.post("/v1/digits/recognize", json={"images": [GOOD, GOOD, [1.5] * 784]})
    assert response.json()["detail"][0]["loc"] == ["body", "images", 2]
    files = [("files", ("a.png", drawn_one(), "image/png")), ("files", ("b.png", b"junk", "image/png"))]
    response = client.post("/v1/images/encode", files=files)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "files", 1]


def test_limits(make_vision_client: Callable[..., TestClient]) -> None:
    client = make_vision_client(max_batch_documents=2, max_image_pixels=1000)
    response = client.post("/v1/digits/recognize", json={"images": [GOOD] * 3})
    assert response.status_code == 422 and "at most 2 images" in response.text
    response = client.post("/v1/digits/recognize", files={"file": ("big.png", drawn_one(), "image/png")})
    assert response.status_code == 413 and "larger than the limit" in response.text
    response = client.post("/v1/digits/recognize?variant=best", json={"pixels": GOOD})
    assert response.status_code == 422


def test_503_when_no_bundle_is_loaded(
    make_vision_client: Callable[..., TestClient], vision_models_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "text").symlink_to((vision_models_dir / "text").resolve())
    (tmp_path / "digits").mkdir()  # present but empty: a broken bundle must not stop the server
    client = make_vision_client(models_dir=tmp_path)
    for path, why in (
        ("/v1/digits/recognize", "config.json is missing"),
        ("/v1/images/encode", "no bundle at"),
    ):
        response = client.post(path, json={"pixels": GOOD})
        assert response.status_code == 503
        assert "semhash train" in response.json()["detail"] and why in response.json()["detail"]
