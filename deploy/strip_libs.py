"""Strip the symbol tables from a folder's shared libraries, keeping each one only if it still loads.

`python deploy/strip_libs.py /opt/venv` (the Dockerfile's serving-venv stage, which has binutils).
Wheels ship libraries with symbol tables nothing reads at run time (~65 MB over the serving venv, most
in llvmlite and uvloop). Libraries that auditwheel rewrote with patchelf can come out of `strip`
unloadable ("ELF load command address/offset not page-aligned"), so every stripped file is dlopen'ed in
a fresh interpreter and the original is put back when that fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _loads(path: Path) -> bool:
    probe = "import ctypes, sys; ctypes.CDLL(sys.argv[1])"
    return subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True).returncode == 0


def _strip(path: Path) -> tuple[int, int, bool]:
    """(size before, size after, stripped) for one library."""
    size = path.stat().st_size
    if not _loads(path):  # cannot tell whether stripping breaks it: leave it alone
        return size, size, False
    backup = path.with_name(path.name + ".unstripped")
    shutil.copy2(path, backup)
    stripped = subprocess.run(["strip", "--strip-unneeded", str(path)], capture_output=True).returncode == 0
    if stripped and _loads(path):
        backup.unlink()
        return size, path.stat().st_size, True
    os.replace(backup, path)
    return size, size, False


def strip_folder(folder: Path) -> tuple[int, int, list[str]]:
    """(bytes before, bytes after, libraries kept as they were)."""
    paths = [p for p in sorted(folder.rglob("*.so*")) if p.is_file() and not p.is_symlink()]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(_strip, paths))
    kept = [str(path) for path, (_, _, stripped) in zip(paths, results, strict=True) if not stripped]
    return sum(r[0] for r in results), sum(r[1] for r in results), kept


if __name__ == "__main__":
    before, after, kept = strip_folder(Path(sys.argv[1]))
    saved = (before - after) / 1e6
    sys.stdout.write(f"stripped {saved:.1f} MB of {before / 1e6:.1f} MB; left unchanged: {len(kept)}\n")
    for path in kept:
        sys.stdout.write(f"  {path}\n")
