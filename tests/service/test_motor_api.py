"""POST /v1/digits/trace and /v1/digits/render with a tiny real motor bundle: outputs and bad inputs."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bundles.motor import MotorBundle
from service.main import create_app
from service.migrate import upgrade_to_head
from service.settings import Settings
from training.mnist import MnistSplits

Run = tuple[Path, dict[str, Any]]


def _start(models: Path, database: str) -> TestClient:
    client = TestClient(create_app(Settings(database_url=database, models_dir=models)))
    client.__enter__()
    return client


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('motor_db')}/semhash.db"
    upgrade_to_head(url)
    return url


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, motor_run: Run, database: str
) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("motor_models")
    (root / "text").symlink_to(models_dir / "text")
    (root / "motor").symlink_to(motor_run[0])
    client = _start(root, database)
    yield client
    client.__exit__(None, None, None)


def _png(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text)))) / 255.0


def test_models_lists_the_motor_bundle(client: TestClient, motor_run: Run) -> None:
    kinds = {m["kind"]: m["bundle_id"] for m in client.get("/v1/models").json()["data"]}
    assert kinds["motor"] == MotorBundle.load(motor_run[0]).bundle_id


def test_trace_returns_the_best_program_its_drawing_and_every_error(
    client: TestClient, mnist_splits: MnistSplits
) -> None:
    images = mnist_splits.test_x[:2]
    # preprocess=false: the errors are then against these very pixels
    response = client.post("/v1/digits/trace?preprocess=false", json={"images": images.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 2
    for image, item in zip(images, body["data"], strict=True):
        assert len(item["program"]["stiffness"]) == 17
        assert all(len(row) == 4 and min(row) >= 0 for row in item["program"]["stiffness"])
        assert len(item["errors"]) == len(item["errors_before_local_search"]) == 10
        assert len(item["scores"]) == 10 and item["digit"] == int(np.argmin(item["scores"]))
        # pixel error <= energy (the prior term is >= 0) <= the recognition net's pixel error
        assert np.all(np.array(item["errors"]) <= np.array(item["scores"]) + 1e-3)
        assert np.all(np.array(item["scores"]) <= np.array(item["errors_before_local_search"]) + 1e-3)
        assert sum(item["probabilities"]) == pytest.approx(1.0, abs=1e-6)
        assert len(item["ink_points"]) == 60 and len(item["trajectory"]) > 60
        recon = _png(item["image_png"])
        assert recon.shape == (28, 28)
        # the PNG is the reconstruction whose error is reported (up to 8-bit rounding)
        assert ((recon.ravel() - image) ** 2).sum() == pytest.approx(item["errors"][item["digit"]], rel=0.05)
    plain = client.post("/v1/digits/trace?local_search=false", json={"pixels": images[0].tolist()}).json()
    assert plain["data"][0]["errors"] == plain["data"][0]["errors_before_local_search"]
    assert plain["data"][0]["scores"] == plain["data"][0]["errors_before_local_search"]


def test_render_draws_a_program_as_trace_drew_it(client: TestClient, mnist_splits: MnistSplits) -> None:
    traced = client.post("/v1/digits/trace", json={"pixels": mnist_splits.test_x[3].tolist()}).json()["data"][
        0
    ]
    drawn = client.post("/v1/digits/render", json={"program": traced["program"]})
    assert drawn.status_code == 200, drawn.text
    body = drawn.json()
    assert body["digit"] is None
    assert np.abs(_png(body["image_png"]) - _png(traced["image_png"])).max() <= 1 / 255 + 1e-9
    assert body["trajectory"] == traced["trajectory"]


def test_render_draws_new_digits_of_a_class_by_seed(client: TestClient) -> None:
    first, again, other = (
        client.post("/v1/digits/render", json={"digit": 7, "seed": seed}).json() for seed in (1, 1, 2)
    )
    assert first == again and first["digit"] == 7
    assert first["image_png"] != other["image_png"]
    assert _png(first["image_png"]).max() > 0.5


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"digit": 3, "program": {"stiffness": [[1.0] * 4] * 17}},
        {"digit": 10},
        {"digit": 3, "noise": -1},
        {"program": {"stiffness": [[1.0] * 4] * 16}},
        {"program": {"stiffness": [[1.0, 1.0, 1.0, -1.0]] + [[1.0] * 4] * 16}},
        {"program": {"stiffness": [[1.0] * 3] * 17}},
        {"program": {"stiffness": [[1.0] * 4] * 17, "log_ink": 9}},
        {"program": {"stiffness": [[1.0] * 4] * 17, "extra": 1}},
    ],
)
def test_render_refuses_bad_requests(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post("/v1/digits/render", json=body)
    assert response.status_code == 422, response.text


def test_without_a_motor_bundle_the_routes_say_so(models_dir: Path, database: str) -> None:
    client = _start(models_dir, database)
    try:
        for path, body in (("trace", {"pixels": [0.5] * 784}), ("render", {"digit": 1})):
            response = client.post(f"/v1/digits/{path}", json=body)
            assert response.status_code == 503
            assert "motor" in response.text
    finally:
        client.__exit__(None, None, None)
