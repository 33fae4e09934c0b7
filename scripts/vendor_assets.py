"""Fetch the page's front-end assets from the npm registry and check them against the manifest.

    python scripts/vendor_assets.py            # re-download every package, verify, write files
    python scripts/vendor_assets.py --check    # only compare the committed files (no network)
    python scripts/vendor_assets.py --record   # after bumping a version: record the new sha256s

`npm pack NAME@VERSION` downloads the tarball (the registry's ordinary client); its sha512 must
equal the manifest's `integrity` (the registry's own `dist.integrity`), and every extracted file
its recorded sha256. The files land under processor/static/vendor/, committed, so the processor
serves them itself and the page, /docs and /redoc work on a host without internet.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

VENDOR = Path(__file__).resolve().parents[1] / "processor" / "static" / "vendor"
MANIFEST = VENDOR / "manifest.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def check(vendor: Path = VENDOR) -> list[str]:
    """Problems of the committed files: missing, changed, or not in the manifest."""
    manifest = load_manifest(vendor / "manifest.json")
    problems: list[str] = []
    listed = {"manifest.json"}
    for package in manifest["packages"]:
        for entry in package["files"].values():
            listed.add(entry["to"])
            path = vendor / entry["to"]
            if not path.is_file():
                problems.append(f"{entry['to']}: missing")
            elif sha256(path.read_bytes()) != entry["sha256"]:
                problems.append(f"{entry['to']}: sha256 differs from the manifest")
    for path in sorted(vendor.rglob("*")):
        name = path.relative_to(vendor).as_posix()
        if path.is_file() and name not in listed:
            problems.append(f"{name}: not in the manifest")
    return problems


def _npm_pack(name: str, version: str, into: Path) -> bytes:
    done = subprocess.run(
        ["npm", "pack", "--silent", "--pack-destination", str(into), f"{name}@{version}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"npm pack {name}@{version} failed: {done.stderr.strip()}")
    return (into / done.stdout.strip().splitlines()[-1]).read_bytes()


def fetch(record: bool) -> None:
    manifest = load_manifest()
    with tempfile.TemporaryDirectory() as tmp:
        for package in manifest["packages"]:
            name, version = package["name"], package["version"]
            tarball = _npm_pack(name, version, Path(tmp))
            integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
            if integrity != package["integrity"]:
                raise SystemExit(f"{name}@{version}: tarball integrity {integrity} differs from "
                                 f"the manifest's {package['integrity']}")  # fmt: skip
            with tarfile.open(Path(tmp) / f"{name}-{version}.tgz") as tar:
                for member, entry in package["files"].items():
                    extracted = tar.extractfile(member)
                    if extracted is None:
                        raise SystemExit(f"{name}@{version}: {member} is not a file")
                    data = extracted.read()
                    if record:
                        entry["sha256"] = sha256(data)
                    elif sha256(data) != entry["sha256"]:
                        raise SystemExit(f"{name}@{version}: {member} sha256 differs")
                    target = VENDOR / entry["to"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
            print(f"vendor: {name}@{version} ok ({len(package['files'])} files)")
    if record:
        MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare committed files only")
    mode.add_argument("--record", action="store_true", help="record new sha256s (version bump)")
    args = parser.parse_args()
    if not args.check:
        fetch(record=args.record)
    problems = check()
    for problem in problems:
        print(f"vendor: {problem}", file=sys.stderr)
    if problems:
        raise SystemExit(1)
    print("vendor: every file matches processor/static/vendor/manifest.json")


if __name__ == "__main__":
    main()
