"""Make torchao's gemlite int4 weights (UIntxBitPackedTensor) save and load as safetensors.

torchao 0.17 (de)serializes only the tensor types on an allow-list in
`torchao.prototype.safetensors.safetensors_utils`; its gemlite type is a prototype and not on it,
so `save_pretrained` fails with "Unsupported tensor type". Its fields are plain tensors (packed
data, scales, zero points) plus a JSON-able dict of gemlite metadata, which that machinery already
handles, so adding the class to the list is all it takes. Saving and loading must both call
`register()` first; optpipe's quantize pass and loader do.
"""

from __future__ import annotations


def register() -> None:
    from torchao.prototype.quantization.uintx.uintx_bit_packed_tensor import UIntxBitPackedTensor
    from torchao.prototype.safetensors import safetensors_utils as allow

    name = UIntxBitPackedTensor.__name__
    allow.ALLOWED_CLASSES.setdefault(name, UIntxBitPackedTensor)
    if name not in allow.ALLOWED_TENSORS_SUBCLASSES:
        allow.ALLOWED_TENSORS_SUBCLASSES.append(name)
