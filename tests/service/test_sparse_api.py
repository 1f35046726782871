"""/v1/images/encode?model=sparse and image collections searched by sparse signatures (tiny real bundles)."""

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

from bundles.digit_preprocess import normalise_digit
from bundles.sparse import SparseBundle, signature_bits
from training.mnist import MnistSplits

Run = tuple[Path, dict[str, Any]]


@pytest.fixture(scope="module")
def sparse_models_dir(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, images_run: Run, sparse_run: Run
) -> Path:
    """text/ (tiny text model), images/ (tiny autoencoder) and sparse/ (tiny PSD + LISTA)."""
    root = tmp_path_factory.mktemp("sparse_models")
    for kind, source in (("text", models_dir / "text"), ("images", images_run[0]), ("sparse", sparse_run[0])):
        (root / kind).symlink_to(source)
    return root


@pytest.fixture
def client(make_client: Callable[..., TestClient], sparse_models_dir: Path) -> TestClient:
    return make_client(models_dir=sparse_models_dir)


@pytest.fixture(scope="module")
def bundle(sparse_run: Run) -> SparseBundle:
    return SparseBundle.load(sparse_run[0])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_encode_returns_sparse_codes(
    client: TestClient, bundle: SparseBundle, mnist_splits: MnistSplits
) -> None:
    x = mnist_splits.test_x[:3]
    default = client.post("/v1/images/encode", json={"pixels": x[0].tolist()})
    assert default.status_code == 200 and default.json()["model"] == "autoencoder"
    # preprocess=false: the codes are then those of these very pixels
    response = client.post("/v1/images/encode?model=sparse&preprocess=false", json={"images": x.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["encoder"], body["iterations"], body["count"]) == ("sparse", "lista", 3, 3)
    assert body["n_atoms"] == 48 and body["bundle_id"] == bundle.bundle_id
    codes = bundle.encode(x)
    for item, code in zip(body["data"], codes, strict=True):
        assert item["indices"] == np.flatnonzero(code).tolist() and item["active"] == len(item["indices"])
        np.testing.assert_allclose(item["values"], code[code != 0], rtol=1e-6)
        assert (
            item["signature"]
            == np.packbits(signature_bits(code[None], bundle.signature_atoms)).tobytes().hex()
        )
        assert item["address"] == int(bundle.addresses(code[None])[0])
        assert item["reconstruction_png"] is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_encoders_iterations_and_reconstructions(
    client: TestClient, bundle: SparseBundle, mnist_splits: MnistSplits
) -> None:
    x = mnist_splits.test_x[5]
    fista = client.post(
        "/v1/images/encode?model=sparse&encoder=fista&iterations=7&reconstruct=true&preprocess=false",
        json={"pixels": x.tolist()},
    )
    assert fista.status_code == 200, fista.text
    body = fista.json()
    assert (body["encoder"], body["iterations"]) == ("fista", 7)
    item = body["data"][0]
    code = bundle.encode(x[None], "fista", 7)[0]
    assert item["indices"] == np.flatnonzero(code).tolist()
    recon = bundle.reconstruct(code[None])[0]
    assert item["reconstruction_error"] == pytest.approx(float(((recon - x) ** 2).sum()), rel=1e-5)
    png = Image.open(io.BytesIO(base64.b64decode(item["reconstruction_png"])))
    assert png.size == (28, 28)
    default_fista = client.post("/v1/images/encode?model=sparse&encoder=fista", json={"pixels": x.tolist()})
    assert default_fista.json()["iterations"] == bundle.fista_iterations == 50
    psd = client.post("/v1/images/encode?model=sparse&encoder=psd", json={"pixels": x.tolist()}).json()
    assert (psd["encoder"], psd["iterations"]) == ("psd", 1)
    upload = Image.fromarray((255 - x.reshape(28, 28) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    upload.save(buffer, format="PNG")
    files = {"file": ("digit.png", buffer.getvalue(), "image/png")}
    assert client.post("/v1/images/encode?model=sparse", files=files).json()["data"][0]["active"] > 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("encoder=fista", "encoder"),
        ("model=sparse&iterations=5", "iterations"),
        ("model=sparse&encoder=psd&iterations=5", "iterations"),
        ("model=sparse&encoder=fista&iterations=0", "iterations"),
        ("model=sparse&encoder=fista&iterations=1001", "iterations"),
        ("model=sparse&encoder=omp", "encoder"),
        ("model=pca", "model"),
    ],
)
def test_bad_parameters_are_422_naming_them(client: TestClient, query: str, field: str) -> None:
    response = client.post(f"/v1/images/encode?{query}", json={"pixels": [0.0] * 784})
    assert response.status_code == 422, response.text
    assert any(error["loc"][-1] == field for error in response.json()["detail"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_small_json_bodies_without_preprocessing_skip_the_decode_pool_with_the_same_checks(
    client: TestClient, bundle: SparseBundle, mnist_splits: MnistSplits, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = client.app.state.decode_pool
    handed: list[str] = []
    run = pool.run

    async def counted(fn: Callable[..., Any], *args: Any) -> Any:
        handed.append(fn.__name__)
        return await run(fn, *args)

    monkeypatch.setattr(pool, "run", counted)
    route = "/v1/images/encode?model=sparse&preprocess=false"
    x = mnist_splits.test_x[:40]
    one = client.post(route, json={"pixels": x[0].tolist()})
    assert one.status_code == 200 and handed == []  # parsed and checked on the event loop
    assert one.json()["data"][0]["indices"] == np.flatnonzero(bundle.encode(x[:1])[0]).tolist()
    for body, field in (({"pixels": [2.0] * 784}, "pixels"), ({"pixels": [0.5] * 10}, "pixels")):
        refused = client.post(route, json=body)
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", field]
    assert client.post(route, json={"pixels": x[0].tolist(), "extra": 1}).status_code == 422
    assert handed == []
    many = client.post(route, json={"images": x.tolist()})  # over INLINE_JSON_BYTES: the pool parses it
    assert many.status_code == 200 and many.json()["count"] == 40 and handed == ["_normalise_json"]
    preprocessed = client.post("/v1/images/encode?model=sparse", json={"pixels": x[0].tolist()})
    assert preprocessed.status_code == 200 and handed == ["_normalise_json"] * 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_without_a_sparse_bundle_the_route_is_503_and_the_autoencoder_still_works(
    make_client: Callable[..., TestClient], sparse_models_dir: Path, tmp_path: Path
) -> None:
    partial = tmp_path / "models"
    partial.mkdir()
    for kind in ("text", "images"):
        (partial / kind).symlink_to((sparse_models_dir / kind).resolve())
    client = make_client(models_dir=partial)
    response = client.post("/v1/images/encode?model=sparse", json={"pixels": [0.0] * 784})
    assert response.status_code == 503 and "sparse" in response.text
    assert client.post("/v1/images/encode", json={"pixels": [0.0] * 784}).status_code == 200
    assert client.post("/v1/images/collections", json={"name": "parts"}).status_code == 503


def test_image_collections_find_images_by_shared_parts(
    client: TestClient, bundle: SparseBundle, mnist_splits: MnistSplits
) -> None:
    created = client.post("/v1/images/collections", json={"name": "parts"})
    assert created.status_code == 201, created.text
    assert (created.json()["bundle_id"], created.json()["long_bits"]) == (bundle.bundle_id, 48)
    x, y = mnist_splits.train_x[:200], mnist_splits.train_y[:200]
    images = [
        {"id": f"train/{i}", "pixels": x[i].tolist(), "metadata": {"label": int(y[i])}} for i in range(200)
    ]
    response = client.post("/v1/collections/parts/images", json={"images": images})
    assert response.status_code == 404  # image routes live under /v1/images
    response = client.post("/v1/images/collections/parts/images", json={"images": images})
    assert response.status_code == 200 and response.json() == {"upserted": 200}
    assert client.get("/v1/collections/parts").json()["document_count"] == 200
    stored = client.get("/v1/collections/parts/documents/train/7").json()
    assert stored["metadata"] == {"label": int(y[7])} and stored["text"] == ""
    stored_pixels = normalise_digit(x[7].reshape(28, 28)).reshape(1, 784)  # the shared preprocessing
    assert stored["long_code"] == bundle.signatures(bundle.encode(stored_pixels))[0].tobytes().hex()

    found = client.post(
        "/v1/images/collections/parts/search?radius=3&limit=5&shortlist=50", json={"pixels": x[7].tolist()}
    )
    assert found.status_code == 200, found.text
    hits = found.json()["data"]
    assert hits[0] == {"id": "train/7", "distance": 0, "score": 1.0}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert found.json()["rerank"] == "hamming" and found.json()["shortlist_size"] <= 50


def test_image_collection_bad_input_writes_nothing(client: TestClient, mnist_splits: MnistSplits) -> None:
    assert client.post("/v1/images/collections", json={"name": "parts"}).status_code == 201
    assert client.post("/v1/images/collections", json={"name": "parts"}).status_code == 409
    good = {"id": "a", "pixels": mnist_splits.train_x[0].tolist()}
    cases = [
        ([good, {"id": "b", "pixels": [2.0] * 784}], ["body", "images", 1, "pixels"]),
        ([good, {"id": "b", "pixels": [0.5] * 10}], ["body", "images", 1, "pixels"]),
        ([good, good], ["body", "images", 1, "id"]),
    ]
    for images, location in cases:
        response = client.post("/v1/images/collections/parts/images", json={"images": images})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == location
    assert client.get("/v1/collections/parts").json()["document_count"] == 0
    assert client.post("/v1/images/collections/none/images", json={"images": [good]}).status_code == 404
    two = {"images": [good["pixels"], good["pixels"]]}
    assert client.post("/v1/images/collections/parts/search", json=two).status_code == 422
    search = client.post("/v1/images/collections/parts/search?radius=99", json={"pixels": good["pixels"]})
    assert search.status_code == 422


def test_text_and_image_collections_do_not_mix(client: TestClient, mnist_splits: MnistSplits) -> None:
    assert client.post("/v1/collections", json={"name": "news"}).status_code == 201
    assert client.post("/v1/images/collections", json={"name": "parts"}).status_code == 201
    pixels = mnist_splits.train_x[0].tolist()
    response = client.post(
        "/v1/images/collections/news/images", json={"images": [{"id": "a", "pixels": pixels}]}
    )
    assert response.status_code == 409 and "sparse" in response.text
    assert client.post("/v1/images/collections/news/search", json={"pixels": pixels}).status_code == 409
    documents = {"documents": [{"id": "d", "text": "space0 space1"}]}
    assert client.post("/v1/collections/parts/documents", json=documents).status_code == 409
    assert client.post("/v1/collections/parts/search", json={"text": "space0"}).status_code == 409
