"""Build the sdist and the wheel the way they ship (`make dist`), with a labextension that matches its sources.

    python scripts/build_dist.py [--out dist] [--from-sdist DIR]

1. The JupyterLab extension is rebuilt (`jlpm install && jlpm build:prod` in labextension/, Node >= 20)
   whenever its inputs changed since the last build, by content hash (stamp in .cache/labextension/).
   The wheel build itself never rebuilds it when the output exists (pyproject: skip-if-exists, so a
   packager without Node can build from the sdist); this step is what keeps that output fresh.
2. `python -m build --sdist --wheel` builds both from the source tree in isolated environments
   (the build-system requirements come from PyPI or pip's cache).
3. `--from-sdist DIR` also unpacks the sdist and builds a wheel from it into DIR, as a downstream
   packager does; `same_files()` compares two wheels file by file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABEXT = ROOT / "labextension"
LABEXT_OUT = ROOT / "jupyter_llm" / "labextension"
STAMP = ROOT / ".cache" / "labextension" / "inputs.sha256"
LABEXT_FILES = ["package.json", "yarn.lock", "tsconfig.json", "install.json", ".yarnrc.yml"]
LABEXT_DIRS = ["src", "style"]


def files_hash(paths: list[Path], base: Path = ROOT) -> str:
    """sha256 over the relative names and contents of `paths` (order-independent)."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.relative_to(base).as_posix()):
        h.update(p.relative_to(base).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def labextension_inputs() -> list[Path]:
    found = [LABEXT / name for name in LABEXT_FILES if (LABEXT / name).is_file()]
    for d in LABEXT_DIRS:
        found += [p for p in (LABEXT / d).rglob("*") if p.is_file()]
    return found


def _bin_path() -> dict[str, str]:
    """The environment with this interpreter's scripts (jlpm, jupyter-builder) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def ensure_labextension(*, force: bool = False, log=print) -> Path:
    """Rebuild jupyter_llm/labextension when labextension/ changed since the last build; return it."""
    digest = files_hash(labextension_inputs())
    built = (LABEXT_OUT / "static" / "style.js").is_file() and (LABEXT_OUT / "package.json").is_file()
    if force or not built or not STAMP.is_file() or STAMP.read_text().strip() != digest:
        if shutil.which("node") is None:
            raise SystemExit("building the labextension needs Node >= 20 on PATH")
        log("building the labextension (jlpm install && jlpm build:prod) ...")
        env = _bin_path()
        subprocess.run(["jlpm", "install"], cwd=LABEXT, env=env, check=True)
        subprocess.run(["jlpm", "build:prod"], cwd=LABEXT, env=env, check=True)
        STAMP.parent.mkdir(parents=True, exist_ok=True)
        STAMP.write_text(digest + "\n")
    want = json.loads((LABEXT / "package.json").read_text())["version"]
    got = json.loads((LABEXT_OUT / "package.json").read_text())["version"]
    if want != got:
        raise SystemExit(f"stale labextension build: {got} in {LABEXT_OUT}, {want} in labextension/package.json")
    return LABEXT_OUT


def _build(args: list[str], src: Path, out: Path) -> None:
    """`python -m build` in isolated build environments; uv installs them when it is there (same wheels, faster)."""
    import importlib.util
    installer = ["--installer", "uv"] if importlib.util.find_spec("uv") or shutil.which("uv") else []
    subprocess.run([sys.executable, "-m", "build", *installer, *args, "--outdir", str(out), str(src)],
                   check=True, env=_bin_path())


def build(out: Path, *, log=print) -> tuple[Path, Path]:
    """sdist and wheel of the source tree into `out` (emptied first); returns (sdist, wheel)."""
    ensure_labextension(log=log)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _build(["--sdist", "--wheel"], ROOT, out)
    return only(out, "*.tar.gz"), only(out, "*.whl")


def wheel_from_sdist(sdist: Path, out: Path) -> Path:
    """Unpack `sdist` in a scratch dir and build a wheel from it into `out`, as a packager would."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="jupyter-llm-sdist-") as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        (src,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        _build(["--wheel"], src, out)
    return only(out, "*.whl")


def only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"expected one {pattern} in {folder}, found {[p.name for p in found]}")
    return found[0]


def wheel_files(wheel: Path) -> dict[str, str]:
    """{archive name: sha256 of its bytes} for every file in a wheel."""
    with zipfile.ZipFile(wheel) as z:
        return {i.filename: hashlib.sha256(z.read(i)).hexdigest() for i in z.infolist() if not i.is_dir()}


def same_files(a: Path, b: Path) -> list[str]:
    """Differences between two wheels' files (names and contents); empty when they match."""
    fa, fb = wheel_files(a), wheel_files(b)
    diff = [f"only in {a.parent.name}/{a.name}: {n}" for n in sorted(fa.keys() - fb.keys())]
    diff += [f"only in {b.parent.name}/{b.name}: {n}" for n in sorted(fb.keys() - fa.keys())]
    diff += [f"differs: {n}" for n in sorted(fa.keys() & fb.keys()) if fa[n] != fb[n]]
    return diff


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "dist"), help="output folder (emptied first)")
    ap.add_argument("--from-sdist", metavar="DIR", help="also build a wheel from the sdist into DIR and compare")
    args = ap.parse_args(argv)
    sdist, wheel = build(Path(args.out))
    print(f"sdist: {sdist}\nwheel: {wheel}")
    if args.from_sdist:
        again = wheel_from_sdist(sdist, Path(args.from_sdist))
        diff = same_files(wheel, again)
        print(f"wheel from sdist: {again}: " + ("same files" if not diff else "\n  ".join(["DIFFERENT", *diff])))
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
