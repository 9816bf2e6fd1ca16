"""The fused kernels' machine code for an H100/H200 (sm_90), compiled here without a GPU.

What the interpreter tests cannot see: how Triton lowers the kernels. The backward
pass's atomic adds must compile to fire-and-forget reductions (``REDG``), not to
ordered atomics wrapped in GPU-wide fences and L1 invalidates (Triton's default
``acq_rel``, which made the backward kernel a third of a training step's GPU time),
and on 16-byte-aligned tensors the gathers and adds must be vectorised.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter

import pytest

triton = pytest.importorskip("triton")

from dino.models import ms_deform_attn_triton as msda  # noqa: E402

DINO = {"NH": 8, "HD": 32, "HD_P2": 32, "L": 4, "P": 4, "BLOCK_Q": msda.BLOCK_Q}


def _sass(kernel, signature: dict[str, str]) -> Counter:
    """Opcode counts of ``kernel`` compiled for sm_90 at DINO-4scale's constants, every
    pointer argument 16-byte aligned (as torch's allocations are and Triton assumes)."""
    from triton.backends.compiler import GPUTarget

    names = list(signature)
    signature = {**signature, **{k: "constexpr" for k in DINO}}
    pointers = {(names.index(k),): [["tt.divisibility", 16]] for k, v in signature.items() if v.startswith("*")}
    src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=DINO, attrs=pointers)
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": msda.NUM_WARPS})
    except Exception as exc:  # no ptxas for this triton build
        pytest.skip(f"cannot compile for sm_90 here: {exc}")
    nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    if not os.path.exists(nvdisasm):
        pytest.skip("triton ships no nvdisasm here")
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"msda_{kernel.__name__}_{os.getpid()}.cubin")
    with open(path, "wb") as f:
        f.write(compiled.asm["cubin"])
    try:
        text = subprocess.run([nvdisasm, "-c", path], capture_output=True, text=True, check=True).stdout
    finally:
        os.remove(path)
    return Counter(re.findall(r"\b((?:ATOMG|REDG|MEMBAR|CCTL|LDG)[\w.]*)", text))


def _bwd_signature(value: str) -> dict[str, str]:
    return {"value_ptr": value, "shapes_ptr": "*i32", "starts_ptr": "*i32", "loc_ptr": "*fp32", "attn_ptr": "*fp32",
            "grad_out_ptr": "*fp32", "grad_value_ptr": "*fp32", "grad_loc_ptr": "*fp32", "grad_attn_ptr": "*fp32",
            "n_tokens": "i32", "n_queries": "i32"}


@pytest.mark.parametrize("value", ["*bf16", "*fp32"])
def test_backward_scatters_with_unordered_vector_reductions(value):
    ops = _sass(msda._msda_bwd, _bwd_signature(value))
    fenced = {op: n for op, n in ops.items() if op.startswith(("ATOMG", "MEMBAR", "CCTL"))}
    assert not fenced, f"ordered atomics or fences in the backward kernel: {fenced}"
    reductions = {op: n for op, n in ops.items() if op.startswith("REDG")}
    # 4 corners x 4 points per level iteration, one 4-float vector per thread each
    assert reductions and all("F32x4" in op for op in reductions), ops


def test_forward_gathers_bf16_rows_in_16_byte_loads():
    ops = _sass(msda._msda_fwd, {"value_ptr": "*bf16", "shapes_ptr": "*i32", "starts_ptr": "*i32",
                                 "loc_ptr": "*fp32", "attn_ptr": "*fp32", "out_ptr": "*fp32",
                                 "n_tokens": "i32", "n_queries": "i32"})
    assert ops["LDG.E.128"] >= 16, ops  # 16 corners a level iteration, 8 bf16 channels a load
    assert not any(op.startswith(("ATOMG", "REDG", "MEMBAR")) for op in ops), ops
