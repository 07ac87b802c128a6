"""optpipe's own decode step for Llama-family decoders: fused projections, no per-step bookkeeping.

Why: with transformers' forward inside a compiled CUDA graph, an 8B model decoded at ~64 % of the
memory roofline on an H100 (docs/gpu.md). The remaining time is spent in the shape of the step, not
in the weights: q/k/v and gate/up are separate GEMVs over the same input, a causal mask over the
whole static cache is rebuilt every step, and cache bookkeeping adds small kernels. This step
(the gpt-fast design, written over the model's own modules) does per layer: norm, one fused
q|k|v GEMV, RoPE from a precomputed table, an in-place KV write, masked attention over the static
cache, o-proj, norm, one fused gate|up GEMV, the activation and down-proj.

Weights are fused without a copy: q/k/v (and gate/up) rows are concatenated once and the model's
own Linear weights become views of the fused tensor, so the transformers model keeps working
(evaluation runs on the same storage) and memory does not grow. Quantized weights (tensor
subclasses, bnb layers) cannot be concatenated; those projections call their modules instead.

Supported: Llama, Mistral (full attention), Qwen2, Qwen3 (q/k norms). Anything else uses
`optpipe.runtime.decode.StaticGraphDecoder` (transformers' forward in the graph).
"""

from __future__ import annotations

from typing import Any

import torch

FUSED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def unsupported_reason(model, max_cache_len: int) -> str | None:
    """Why the fused step cannot run this model (None when it can)."""
    cfg = model.config
    if cfg.model_type not in FUSED_MODEL_TYPES:
        return f"model type {cfg.model_type!r} (fused step supports {', '.join(FUSED_MODEL_TYPES)})"
    layer_types = getattr(cfg, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        return "sliding-window layers"
    window = getattr(cfg, "sliding_window", None)
    uses_window = getattr(cfg, "use_sliding_window", cfg.model_type == "mistral")
    if window and uses_window and window < max_cache_len:
        return f"sliding window {window} < max_cache_len {max_cache_len}"
    if getattr(cfg, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    return None


def _plain(weight) -> bool:
    return type(weight.data) is torch.Tensor and weight.dtype in (torch.float32, torch.float16, torch.bfloat16)


def fuse_linears(linears) -> tuple[Any, Any] | None:
    """Concatenate the rows of Linear layers that read the same input; their weights (and biases)
    become views of the result. Returns (weight, bias|None), or None when a weight is quantized.
    A second decoder over the same model fuses again (one copy, the old storage is freed): cheap
    next to compiling, and never stale after the model's weights were swapped or cast."""
    if not all(_plain(lin.weight) for lin in linears):
        return None
    has_bias = [lin.bias is not None for lin in linears]
    if any(has_bias) and not all(has_bias):
        return None
    # Normal tensors even when called under inference_mode: the model trains/evaluates on them later.
    with torch.inference_mode(False), torch.no_grad():
        weight = torch.cat([lin.weight.data for lin in linears], 0)
        bias = torch.cat([lin.bias.data for lin in linears], 0) if has_bias[0] else None
        row = 0
        for lin in linears:
            n = lin.weight.shape[0]
            lin.weight = torch.nn.Parameter(weight[row : row + n], requires_grad=False)
            if bias is not None:
                lin.bias = torch.nn.Parameter(bias[row : row + n], requires_grad=False)
            row += n
    return weight, bias


# Projections whose weight is at least this large go to cuBLAS through an op Inductor cannot look
# into. With coordinate-descent tuning Inductor turns one-row matmuls into reductions and fuses them
# with their neighbours: a win for q|k|v and gate|up (many outputs), but the long-K, few-output ones
# (o_proj, down_proj of an 8B model) then ran at half the bandwidth of cuBLAS's split-K kernels
# (H200 profile, bench/results/2026-11-25-h200-run4.*). Small weights stay fusable: there, launch
# count matters more than bandwidth.
CUBLAS_MIN_WEIGHT_BYTES = 8 << 20
_cublas_linear = None


def cublas_linear():
    """`optpipe::linear`, F.linear as an opaque custom op (registered once, on first use)."""
    global _cublas_linear
    if _cublas_linear is None:
        import torch.nn.functional as F

        # Explicit schema: this module's postponed annotations are strings, which infer_schema refuses.
        @torch.library.custom_op("optpipe::linear", mutates_args=(), schema="(Tensor x, Tensor weight) -> Tensor")
        def linear(x, weight):
            return F.linear(x, weight)

        @linear.register_fake
        def _(x, weight):
            return x.new_empty(*x.shape[:-1], weight.shape[0])

        _cublas_linear = linear
    return _cublas_linear


def tinygemm_weight(linear) -> tuple | None:
    """The plain tensors of a torchao tile-packed int4 weight: (qdata, scale_and_zero, group, out, in).

    Why: a compiled step that calls the module runs the weight's tensor subclass, and Dynamo then
    checks guards on all of them in Python before every replay. For the 224 int4 projections of an 8B
    model that took 6.2 ms of host time per step against 3.3 ms of GPU work (H200 profile,
    bench/results/2026-11-27-h200-int4-gap): the step was host-bound at half of bf16's speed. The
    step calls the same tinygemm kernel on the weight's own tensors instead (no copy)."""
    w = linear.weight
    if linear.bias is not None or type(w).__name__ != "Int4TilePackedTo4dTensor" or getattr(w, "act_pre_scale", None) is not None:
        return None
    return (w.qdata, w.scale_and_zero, w.block_size[-1], w.shape[0], w.shape[1])


def fuse_int4(linears) -> tuple | None:
    """One tinygemm weight for projections that read the same input (q|k|v, gate|up), or None.

    Why: each tinygemm call is a node of the step's CUDA graph and a GEMV too small to fill the GPU;
    gpt-fast runs q|k|v as one call. The packed layout tiles output rows in blocks of 8, so packed
    weights concatenate along their first dim; the modules' own `qdata` become views of the result
    (no second copy of the 4-bit data). Group scales/zeros ([K/group, N, 2]) concatenate along N,
    which no view can share: those are copied (~3 % of the int4 bytes, accounted in memory)."""
    weights = [tinygemm_weight(lin) for lin in linears]
    if any(w is None for w in weights):
        return None
    if len({(w[2], w[4], w[0].shape[1:]) for w in weights}) != 1 or any(w[0].shape[0] * 8 != w[3] for w in weights):
        return None  # different groups / in-features, or padded rows that would land mid-output
    with torch.inference_mode(False), torch.no_grad():
        qdata = torch.cat([w[0] for w in weights], 0)
        scale_and_zero = torch.cat([w[1] for w in weights], 1)
        row = 0
        for lin, w in zip(linears, weights):
            n = w[0].shape[0]
            lin.weight.qdata = qdata[row : row + n]
            row += n
    sizes = tuple(w[3] for w in weights)
    return (qdata, scale_and_zero, weights[0][2], sum(sizes), weights[0][4], sizes)


def tinygemm_linear(x, weight: tuple):
    """y = x W^T for a `tinygemm_weight` tuple; what torchao's linear for that tensor does."""
    import torch.nn.functional as F

    qdata, scale_and_zero, group, n_out, k_in = weight[:5]
    shape = x.shape
    a = x.reshape(-1, shape[-1]).to(torch.bfloat16)
    k_pad = -(-k_in // 1024) * 1024  # torchao packs in-features padded to a multiple of 1024
    if k_pad != k_in:
        a = F.pad(a, (0, k_pad - k_in))
    y = torch.ops.aten._weight_int4pack_mm(a, qdata, group, scale_and_zero)[:, :n_out]
    return y.reshape(*shape[:-1], n_out).to(x.dtype)


def _large(weight) -> bool:
    return weight.numel() * weight.element_size() >= CUBLAS_MIN_WEIGHT_BYTES


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _LayerTensors(torch.nn.Module):
    """One layer's tensors the step reads (KV cache, fused weights, int4 packs) as module buffers.

    Why buffers: before every replay Dynamo checks a guard per tensor the step reads. For tensors kept
    in Python lists, dicts and tuples that check runs per tensor (the 8B int4 step: 0.8 ms of host time
    per step, against 0.06 ms for the same weights held by modules; H200, bench/results/
    2026-11-27-h200-int4-gap); tensors in a module's buffer dict are guarded by the dict's version tag.
    Registering a tensor as a buffer copies nothing."""

    def __init__(self):
        super().__init__()
        self.int4_meta: dict[str, tuple] = {}

    def hold(self, name: str, tensor) -> None:
        self.register_buffer(name, tensor, persistent=False)

    def hold_int4(self, name: str, weight: tuple | None) -> None:
        if weight is None:
            return
        qdata, scale_and_zero, *meta = weight  # meta: group, out, in (and the parts' sizes when fused)
        self.hold(f"{name}_qdata", qdata)
        self.hold(f"{name}_scale_zero", scale_and_zero)
        self.int4_meta[name] = tuple(meta)

    def int4(self, name: str) -> tuple | None:
        """The `tinygemm_weight` tuple of projection `name`, or None when it is not torchao int4."""
        meta = self.int4_meta.get(name)
        if meta is None:
            return None
        return (getattr(self, f"{name}_qdata"), getattr(self, f"{name}_scale_zero"), *meta)


class FusedStep(torch.nn.Module):
    """The model's layers re-driven by a compact step; holds the fused weights and the KV cache.
    A module (with the model's layers and per-layer `_LayerTensors` as children) so that the compiled
    step reads every tensor through module buffers: see `_LayerTensors`."""

    def __init__(
        self, model, max_cache_len: int, batch: int, attention: str = "matmul", cublas: str = "out", fuse_int4: bool = True
    ):
        super().__init__()
        self.fuse_int4 = fuse_int4
        self.model = model
        self.attention = attention  # "matmul" (cuBLAS) or "reduce" (Inductor reductions)
        self.cublas = cublas  # "out": o/down projections to cuBLAS; "all": also q|k|v, gate|up, lm_head
        cfg = model.config
        self.inner = model.model
        self.layers = torch.nn.ModuleList(self.inner.layers)  # the model's own modules, not copies
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.scale = self.head_dim**-0.5
        self.max_cache_len = max_cache_len
        self.batch = batch
        device = next(model.parameters()).device
        dtype = self.inner.embed_tokens.weight.dtype
        with torch.inference_mode(False), torch.no_grad():  # usable inside and outside inference_mode
            self._allocate(model, max_cache_len, batch, device, dtype)
        self._mark_static()

    def _allocate(self, model, max_cache_len, batch, device, dtype) -> None:
        # Kept as lists too (introspection, tests); the step reads them through self.held.
        self.qkv, self.gate_up = [], []
        # Per layer, the torchao int4 projections as plain tensors (resolved here, outside the traced
        # step, so the step never touches a weight's tensor subclass).
        self.int4: list[dict[str, tuple]] = []
        self.held = torch.nn.ModuleList()
        shape = (batch, self.n_kv, max_cache_len, self.head_dim)
        for layer in self.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.qkv.append(fuse_linears([attn.q_proj, attn.k_proj, attn.v_proj]))
            self.gate_up.append(fuse_linears([mlp.gate_proj, mlp.up_proj]))
            named = {"q": attn.q_proj, "k": attn.k_proj, "v": attn.v_proj, "o": attn.o_proj}
            named |= {"gate": mlp.gate_proj, "up": mlp.up_proj, "down": mlp.down_proj}
            held = _LayerTensors()
            if self.fuse_int4:  # before reading the per-projection tensors: their qdata become views
                held.hold_int4("qkv", fuse_int4([attn.q_proj, attn.k_proj, attn.v_proj]))
                held.hold_int4("gate_up", fuse_int4([mlp.gate_proj, mlp.up_proj]))
            self.int4.append({k: w for k, lin in named.items() if (w := tinygemm_weight(lin)) is not None})
            for name, fused in (("qkv", self.qkv[-1]), ("gate_up", self.gate_up[-1])):
                held.hold(f"{name}_weight", fused[0] if fused else None)
                held.hold(f"{name}_bias", fused[1] if fused else None)
            for name, weight in self.int4[-1].items():
                held.hold_int4(name, weight)
            held.hold("k_cache", torch.zeros(shape, device=device, dtype=dtype))
            held.hold("v_cache", torch.zeros(shape, device=device, dtype=dtype))
            self.held.append(held)
            if device.type == "cuda":
                # Hand the replaced per-projection blocks back layer by layer: otherwise the caching
                # allocator keeps them and reserved memory grows by the fused size (H100: 25.3 GB
                # reserved for 16.1 GB of 8B weights), which a memory cap would count.
                torch.cuda.empty_cache()
        self.head_int4 = tinygemm_weight(model.lm_head)
        self.head = _LayerTensors()
        self.head.hold_int4("lm_head", self.head_int4)
        positions = torch.arange(max_cache_len, device=device).unsqueeze(0)
        probe = torch.zeros(1, 1, self.head_dim, device=device, dtype=dtype)
        cos, sin = self.inner.rotary_emb(probe, positions)
        self.register_buffer("cos", cos[0].contiguous(), persistent=False)  # [S, head_dim]
        self.register_buffer("sin", sin[0].contiguous(), persistent=False)
        self.register_buffer("positions", torch.arange(max_cache_len, device=device), persistent=False)

    @property
    def k_cache(self) -> list:
        return [held.k_cache for held in self.held]

    @property
    def v_cache(self) -> list:
        return [held.v_cache for held in self.held]

    def _mark_static(self) -> None:
        """CUDA graphs copy every input that is not marked static on each replay; pin ours."""
        for t in self.buffers():
            torch._dynamo.mark_static_address(t)

    # -- pieces of a layer -----------------------------------------------------------------
    def _project(self, fused, modules, h, int4=(), fused_int4=None):
        import torch.nn.functional as F

        weight, bias = fused
        if weight is not None:
            if self.cublas == "all" and bias is None and _large(weight):
                out = cublas_linear()(h, weight)
            else:
                out = F.linear(h, weight, bias)
            sizes = [m.weight.shape[0] for m in modules]
            return out.split(sizes, dim=-1)
        if fused_int4 is not None:  # split sizes from the pack, not m.weight: that would guard the subclass
            return tinygemm_linear(h, fused_int4).split(fused_int4[5], dim=-1)
        if int4 and all(w is not None for w in int4):
            return tuple(tinygemm_linear(h, w) for w in int4)
        return tuple(m(h) for m in modules)

    def _heads(self, i, layer, h, cos, sin):
        """q [B,H,T,D], k and v [B,KV,T,D], RoPE applied."""
        attn = layer.self_attn
        b, t, _ = h.shape
        held = self.held[i]
        int4 = tuple(held.int4(n) for n in ("q", "k", "v"))
        fused = (held.qkv_weight, held.qkv_bias)
        q, k, v = self._project(fused, (attn.q_proj, attn.k_proj, attn.v_proj), h, int4, held.int4("qkv"))
        q = q.view(b, t, self.n_heads, self.head_dim)
        k = k.view(b, t, self.n_kv, self.head_dim)
        if getattr(attn, "q_norm", None) is not None:  # Qwen3
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = v.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        return q, k, v

    def _mlp(self, i, layer, h):
        mlp = layer.mlp
        held = self.held[i]
        int4 = (held.int4("gate"), held.int4("up"))
        fused = (held.gate_up_weight, held.gate_up_bias)
        gate, up = self._project(fused, (mlp.gate_proj, mlp.up_proj), h, int4, held.int4("gate_up"))
        return self._out(mlp.down_proj, mlp.act_fn(gate) * up, held.int4("down"))

    def _out(self, linear, x, int4=None):
        """An output projection (o_proj, down_proj, lm_head): tinygemm for torchao int4 weights,
        cuBLAS for large plain weights, else the module."""
        if int4 is not None:
            return tinygemm_linear(x, int4)
        w = linear.weight
        if linear.bias is None and _plain(w) and _large(w):
            return cublas_linear()(x, w)
        return linear(x)

    # -- the two entry points --------------------------------------------------------------
    def step(self, token, pos):
        """One token per sequence at position `pos` (a 1-element tensor); returns the argmax."""
        b = token.shape[0]
        x = self.inner.embed_tokens(token)
        cos, sin = self.cos[pos].view(1, 1, 1, -1), self.sin[pos].view(1, 1, 1, -1)
        visible = (self.positions <= pos).view(1, 1, 1, -1)
        group = self.n_heads // self.n_kv
        for i, layer in enumerate(self.layers):
            q, k, v = self._heads(i, layer, layer.input_layernorm(x), cos, sin)
            kc, vc = self.held[i].k_cache, self.held[i].v_cache
            kc.index_copy_(2, pos, k)
            vc.index_copy_(2, pos, v)
            qg = q.reshape(b, self.n_kv, group, self.head_dim)
            if self.attention == "reduce":  # products + sums: Inductor fuses them into its own kernels
                scores = (qg.unsqueeze(-2).float() * kc.unsqueeze(2).float()).sum(-1) * self.scale
            else:
                scores = torch.matmul(qg, kc.transpose(-1, -2)) * self.scale  # [B, KV, G, S]
            scores = scores.masked_fill(~visible, float("-inf"))
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
            if self.attention == "reduce":
                out = (probs.unsqueeze(-1) * vc.unsqueeze(2).float()).sum(-2).to(q.dtype)
            else:
                out = torch.matmul(probs.to(q.dtype), vc)
            out = out.reshape(b, 1, self.n_heads * self.head_dim)
            x = x + self._out(layer.self_attn.o_proj, out, self.held[i].int4("o"))
            x = x + self._mlp(i, layer, layer.post_attention_layernorm(x))
        head, head_int4 = self.model.lm_head, self.head.int4("lm_head")
        h = self.inner.norm(x)
        logits = self._out(head, h, head_int4) if self.cublas == "all" or head_int4 else head(h)
        return logits.argmax(-1)

    def prefill(self, ids):
        """The prompt from position 0: fills the cache, returns the argmax after the last token."""
        import torch.nn.functional as F

        t = ids.shape[1]
        x = self.inner.embed_tokens(ids)
        cos, sin = self.cos[:t].view(1, 1, t, -1), self.sin[:t].view(1, 1, t, -1)
        for i, layer in enumerate(self.layers):
            q, k, v = self._heads(i, layer, layer.input_layernorm(x), cos, sin)
            self.held[i].k_cache[:, :, :t] = k
            self.held[i].v_cache[:, :, :t] = v
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale, enable_gqa=self.n_kv != self.n_heads)
            x = x + self._out(layer.self_attn.o_proj, out.transpose(1, 2).reshape(ids.shape[0], t, -1), self.held[i].int4("o"))
            x = x + self._mlp(i, layer, layer.post_attention_layernorm(x))
        h = self.inner.norm(x[:, -1:])
        head_int4 = self.head.int4("lm_head")
        logits = tinygemm_linear(h, head_int4) if head_int4 else self.model.lm_head(h)
        return logits.argmax(-1)


class FusedStepDecoder:
    """Decoder interface (reset / prefill / step) over `FusedStep`, compiled like the static decoder:
    the step with `mode` (reduce-overhead = CUDA graphs), the prefill with mode default."""

    name = "fused-step-compiled"

    def __init__(
        self,
        model,
        max_cache_len: int,
        mode: str | None = "reduce-overhead",
        inductor_tuning: bool = True,
        attention: str = "matmul",
        cublas: str = "out",
        compile_prefill: bool | None = None,
        fuse_int4: bool = True,
    ):
        reason = unsupported_reason(model, max_cache_len)
        if reason:
            raise ValueError(f"the fused decode step cannot run this model: {reason}")
        self.model = model
        self.max_cache_len = max_cache_len
        self.mode = mode
        self.inductor_tuning = inductor_tuning
        self.attention = attention
        self.cublas = cublas
        # Compiling the prefill of an int4 model cost 104 s of warm-up for 2 % more prefill speed (the
        # tinygemm calls are opaque to Inductor; H200, 8B shape, bench/results/2026-11-27-h200-int4-fused):
        # by default only plain-weight models get a compiled prefill.
        if compile_prefill is None:
            compile_prefill = not any(tinygemm_weight(m) is not None for m in model.modules() if isinstance(m, torch.nn.Linear))
        self.compile_prefill = compile_prefill
        self.fuse_int4 = fuse_int4
        self.core: FusedStep | None = None
        self.pos = None
        if mode is None:
            self.name = "fused-step"

    def _build(self, batch: int) -> None:
        self.core = FusedStep(self.model, self.max_cache_len, batch, self.attention, self.cublas, self.fuse_int4)
        if self.mode is None:
            self._step, self._prefill = self.core.step, self.core.prefill
            return
        if self.inductor_tuning:
            import torch._inductor.config as inductor_config

            # gpt-fast's settings: with coordinate descent tuning Inductor turns one-row matmuls
            # into tuned reductions it can fuse with the norm before them.
            inductor_config.coordinate_descent_tuning = True
            inductor_config.triton.unique_kernel_names = True
        self._step = torch.compile(self.core.step, mode=self.mode, fullgraph=True, dynamic=False)
        compiled = self.compile_prefill
        self._prefill = torch.compile(self.core.prefill, mode="default", dynamic=None) if compiled else self.core.prefill

    def reset(self, batch: int, max_len: int) -> None:
        if max_len > self.max_cache_len:
            raise ValueError(f"sequence of {max_len} tokens exceeds the static cache ({self.max_cache_len}); raise max_cache_len")
        if self.core is None or self.core.batch != batch:
            self._build(batch)
        # Stale entries beyond the current position are masked out; no need to zero the cache.
        self.pos = torch.zeros(1, dtype=torch.long, device=self.core.positions.device)

    def prefill(self, ids):
        n = ids.shape[1]
        token = self._prefill(ids)
        self.pos.fill_(n)
        return token.clone()

    def step(self, token):
        if self.mode and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()
        nxt = self._step(token, self.pos)
        self.pos.add_(1)
        return nxt.clone()  # the graph's output buffer is overwritten by the next replay
