"""Write core/data/keymap_stems.json.gz: for every architecture, the stems of the names that can resolve in
it (core.architectures.keymap_stems), so detection skips models no module name can match without parsing
their key maps. Run after changing any lorakeys_*/shapes_* data file; tests/test_formats.py checks it.

    python scripts/build_keymap_stems.py
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.architectures import ARCHITECTURES, DATA, keymap_stems  # noqa: E402


def main() -> None:
    stems = {a.id: keymap_stems(a) for a in ARCHITECTURES.values()}
    text = json.dumps(stems, indent=0, sort_keys=True).encode()
    with open(DATA / "keymap_stems.json.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(text)
    print(f"{sum(map(len, stems.values()))} stems for {len(stems)} architectures")


if __name__ == "__main__":
    main()
