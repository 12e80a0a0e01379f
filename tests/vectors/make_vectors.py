#!/usr/bin/python3
"""Writes NAME.msgpack beside each NAME.json of this directory: the JSON
value packed with python3-msgpack (use_bin_type=True), map keys in the
order the JSON file lists them. Run it after editing a .json, then run
the tests (tests/python/test_py_vectors.py, unit.vectors): they check that
the C and Python encoders make exactly these bytes and that a live jobqd
sends messages of the same shape. See README.md."""
import json
import pathlib

import msgpack


def main() -> None:
    """Packs every vector of this directory."""
    here = pathlib.Path(__file__).resolve().parent
    for src in sorted(here.glob("*.json")):
        value = json.loads(src.read_text())
        src.with_suffix(".msgpack").write_bytes(msgpack.packb(value, use_bin_type=True))


if __name__ == "__main__":
    main()
