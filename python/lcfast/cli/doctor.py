"""`lcfast doctor`: what is installed and what lcfast will use."""

from __future__ import annotations

import importlib
import json
import os
import platform

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
    return rep


#: what lcfast cannot work without (triton and datasets are optional: CPU twins, hf: inputs only)
REQUIRED = ("rust_extension", "torch", "numpy", "tokenizers", "safetensors", "pandas", "scipy", "pyarrow", "matplotlib")


def failed_checks(rep: dict) -> list[str]:
    """The required components of a `doctor_report` that are missing or failed to load."""
    return [k for k in REQUIRED if str(rep.get(k, "missing")).startswith(("FAILED", "missing"))]


def doctor(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Versions, Rust extension, torch/triton, CUDA and Triton-interpreter status.

    Exits 1 when a required component is missing or fails to load (also with --json)."""
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
        import sys

        print(f"lcfast: error: doctor: {', '.join(failed)} failed (see above)", file=sys.stderr)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("doctor")(doctor)
