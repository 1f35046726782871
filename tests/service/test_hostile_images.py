"""Hostile, corrupt and odd images against every image route: never a 5xx, each refusal says what was
wrong, and decoding happens in the bounded decode pool (429 + Retry-After when it is full) (issue 9).

Every file is made here with Pillow (and a few patched bytes): decompression bombs in PNG and JPEG
headers, oversized zTXt and iCCP chunks, truncated files, odd formats and modes.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from processes import PATIENCE_SECONDS, all_ended, watching

from service.decode_pool import WORKER_NICENESS, DecodePool, DecoderStoppedError
from service.errors import InvalidInputError
from service.imaging import ImageInputError, decode_image
from service.main import create_app
from service.migrate import upgrade_to_head
from service.settings import Settings
from service.vision import _as_decoded, _normalise_uploads

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


def hold_a_worker(pool: DecodePool, pipe: Path) -> tuple[Future[bytes], int]:
    """Occupy one of `pool`'s workers: it reads the named pipe `pipe` until the returned write end (an
    open file descriptor) is closed. Returns once the worker is really reading (no timing involved)."""
    os.mkfifo(pipe)
    job = pool.submit(Path.read_bytes, pipe)
    deadline = time.monotonic() + PATIENCE_SECONDS
    while True:  # opening the write end succeeds once a reader has the pipe open
        try:
            writer = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
            return job, writer
        except OSError:
            assert not job.done(), job.exception()
            assert time.monotonic() < deadline, "no worker started reading"
            time.sleep(0.01)


def test_a_full_decode_pool_answers_429_with_retry_after_and_health_stays_up(
    make_vision_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_vision_client(image_decode_workers=1, image_decode_queue=1)
    pool = client.app.state.decode_pool
    holder, writer = hold_a_worker(pool, tmp_path / "hold")
    waiting = pool.submit(abs, -1)  # one job running, one waiting: the pool is full
    try:
        upload = {"file": ("one.png", encode(digit()), "image/png")}
        for route in UPLOAD_ROUTES:
            response = client.post(route, files=upload)
            assert response.status_code == 429, response.text
            assert response.headers["retry-after"] == "1" and "retry" in response.json()["detail"]
        response = client.post(UPLOAD_ROUTES[0], json={"pixels": np.eye(28).tolist()})
        assert response.status_code == 429
        assert client.get("/healthz").status_code == 200
    finally:
        os.close(writer)
    assert holder.result(timeout=60) == b"" and waiting.result(timeout=60) == 1
    assert client.post(UPLOAD_ROUTES[0], files=upload).status_code == 200
    assert pool.admitted == 0


def test_images_decode_in_worker_processes_at_a_lower_priority() -> None:
    pool = DecodePool(workers=1, queue=0)
    try:
        assert pool.call(os.getpid) != os.getpid()
        assert pool.call(os.nice, 0) == min(19, os.nice(0) + WORKER_NICENESS)
        with pytest.raises(InvalidInputError) as raised:  # errors cross back whole
            pool.call(_normalise_uploads, [(("body", "files", 2), b"not an image")], 784, _as_decoded)
        assert raised.value.locations == [["body", "files", 2]] and raised.value.status_code == 422
    finally:
        pool.shutdown()


def test_a_worker_that_dies_fails_its_request_with_503_and_is_replaced(tmp_path: Path) -> None:
    pool = DecodePool(workers=1, queue=1)
    try:
        worker = pool.call(os.getpid)
        job, writer = hold_a_worker(pool, tmp_path / "hold")
        os.kill(worker, signal.SIGKILL)  # as the kernel's out-of-memory killer would
        with pytest.raises(DecoderStoppedError) as raised:
            job.result(timeout=60)
        os.close(writer)
        assert raised.value.status_code == 503 and raised.value.headers == {"Retry-After": "1"}
        assert pool.call(os.getpid) not in (worker, os.getpid())  # a fresh worker took over
        assert pool.admitted == 0
    finally:
        pool.shutdown()


def test_a_killed_server_leaves_no_decoding_worker_behind(tmp_path: Path) -> None:
    server = """
import os, sys
from pathlib import Path
from service.decode_pool import DecodePool
pool = DecodePool(workers=1, queue=0)
print(pool.call(os.getpid), flush=True)
pool.submit(Path.read_bytes, Path(sys.argv[1]))  # the worker, busy reading the pipe until the test closes it
sys.stdin.read()
"""
    pipe = tmp_path / "hold"
    os.mkfifo(pipe)
    process = subprocess.Popen(
        [sys.executable, "-c", server, str(pipe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    writer = None
    try:
        worker = int(process.stdout.readline())  # type: ignore[union-attr]
        deadline = time.monotonic() + PATIENCE_SECONDS
        while writer is None:  # opening the write end succeeds once the worker reads the pipe: it is busy
            try:
                writer = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the worker did not start"
                time.sleep(0.01)
        with watching([worker]) as watched:
            process.kill()  # as `kill -9` or the out-of-memory killer would end a server
            process.wait()
            # The worker ends with its server, though its job never finishes.
            assert all_ended(watched, within=PATIENCE_SECONDS), "the decoding worker outlived its server"
    finally:
        if writer is not None:
            os.close(writer)
        if process.poll() is None:
            process.kill()
