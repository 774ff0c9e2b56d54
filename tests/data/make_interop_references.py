"""Writes the reference fixtures of tests/interop/: tiny random-initialised models of each architecture
in their reference implementation, as safetensors, and the reference's outputs, loss and parameter
gradients on fixed inputs, in float32 and float64.

Run once where torch and transformers are installed (not in CI, not in purenet's environment):

    python tests/data/make_interop_references.py            # writes tests/data/interop/*.safetensors
                                                           # and purenet/data/tiny_gpt2.safetensors

tests/interop/test_live.py imports `build` and `run` from here and compares live when torch is there.
The references: GPT-2 and BERT from Hugging Face `transformers` (`GPT2LMHeadModel`, `BertForMaskedLM`
with `BertModel`'s pooler), ViT likewise (`ViTForImageClassification`), ResNet-18 as torchvision's,
written out below as a plain torch module (torchvision's wheel does not import beside the CPU torch
this project measures with); attention through PyTorch's scaled_dot_product_attention, transformers'
default (its "eager" ViT takes the softmax in float32 even in a float64 model, which would make the
float64 reference inexact).
Every parameter and running statistic is redrawn (LayerNorm and BatchNorm scales near 1, not 1), so no
tensor is a constant that would hide a transposed copy.
"""

from __future__ import annotations

import copy
import json
import pathlib
import sys
import tempfile

import numpy as np
import torch
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "interop"
TINY_GPT2 = ROOT / "purenet" / "data" / "tiny_gpt2.safetensors"
ARCHITECTURES = ("gpt2", "bert", "vit", "resnet18")
VOCABULARY = 76  # the distinct characters of purenet's shipped Shakespeare: the tiny GPT-2 reads them


# ------------------------------------------------------------------------------ torchvision's ResNet


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock (expansion 1), the same submodule names."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nn.Module):
    """torchvision.models.resnet.ResNet with BasicBlocks: resnet18() is widths (64, 128, 256, 512), layers
    (2, 2, 2, 2), 1000 classes."""

    def __init__(self, widths=(64, 128, 256, 512), layers=(2, 2, 2, 2), num_classes=1000, in_channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = widths[0]
        for i, (width, count) in enumerate(zip(widths, layers)):
            blocks = []
            for b in range(count):
                blocks.append(BasicBlock(inplanes, width, 2 if i > 0 and b == 0 else 1))
                inplanes = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ------------------------------------------------------------------------------------ the models


def _randomize(model: nn.Module, generator: torch.Generator) -> None:
    """Redraw every parameter and running statistic: weights N(0, 0.3^2), vectors named weight (norm
    scales) 1 + N(0, 0.2^2), biases and running means N(0, 0.2^2), running variances in [0.5, 1.5)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim >= 2:
                p.copy_(0.3 * noise)
            elif name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(0.2 * noise)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=generator))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=generator))


def _sdpa(config):
    config._attn_implementation = "sdpa"
    return config


def build(arch: str):
    """-> (the float32 torch model, its config dict as the reference's config.json has it, the inputs
    {name: numpy array}) of one architecture, from fixed seeds."""
    import transformers

    generator = torch.Generator().manual_seed(ARCHITECTURES.index(arch))
    rng = np.random.default_rng(ARCHITECTURES.index(arch))
    torch.manual_seed(0)
    if arch == "gpt2":
        config = dict(vocab_size=VOCABULARY, n_positions=32, n_embd=16, n_layer=2, n_head=2, n_inner=32,
                      activation_function="gelu_new", layer_norm_epsilon=1e-5, resid_pdrop=0.0, embd_pdrop=0.0,
                      attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
        model = transformers.GPT2LMHeadModel(_sdpa(transformers.GPT2Config(**config)))
        inputs = {"ids": rng.integers(0, VOCABULARY, (2, 8))}
    elif arch == "bert":
        config = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                      hidden_act="gelu", layer_norm_eps=1e-12, max_position_embeddings=16, type_vocab_size=2,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)
        model = transformers.BertForMaskedLM(_sdpa(transformers.BertConfig(**config)))
        model.bert.pooler = transformers.models.bert.modeling_bert.BertPooler(model.config)  # BertModel's
        ids = rng.integers(1, 40, (2, 8))
        mask = np.ones((2, 8), bool)
        mask[1, 6:] = False  # padding
        chosen = (rng.random((2, 8)) < 0.4) & mask
        chosen[:, 1] = True
        inputs = {"ids": np.where(mask, ids, 0), "token_type_ids": (np.arange(8) >= 4).astype(np.int64)[None]
                  .repeat(2, 0), "attention_mask": mask, "labels": np.where(chosen, ids, -100),
                  "pooled_cotangent": rng.normal(size=(2, 16)).astype(np.float32)}
    elif arch == "vit":
        config = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                      hidden_act="gelu", layer_norm_eps=1e-12, image_size=8, patch_size=4, num_channels=3,
                      qkv_bias=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                      id2label={str(i): f"LABEL_{i}" for i in range(5)})
        model = transformers.ViTForImageClassification(_sdpa(transformers.ViTConfig(**config)))
        inputs = {"pixel_values": rng.normal(size=(2, 3, 8, 8)).astype(np.float32), "labels": rng.integers(0, 5, 2)}
    else:
        config = dict(widths=[2, 4, 4, 8], layers=[2, 2, 2, 2], num_classes=5, in_channels=3)
        model = ResNet(**config)
        # 40 x 40: layer4 sees 2 x 2 positions, 16 values per channel for BatchNorm's batch statistics (at
        # 1 x 1 its float32 outputs lose digits to both implementations); float16 values, stored as such.
        inputs = {"images": rng.normal(size=(4, 3, 40, 40)).astype(np.float16), "labels": rng.integers(0, 5, 4)}
    _randomize(model, generator)
    return model.float(), config, inputs


def saved_tensors(model: nn.Module) -> dict[str, np.ndarray]:
    """The tensors as the reference writes them to disk: `save_pretrained`'s file for transformers' models
    (each tied tensor once, and the checkpoint names, which transformers 5 renames in memory for some
    models, ViT among them), the `state_dict()` for torchvision's."""
    if isinstance(model, ResNet):
        return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    from safetensors.numpy import load_file

    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        return load_file(str(pathlib.Path(directory) / "model.safetensors"))


def disk_names(model: nn.Module, saved: dict[str, np.ndarray]) -> dict[str, str]:
    """{the name of each parameter in memory: its name on disk}, matched by value (every tensor is drawn
    at random, so values identify them; a tied parameter has the one name it is saved under)."""
    by_bytes = {(v.shape, v.tobytes()): name for name, v in saved.items()}
    names = {}
    for name, p in model.named_parameters():
        a = p.detach().cpu().numpy()
        names[name] = by_bytes[(a.shape, a.tobytes())]
    return names


def run(arch: str, model: nn.Module, inputs: dict, dtype) -> dict[str, np.ndarray]:
    """Forward, loss and backward of a copy of `model` in `dtype` -> {"logits", "loss", "grad/<name>", ...}."""
    names = disk_names(model, saved_tensors(model))
    model = copy.deepcopy(model).to(dtype)
    model.train(arch == "resnet18")  # BatchNorm in training: batch statistics, running statistics updated
    t = {k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}
    out = {}
    # The losses are written out (as the models' own `labels=` losses define them) because transformers
    # casts logits to float32 inside its loss functions, which would make the float64 run inexact.
    if arch == "gpt2":
        logits = model(input_ids=t["ids"]).logits  # next-token loss: logits[:, :-1] against ids[:, 1:]
        loss = total = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                   t["ids"][:, 1:].reshape(-1))
    elif arch == "bert":
        hidden = model.bert(input_ids=t["ids"], attention_mask=t["attention_mask"].long(),
                            token_type_ids=t["token_type_ids"])
        logits = model.cls(hidden.last_hidden_state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), t["labels"].reshape(-1),
                                           ignore_index=-100)
        total = loss + (hidden.pooler_output * t["pooled_cotangent"].to(dtype)).sum()
        out["pooled"] = hidden.pooler_output
    elif arch == "vit":
        logits = model(pixel_values=t["pixel_values"].to(dtype)).logits
        loss = total = nn.functional.cross_entropy(logits, t["labels"])
    else:
        logits = model(t["images"].to(dtype))  # float16 inputs are exact in float32 and float64
        loss = total = nn.functional.cross_entropy(logits, t["labels"])
    total.backward()
    out |= {"logits": logits, "loss": loss}
    out |= {f"grad/{names[name]}": p.grad for name, p in model.named_parameters()}
    if arch == "resnet18":
        out |= {f"running/{name}": b for name, b in model.named_buffers() if name.endswith(("_mean", "_var"))}
        model.eval()
        with torch.no_grad():
            out["eval_logits"] = model(t["images"].to(dtype))
    return {k: v.detach().cpu().numpy().copy() for k, v in out.items()}


def reference(arch: str, model: nn.Module, inputs: dict) -> dict[str, np.ndarray]:
    """The fixture of one architecture: inputs, and float32 and float64 results of the same float32
    parameters (cast up exactly)."""
    tensors = {f"input/{k}": np.ascontiguousarray(v) for k, v in inputs.items()}
    for dtype, label in ((torch.float32, "float32"), (torch.float64, "float64")):
        tensors |= {f"{label}/{k}": np.ascontiguousarray(v) for k, v in run(arch, model, inputs, dtype).items()}
    return tensors


def main() -> None:
    from safetensors.numpy import save_file

    OUT.mkdir(parents=True, exist_ok=True)
    for arch in ARCHITECTURES:
        model, config, inputs = build(arch)
        metadata = {"format": "pt", "config": json.dumps(config, sort_keys=True)}
        weights = OUT / f"{arch}.safetensors" if arch != "gpt2" else TINY_GPT2
        save_file(saved_tensors(model), str(weights), metadata=metadata)
        save_file(reference(arch, model, inputs), str(OUT / f"{arch}_reference.safetensors"),
                  metadata={"torch": torch.__version__, "generator": "tests/data/make_interop_references.py"})
        for path in (weights, OUT / f"{arch}_reference.safetensors"):
            path.chmod(0o644)
        print(arch, weights.relative_to(ROOT), weights.stat().st_size, "bytes;",
              (OUT / f"{arch}_reference.safetensors").stat().st_size, "bytes of reference")


if __name__ == "__main__":
    sys.exit(main())
