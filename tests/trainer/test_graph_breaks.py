"""The model imports without ``torch._dynamo``; compiling puts the graph breaks back.

``torch.compiler.disable`` at import time made ``import dino.models`` import dynamo
(1.1 s here), before a warm trainer could start its attention check beside the rest of
its warm-up (``dino.warm.AttentionCheck``). The fused attention's functions are marked
with ``dino.models.graph_breaks`` instead and disabled only when ``train.compile``
compiles. Run in a fresh interpreter: the test process imported dynamo long ago.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

CODE = textwrap.dedent("""
    import sys
    import dino.engine, dino.models, dino.train, dino.warm
    assert "torch._dynamo" not in sys.modules, "the training path imported torch._dynamo"
    from dino.models import graph_breaks, ms_deform_attn, ms_deform_attn_triton
    plain = ms_deform_attn_triton.ms_deform_attn_fused, ms_deform_attn.fused_usable
    assert not hasattr(plain[0], "_torchdynamo_orig_callable")
    from dino.config.model import ModelConfig
    from dino.models import build_dino
    from dino.models.compiled import compile_hot_modules
    model, _, _ = build_dino(ModelConfig(backbone="resnet_tiny", hidden_dim=32, nheads=4, enc_layers=1,
                                         dec_layers=1, dim_feedforward=64, num_queries=10, num_select=10), 3)
    compile_hot_modules(model, backend="eager")  # lazy: nothing is traced yet
    assert ms_deform_attn_triton.ms_deform_attn_fused._torchdynamo_orig_callable is plain[0]
    assert ms_deform_attn.fused_usable._torchdynamo_orig_callable is plain[1]
    assert graph_breaks.apply() == []  # once only
    print("ok")
""")


def test_model_imports_without_dynamo_and_compiling_restores_the_graph_breaks():
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
