"""`lcfast doctor`: what is installed and what lcfast will use."""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from pathlib import Path

import typer
from rich.console import Console

#: how to install an optional component that is missing (what it is needed for)
INSTALL_HINTS = {
    "transformers": "pip install 'lcfast[hf]' (transformers models: collect MODEL_DIR or hf:ORG/NAME)",
    "datasets": "pip install 'lcfast[hf]' (Hugging Face datasets: tokenize hf:…)",
    "triton": "pip install 'lcfast[triton]' (GPU kernels; on CPU the torch twins run)",
}


def _version(mod: str) -> str:
    try:
        m = importlib.import_module(mod)
    except Exception as e:  # noqa: BLE001 - doctor reports every failure
        hint = INSTALL_HINTS.get(mod)
        return f"missing ({type(e).__name__})" + (f": {hint}" if hint else "")
    return str(getattr(m, "__version__", "present"))


def _importable_name(entry: Path) -> str | None:
    """The top-level module name `entry` provides when its folder is on sys.path: a regular package
    (a folder with __init__.py), a .py file or an extension module. Folders without __init__.py are
    at most namespace portions, which never win over an installed module: None."""
    if entry.is_dir():
        return entry.name if (entry / "__init__.py").is_file() and entry.name.isidentifier() else None
    stem, dot, ext = entry.name.partition(".")
    if dot and stem.isidentifier() and (ext == "py" or ext.endswith(("so", "pyd"))):
        return stem
    return None


def shadowed_modules(folder: str | os.PathLike = ".") -> list[str]:
    """Entries of `folder` that are imported in place of an installed distribution's module or a
    standard-library module whenever `folder` is on sys.path first (`python -m …`, `python -c`,
    `python -`, `torchrun -m` started there), as "NAME (owner)". A root-level `kernels/` package
    made every transformers >= 5.25 model fail to build (it imports Hugging Face's `kernels`)."""
    import importlib.metadata

    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return []
    owners = importlib.metadata.packages_distributions()
    out = []
    for entry in entries:
        name = _importable_name(entry)
        if name is None:
            continue
        if name in owners:
            dists = sorted(set(owners[name]))
            owner = ", ".join(f"{d} {_dist_version(d)}" for d in dists)
        elif name in getattr(sys, "stdlib_module_names", ()):
            owner = "the standard library"
        else:
            continue
        out.append(f"{entry.name}{'/' if entry.is_dir() else ''} shadows {name} ({owner})")
    return out


def _dist_version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def doctor_report() -> dict:
    """Environment facts as a JSON-able dict (also what `lcfast doctor --json` prints)."""
    rep: dict = {"python": platform.python_version(), "platform": platform.platform()}
    import lcfast

    rep["lcfast"] = lcfast.__version__
    try:
        from lcfast import _core

        rep["rust_extension"] = f"ok ({_core.__version__})"
    except Exception as e:  # noqa: BLE001
        rep["rust_extension"] = f"FAILED: {e}"
    for mod in ("torch", "triton", "numpy", "tokenizers", "safetensors", "pandas", "scipy", "transformers", "datasets"):
        rep[mod] = _version(mod)
    for mod in ("pyarrow", "matplotlib"):
        rep[mod] = _version(mod)
    try:
        import torch

        rep["cuda_available"] = bool(torch.cuda.is_available())
        rep["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        rep["torch_threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        rep["cuda_available"] = False
        rep["cuda_device"] = None
    rep["triton_interpret"] = os.environ.get("TRITON_INTERPRET") == "1"
    rep["current_folder"] = os.getcwd()
    shadows = shadowed_modules(".")
    rep["shadowed_by_current_folder"] = "; ".join(shadows) if shadows else "none"
    return rep


#: what lcfast cannot work without (triton and datasets are optional: CPU twins, hf: inputs only)
REQUIRED = ("rust_extension", "torch", "numpy", "tokenizers", "safetensors", "pandas", "scipy", "pyarrow", "matplotlib")


def failed_checks(rep: dict) -> list[str]:
    """The required components of a `doctor_report` that are missing or failed to load, and
    "shadowed_by_current_folder" when the current folder hides an installed or standard module."""
    failed = [k for k in REQUIRED if str(rep.get(k, "missing")).startswith(("FAILED", "missing"))]
    if rep.get("shadowed_by_current_folder", "none") != "none":
        failed.append("shadowed_by_current_folder")
    return failed


def doctor(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Versions, Rust extension, torch/triton, CUDA and Triton-interpreter status, and any module
    the current folder shadows.

    Exits 1 when a required component is missing or fails to load, or when a file or package in the
    current folder would be imported in place of an installed or standard module by `python -m`,
    `python -c` or `torchrun -m` started here (also with --json)."""
    rep = doctor_report()
    failed = failed_checks(rep)
    if json_out:
        print(json.dumps({**rep, "failed": failed}, indent=2))
    else:
        from rich.text import Text

        from lcfast.tables import print_table

        rows = [[k, Text(str(v), style="red" if k in failed else "")] for k, v in rep.items()]
        print_table(Console(), "lcfast doctor", ["component", "status"], rows, fold=["status"])
    if failed:
        parts = [k for k in failed if k != "shadowed_by_current_folder"]
        why = [f"{', '.join(parts)} failed (see above)"] if parts else []
        if len(parts) < len(failed):
            why.append(f"the current folder shadows installed modules ({rep['shadowed_by_current_folder']}): "
                       "python -m/-c/torchrun -m started here import them instead; rename them or start elsewhere")
        print(f"lcfast: error: doctor: {'; '.join(why)}", file=sys.stderr)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("doctor")(doctor)
