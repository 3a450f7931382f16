"""Compile every kernel variant the launchers use for a CUDA target — no GPU needed.

    python -m lcfast.kernels.compile_check [--arch 90] [--json PATH]

Triton can lower a kernel all the way to a cubin (its bundled ptxas) for a named GPUTarget
without a driver, so on a CPU-only machine this catches what the interpreter cannot: unsupported
ops or dtypes in the compiled path, shared-memory overflows, and register spills (read from
``ptxas -v``). Must run without TRITON_INTERPRET=1 (interpreted kernels cannot be compiled).
Exit status 1 when a variant fails to compile.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time


def _variants():
    from lcfast.kernels import class_stats as CS
    from lcfast.kernels import ncc as NC
    from lcfast.kernels import pairwise as PW

    cs_t = dict(h_ptr="*bf16", stride_h="i32", perm_ptr="*i32", lab_ptr="*i32", shift_ptr="*fp64",
                stride_shift="i32", ctr_ptr="*fp64", stride_ctr="i32", counts_ptr="*fp64", sums_ptr="*fp64",
                stride_sums="i32", sq_ptr="*fp64", B="i32", D="i32")
    br, bd, nw = CS._default_blocks(1024)
    for seg in (True, False):
        for shift, ctr in ((True, False), (False, True)):
            yield (f"class_stats {'segmented' if seg else 'atomic'} {'shift' if shift else 'centers'}",
                   CS._class_stats_kernel, cs_t,
                   dict(HAS_PERM=seg, HAS_SHIFT=shift, HAS_CENTERS=ctr, SEGMENTED=seg, BLOCK_R=br, BLOCK_D=bd), nw)
    pw_t = dict(m_ptr="*fp32", stride_m="i32", sqn_ptr="*fp64", sqx_ptr="*fp64", var_ptr="*fp64", tiles_ptr="*i32",
                part_ptr="*fp64", row_cdnv_ptr="*fp64", row_cos_ptr="*fp64", row_cnt_ptr="*fp64", a_ptr="*fp64",
                s2_ptr="*fp64", C="i32", D="i32", power="fp32", tol="fp32", thr="fp32")
    for prec in PW.PRECISIONS:
        cfg = PW._default_config(prec)
        t = dict(pw_t, m_ptr="*bf16" if prec == "bf16" else "*fp32")
        # (power, raw dots, debiased CDNV): the canonical default (measurements always ask for the
        # debiased CDNV), a general power, the paper profile's variant, and the plain sweep
        variants = ((1, False, True), (0, False, True), (2, True, True), (1, False, False))
        for pm, dots, deb in (variants if prec == "ieee" else variants[::2]):
            yield (f"pairwise {prec} pow_mode={pm}{' dots' if dots else ''}{' debiased' if deb else ''}",
                   PW._pairwise_kernel, t,
                   dict(PREC="ieee" if prec == "bf16" else prec, POW_MODE=pm, OP_BF16=prec == "bf16", UPCAST=False,
                        DOTS=dots, DEB=deb, BLOCK=cfg["block"], BLOCK_K=cfg["block_k"]), cfg["num_warps"])
    ex_t = dict(m64_ptr="*fp64", stride_m64="i32", sqx_ptr="*fp64", var_ptr="*fp64", tiles_ptr="*i32",
                part_ptr="*fp64", row_cdnv_ptr="*fp64", row_cos_ptr="*fp64", row_cnt_ptr="*fp64", a_ptr="*fp64",
                s2_ptr="*fp64", C="i32", D="i32", power="fp32", tol="fp32")
    blk = min(PW._default_config("ieee")["block"], 64)
    yield ("pairwise exact tiles debiased", PW._exact_tile_kernel, ex_t, dict(POW_MODE=0, DEB=True, BLOCK=blk),
           8 if blk >= 64 else 4)
    nc_t = dict(h_ptr="*bf16", stride_h="i32", B="i32", mu_ptr="*fp32", stride_mu="i32", musq_ptr="*fp32", K="i32",
                w_ptr="*fp32", stride_w="i32", b_ptr="*fp32", C="i32", D="i32", ncc_out="*i64", lm_out="*i64",
                rmu_ptr="*fp32", stride_rmu="i32", rmusq_ptr="*fp32", K2="i32", kid_ptr="*i64", rid_ptr="*i64",
                all_out="*i64")
    for prec in ("ieee", "tf32x3", "tf32", "bf16"):
        cfg = NC._default_config(prec)
        t = dict(nc_t, mu_ptr="*bf16", w_ptr="*bf16", rmu_ptr="*bf16") if prec == "bf16" else nc_t
        for rest in (False, True):  # True: NC4 over all C means too (the paper profile)
            yield (f"ncc {prec}{' all-classes' if rest else ''}", NC._ncc_kernel, t,
                   dict(HAS_BIAS=True, PREC="ieee" if prec == "bf16" else prec, OP_BF16=prec == "bf16", UPCAST=False,
                        HAS_REST=rest, BLOCK_B=cfg["block_b"], BLOCK_C=cfg["block_c"], BLOCK_K=cfg["block_k"]),
                   cfg["num_warps"])


def _ptxas_usage(ptx: str, arch: int) -> dict:
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        try:
            px = get_ptxas(arch)
        except TypeError:
            px = get_ptxas()
        path = getattr(px, "path", px)
        with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
            f.write(ptx)
        sm = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        r = subprocess.run([path, "-v", f"--gpu-name={sm}", f.name, "-o", os.devnull], capture_output=True, text=True)
        os.unlink(f.name)
        regs = re.search(r"Used (\d+) registers", r.stderr)
        spill = re.search(r"(\d+) bytes spill stores", r.stderr)
        return {"registers": int(regs.group(1)) if regs else None,
                "spill_bytes": int(spill.group(1)) if spill else None}
    except Exception as exc:  # noqa: BLE001 - usage numbers are a bonus
        return {"ptxas": f"unavailable ({type(exc).__name__})"}


def compile_all(arch: int = 90, only: str | None = None) -> list[dict]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", arch, 32)
    out = []
    for name, fn, types, consts, nw in _variants():
        if only and only not in name:
            continue
        sig = {n: ("constexpr" if n in consts else types[n]) for n in fn.arg_names}
        src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
        t0 = time.perf_counter()
        row = {"kernel": name, "num_warps": nw, "constexprs": consts}
        try:
            k = triton.compile(src, target=target, options=dict(num_warps=nw))
            row.update(ok=True, seconds=round(time.perf_counter() - t0, 1), shared_bytes=k.metadata.shared)
            row.update(_ptxas_usage(k.asm["ptx"], arch))
        except Exception as exc:  # noqa: BLE001
            row.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:500]}")
        out.append(row)
        print(f"{'ok  ' if row['ok'] else 'FAIL'} {name:<36} warps={nw:<2} "
              + (f"regs={row.get('registers')} spill={row.get('spill_bytes')} smem={row.get('shared_bytes')} "
                 f"({row.get('seconds')} s)" if row["ok"] else row["error"]), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lcfast.kernels.compile_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability ×10 (90 = H100/H200)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--only", default=None, help="compile only the variants whose name contains this text")
    a = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("compile_check: unset TRITON_INTERPRET (interpreted kernels cannot be compiled)", file=sys.stderr)
        return 2
    import triton

    print(f"triton {triton.__version__}, target sm_{a.arch}")
    rows = compile_all(a.arch, a.only)
    if a.json:
        from lcfast.io import atomic_write_text

        atomic_write_text(a.json, json.dumps({"triton": triton.__version__, "arch": a.arch, "kernels": rows},
                                             indent=2, default=str))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
