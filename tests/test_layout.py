"""The package's arrows point one way: cli → face → jobs → stages → records/config (docs/architecture.md).

Every ``import`` and ``from … import`` statement of every module under ``src/satqkd`` (module level
and inside functions) is resolved to the satqkd module it names and checked against the layers below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import satqkd

PKG_DIR = Path(satqkd.__file__).resolve().parent

#: Layers, lowest first. A module may import its own layer or a lower one, never a higher one.
#: ``support`` is the shared plumbing the jobs and the stages both use (reports, raw files, limits, …);
#: it stands beside the stages (either may import the other), under the jobs.
STAGE_PACKAGES = ("sky", "quantum", "postprocess", "protocol", "keys", "ingest")
BASE_MODULES = ("config", "records")
CLI_MODULES = ("cli", "__main__")
#: Tools of the command line that run a job (the install-time kernel warm-up runs one pass).
CLI_TOOLS = ("warmup",)

#: Known sideways edges below the jobs, each with its reason (an edge to a job or the CLI is never listed here).
ALLOWED = {
    ("satqkd.config", "satqkd.sky.tle"): "the configuration checks a TLE with sky/tle.py's pure column parser",
}

RANK = {"base": 0, "support": 1, "stage": 1, "job": 3, "face": 4, "cli": 5}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(mod: str) -> str:
    parts = mod.split(".")
    if parts == ["satqkd"]:
        return "face"
    top = parts[1]
    if top == "jobs":
        return "job"
    if top in STAGE_PACKAGES:
        return "stage"
    if top in BASE_MODULES:
        return "base"
    if top in CLI_MODULES or top in CLI_TOOLS:
        return "cli"
    return "support"


def face_source(name: str) -> str:
    """The module behind ``satqkd.<name>``: a lazy name's module, the eager ones' (``__version__`` is the face's own)."""
    if name in satqkd._LAZY:
        return satqkd._LAZY[name][0]
    if name in satqkd._SUBMODULES:
        return f"satqkd.{name}"
    if name == "__version__":
        return "satqkd.config"  # a constant of the face itself, no import below it
    return getattr(satqkd, name).__module__


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG_DIR.rglob("*.py"))}


def imported_modules(mod: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """The satqkd modules ``mod`` imports, with the line of each import."""
    is_pkg = path.name == "__init__.py"
    package = mod if is_pkg else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "satqkd"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "satqkd":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in known:  # ``from satqkd.jobs import campaign``: the sub-module
                    out.append((node.lineno, sub))
                elif target == "satqkd":  # a name of the face: where it really comes from
                    out.append((node.lineno, face_source(a.name)))
                else:
                    out.append((node.lineno, target))
    return out


def upward_arrows() -> list[str]:
    mods = all_modules()
    known = set(mods)
    bad = []
    for mod, path in mods.items():
        for line, target in imported_modules(mod, path, known):
            here, there = layer(mod), layer(target)
            if RANK[there] > RANK[here] and (mod, target) not in ALLOWED:
                bad.append(f"{path.relative_to(PKG_DIR.parent)}:{line}: {mod} ({here}) imports {target} ({there})")
    return bad


def test_no_upward_import_in_the_package():
    assert upward_arrows() == []
    assert all(RANK[layer(t)] < RANK["job"] for _, t in ALLOWED)


def test_the_jobs_live_in_the_jobs_package():
    mods = all_modules()
    for job in ("pass_simulation", "one_pass", "relay", "campaign", "relay_campaign", "plan", "kme_demo"):
        assert f"satqkd.jobs.{job}" in mods
    for gone in ("satqkd.relay_job", "satqkd.campaign", "satqkd.relay_campaign", "satqkd.pass_simulation"):
        assert gone not in mods


def test_bigger_jobs_run_a_pass_through_the_one_pass_job():
    mods = all_modules()
    known = set(mods)
    for job in ("satqkd.jobs.relay", "satqkd.jobs.campaign", "satqkd.jobs.plan"):
        targets = {t for _, t in imported_modules(job, mods[job], known)}
        assert "satqkd.jobs.one_pass" in targets, job
    # the campaign no longer stands on the relay job to run one pass
    targets = {t for _, t in imported_modules("satqkd.jobs.campaign", mods["satqkd.jobs.campaign"], known)}
    assert "satqkd.jobs.relay" not in targets


def test_keys_import_no_job():
    mods = all_modules()
    known = set(mods)
    for mod, path in mods.items():
        if mod.startswith("satqkd.keys"):
            assert not [t for _, t in imported_modules(mod, path, known) if layer(t) in ("job", "face", "cli")], mod


@pytest.mark.parametrize("src, mod, expect", [
    ("from ..jobs.one_pass import run_pass\n", "satqkd.keys.kme", "satqkd.jobs.one_pass"),
    ("from ..cli import main\n", "satqkd.sky.orbit", "satqkd.cli"),
    ("import satqkd.jobs.plan\n", "satqkd.quantum.sampler", "satqkd.jobs.plan"),
    ("def f():\n    from ...jobs import campaign\n", "satqkd.postprocess.reconciliation.ldpc", "satqkd.jobs.campaign"),
])
def test_the_walker_sees_an_upward_arrow(tmp_path, src, mod, expect):
    """The check itself: an upward import (also one inside a function) is resolved to the job/CLI module."""
    path = tmp_path / "m.py"
    path.write_text(src)
    targets = [t for _, t in imported_modules(mod, path, set(all_modules()))]
    assert targets == [expect]
    assert RANK[layer(expect)] > RANK[layer(mod)]
