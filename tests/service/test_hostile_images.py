"""Hostile, corrupt and odd images against every image route: never a 5xx, each refusal says what was
wrong, and decoding happens in the bounded decode pool (429 + Retry-After when it is full) (issue 9).

Every file is made here with Pillow (and a few patched bytes): decompression bombs in PNG and JPEG
headers, oversized zTXt and iCCP chunks, truncated files, odd formats and modes.
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from service.imaging import ImageInputError, decode_image
from service.main import create_app
from service.migrate import upgrade_to_head
from service.settings import Settings

Run = tuple[Path, dict[str, Any]]
UPLOAD_ROUTES = ["/v1/digits/recognize", "/v1/images/encode"]


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def digit(mode: str = "L", size: tuple[int, int] = (60, 80)) -> Image.Image:
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).line([(size[0] // 2, 10), (size[0] // 2, size[1] - 10)], fill=0, width=8)
    return image.convert(mode)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with(width: int, height: int, extra_chunks: bytes = b"", rows: int = 4) -> bytes:
    """A grayscale PNG whose header claims width x height; only `rows` rows of data follow."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    data = chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1) * rows))
    return b"\x89PNG\r\n\x1a\n" + header + extra_chunks + data + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) is patched to claim width x height."""
    data = bytearray(encode(digit(), "JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def oversized_text_chunk() -> bytes:
    compressed = zlib.compress(b"a" * (8 * 1024 * 1024))  # Pillow refuses text over 1 MB decompressed
    return png_with(64, 64, chunk(b"zTXt", b"Comment\x00\x00" + compressed))


def oversized_icc_chunk() -> bytes:
    compressed = zlib.compress(b"\x00" * (64 * 1024 * 1024))
    return png_with(64, 64, chunk(b"iCCP", b"icc\x00\x00" + compressed))


def many_text_chunks() -> bytes:
    text = b"".join(chunk(b"tEXt", b"k\x00" + b"v" * 900_000) for _ in range(80))  # > 64 MB of text
    return png_with(64, 64, text)


HOSTILE: dict[str, Callable[[], bytes]] = {
    "png_20000x20000_header": lambda: png_with(20000, 20000),
    "png_65535x65535_header": lambda: png_with(65535, 65535),
    "png_over_the_pixel_limit": lambda: png_with(4097, 4096),
    "png_zero_width": lambda: png_with(0, 10),
    "jpeg_claiming_65000x65000": lambda: jpeg_claiming(65000, 65000),
    "jpeg_claiming_0x0": lambda: jpeg_claiming(0, 0),
    "png_oversized_ztxt": oversized_text_chunk,
    "png_oversized_iccp": oversized_icc_chunk,
    "png_64mb_of_text_chunks": many_text_chunks,
    "jpeg_cut_at_200_bytes": lambda: encode(digit(size=(300, 300)), "JPEG")[:200],
    "jpeg_cut_at_2_bytes": lambda: encode(digit(), "JPEG")[:2],
    "png_cut_in_half": lambda: (lambda data: data[: len(data) // 2])(encode(digit(size=(300, 300)))),
    "png_cut_after_header": lambda: encode(digit())[:33],
    "png_bad_crc": lambda: (lambda data: data[:29] + b"\x00\x00\x00\x00" + data[33:])(encode(digit())),
    "png_garbage_idat": lambda: png_with(64, 64)[:-40] + b"\xff" * 28 + chunk(b"IEND", b""),
    "gif": lambda: encode(digit(), "GIF"),
    "bmp": lambda: encode(digit(), "BMP"),
    "tiff": lambda: encode(digit(), "TIFF"),
    "webp": lambda: encode(digit(), "WEBP"),
    "text": lambda: b"hello, not an image",
    "empty": lambda: b"",
    "png_signature_only": lambda: b"\x89PNG\r\n\x1a\n",
    "jpeg_soi_only": lambda: b"\xff\xd8\xff",
}
def transparent_background() -> bytes:
    image = digit("P")
    return encode(image, transparency=image.getpixel((0, 0)))  # the background shows white


TOO_LARGE = {
    "png_20000x20000_header",
    "png_65535x65535_header",
    "png_over_the_pixel_limit",
    "jpeg_claiming_65000x65000",
}
ODD_BUT_VALID: dict[str, Callable[[], bytes]] = {
    "png_16_bit_gray": lambda: encode(digit("I;16")),
    "png_1_bit": lambda: encode(digit("1")),
    "png_rgba": lambda: encode(digit("RGBA")),
    "png_la": lambda: encode(digit("LA")),
    "png_palette": lambda: encode(digit("P")),
    "png_palette_transparent": lambda: transparent_background(),
    "png_rgb_interlaced": lambda: encode(digit("RGB"), interlace=1),
    "jpeg_gray": lambda: encode(digit(), "JPEG"),
    "jpeg_cmyk": lambda: encode(digit("CMYK"), "JPEG"),
    "jpeg_progressive": lambda: encode(digit("RGB"), "JPEG", progressive=True),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_files_are_refused_with_a_reason(name: str) -> None:
    with pytest.raises(ImageInputError) as refused:
        decode_image(HOSTILE[name](), max_pixels=4096 * 4096)
    assert refused.value.message


@pytest.mark.parametrize("name", sorted(ODD_BUT_VALID))
def test_odd_formats_and_modes_decode(name: str) -> None:
    gray = decode_image(ODD_BUT_VALID[name](), max_pixels=4096 * 4096)
    assert gray.ndim == 2 and gray.dtype == np.float32 and 0.0 <= gray.min() <= gray.max() <= 1.0


def test_the_smallest_image_decodes() -> None:
    gray = decode_image(encode(Image.new("L", (1, 1), 0)), max_pixels=4096 * 4096)
    assert gray.ndim == 2 and gray.dtype == np.float32 and 0.0 <= gray.min() <= gray.max() <= 1.0


@pytest.fixture(scope="module")
def vision_models_dir(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, digits_run: Run, images_run: Run
) -> Path:
    root = tmp_path_factory.mktemp("hostile_models")
    for kind, source in (("text", models_dir / "text"), ("digits", digits_run[0]), ("images", images_run[0])):
        (root / kind).symlink_to(source)
    return root


@pytest.fixture(scope="module")
def make_vision_client(
    vision_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., TestClient]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('hostile_db')}/semhash.db"
    upgrade_to_head(url)
    clients: list[TestClient] = []

    def start(**overrides: Any) -> TestClient:
        settings = Settings(**{"database_url": url, "models_dir": vision_models_dir, **overrides})
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def vision_client(make_vision_client: Callable[..., TestClient]) -> TestClient:
    return make_vision_client()


@pytest.mark.parametrize("route", UPLOAD_ROUTES)
def test_every_hostile_upload_is_a_4xx_saying_what_was_wrong(vision_client: TestClient, route: str) -> None:
    for name, make in HOSTILE.items():
        data = make()
        response = vision_client.post(route, files={"file": (f"{name}.png", data, "image/png")})
        assert response.status_code in (413, 422), (name, response.status_code, response.text)
        detail = response.json()["detail"]
        message = detail if isinstance(detail, str) else detail[0]["msg"]
        assert message and "internal" not in message, (name, message)
        if name in TOO_LARGE:
            assert response.status_code == 413, (name, response.text)


@pytest.mark.parametrize("route", UPLOAD_ROUTES)
def test_a_batch_names_the_bad_file_and_odd_modes_are_served(vision_client: TestClient, route: str) -> None:
    good = [("files", (f"{name}.png", make(), "image/png")) for name, make in ODD_BUT_VALID.items()]
    response = vision_client.post(route, files=good)
    assert response.status_code == 200, response.text
    assert response.json()["count"] == len(ODD_BUT_VALID)
    bad = [*good[:3], ("files", ("bomb.png", HOSTILE["png_oversized_ztxt"](), "image/png")), *good[3:]]
    response = vision_client.post(route, files=bad)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "files", 3]


def test_hostile_frames_uploads_are_4xx(vision_client: TestClient) -> None:
    files = [("files", ("f.png", encode(digit()), "image/png")) for _ in range(4)]
    for name in ("png_20000x20000_header", "png_oversized_iccp", "jpeg_cut_at_200_bytes"):
        response = vision_client.post(
            "/v1/frames/predict", files=[*files, ("files", ("x.png", HOSTILE[name](), "image/png"))]
        )
        assert 400 <= response.status_code < 500 or "model is not available" in response.text, name


def test_a_full_decode_pool_answers_429_with_retry_after_and_health_stays_up(
    make_vision_client: Callable[..., TestClient],
) -> None:
    client = make_vision_client(image_decode_workers=1, image_decode_queue=1)
    pool = client.app.state.decode_pool
    release = threading.Event()
    started = threading.Event()

    def occupy() -> None:
        started.set()
        release.wait()

    holders = [pool.submit(occupy), pool.submit(lambda: None)]  # one running, one waiting: full
    try:
        assert started.wait(30)
        upload = {"file": ("one.png", encode(digit()), "image/png")}
        for route in UPLOAD_ROUTES:
            response = client.post(route, files=upload)
            assert response.status_code == 429, response.text
            assert response.headers["retry-after"] == "1" and "retry" in response.json()["detail"]
        response = client.post(UPLOAD_ROUTES[0], json={"pixels": np.eye(28).tolist()})
        assert response.status_code == 429
        assert client.get("/healthz").status_code == 200
    finally:
        release.set()
    for holder in holders:
        holder.result(timeout=30)
    assert client.post(UPLOAD_ROUTES[0], files=upload).status_code == 200
    assert pool.admitted == 0
