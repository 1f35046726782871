"""Build the `debian` corpus: long descriptions of Debian 12 ("bookworm") packages, labelled by section.

A second labelled corpus for the text model, made only from what `apt-get` fetches (no dataset
download): the archive's package index (`Packages`: section, debtags, source package) joined with its
English descriptions (`Translation-en`) on `Description-md5`.

    apt-get update -o Acquire::Languages=en        # once: fetches Translation-en beside Packages
    python benchmarks/corpora/debian_packages.py --out data/debian

writes `data/debian/{train,test}.jsonl.gz` (`{"id", "text", "label"}`: the section) and
`data/debian-tags/{train,test}.jsonl.gz` (`{"id", "text", "labels"}`: the package's topical debtags,
a multi-label corpus), plus `build.json` with the sha256 of the index files it read and the counts.

Choices, and why:
* One document per *source* package (the binary named like its source, else the first by name):
  `libfoo1`, `libfoo-dev` and `libfoo-doc` share most of their text but sit in different sections,
  which would make relevance contradict the text.
* The text is the synopsis and long description only; the package name is left out (it gives the
  section away: `python3-*`, `lib*-perl`).
* Sections with fewer than `--min-section` documents are dropped; descriptions shorter than
  `--min-words` words are dropped.
* The split is by a hash of the source name (20% test), so it does not depend on the order of the
  index and never changes when the index gains or loses other packages.
* Topical debtag facets only (`field`, `game`, `interface` and `role` say little about the subject):
  see TOPICAL_FACETS.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

LISTS = "/var/lib/apt/lists"
PACKAGES = "*_debian_dists_bookworm_main_binary-amd64_Packages*"
TRANSLATIONS = "*_debian_dists_bookworm_main_i18n_Translation-en*"
TOPICAL_FACETS = ("field", "works-with", "use", "game", "scope", "devel", "protocol", "sound", "x11")
TEST_SHARE = 0.2


def index_file(lists: Path, pattern: str, hint: str) -> Path:
    found = sorted(p for p in map(Path, glob.glob(str(lists / pattern))) if not p.name.endswith(".diff"))
    if not found:
        raise SystemExit(f"no {pattern} under {lists}: {hint}")
    return found[0]


def read_index(path: Path) -> str:
    """An apt index file as text, whatever apt compressed it with (apt-helper decompresses any)."""
    return subprocess.run(
        ["/usr/lib/apt/apt-helper", "cat-file", str(path)], check=True, capture_output=True, text=True
    ).stdout


def stanzas(text: str) -> Iterator[dict[str, str]]:
    """Deb822 paragraphs: field -> value, continuation lines joined with newlines."""
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + line[1:]
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            yield fields


def description_text(description: str) -> str:
    """Synopsis and body of a Description-en field: ' .' paragraph separators become blank lines."""
    lines = [("" if line.strip() == "." else line) for line in description.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def in_test(source: str) -> bool:
    return int(hashlib.sha256(source.encode()).hexdigest()[:8], 16) / 2**32 < TEST_SHARE


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lists", type=Path, default=Path(LISTS), help="apt's lists folder")
    parser.add_argument("--out", type=Path, default=Path("data/debian"), help="folder of the section corpus")
    parser.add_argument("--min-section", type=int, default=100, help="smallest section kept (documents)")
    parser.add_argument("--min-words", type=int, default=12, help="shortest description kept (words)")
    args = parser.parse_args()
    hint = "run `apt-get update -o Acquire::Languages=en` first"
    packages_path = index_file(args.lists, PACKAGES, hint)
    translations_path = index_file(args.lists, TRANSLATIONS, hint)
    descriptions = {
        s["Description-md5"]: description_text(s["Description-en"])
        for s in stanzas(read_index(translations_path))
        if "Description-md5" in s and "Description-en" in s
    }
    by_source: dict[str, list[dict[str, str]]] = {}
    for s in stanzas(read_index(packages_path)):
        if "Package" in s and "Section" in s and s.get("Description-md5") in descriptions:
            source = s.get("Source", s["Package"]).split(" ")[0]
            by_source.setdefault(source, []).append(s)
    documents = []
    for source, binaries in sorted(by_source.items()):
        named = [b for b in binaries if b["Package"] == source]
        chosen = named[0] if named else min(binaries, key=lambda b: b["Package"])
        text = descriptions[chosen["Description-md5"]]
        if len(re.findall(r"\w\w+", text)) < args.min_words:
            continue
        tags = [t.strip() for t in chosen.get("Tag", "").replace("\n", " ").split(",") if t.strip()]
        topical = sorted({t for t in tags if t.split("::")[0] in TOPICAL_FACETS and "::TODO" not in t})
        section = chosen["Section"].split("/")[-1]
        documents.append({"id": source, "text": text, "label": section, "labels": topical})
    sections = Counter(d["label"] for d in documents)
    kept = [d for d in documents if sections[d["label"]] >= args.min_section]
    tag_counts = Counter(t for d in kept for t in d["labels"])
    summary: dict[str, object] = {
        "sources": {
            path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in (packages_path, translations_path)
        },
        "documents": len(kept),
        "sections": dict(sorted(Counter(d["label"] for d in kept).items())),
    }
    tags_out = args.out.parent / f"{args.out.name}-tags"
    for folder, kind in ((args.out, "label"), (tags_out, "labels")):
        folder.mkdir(parents=True, exist_ok=True)
        for split in ("train", "test"):
            rows = [d for d in kept if in_test(d["id"]) == (split == "test")]
            if kind == "labels":  # tags seen at least 20 times, documents with at least one
                rows = [{**d, "labels": [t for t in d["labels"] if tag_counts[t] >= 20]} for d in rows]
                rows = [d for d in rows if d["labels"]]
            with gzip.open(folder / f"{split}.jsonl.gz", "wt", encoding="utf-8") as f:
                for d in rows:
                    f.write(json.dumps({"id": d["id"], "text": d["text"], kind: d[kind]}) + "\n")
            summary[f"{folder.name}_{split}"] = len(rows)
    (args.out / "build.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
