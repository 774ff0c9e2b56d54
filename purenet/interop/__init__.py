"""Weights in and out of reference implementations, as safetensors files under the reference's own
tensor names: GPT-2 and BERT as Hugging Face `transformers` stores them, ViT likewise, ResNet-18 as
torchvision's `state_dict()`. One file per family; no torch or transformers is needed (safetensors'
numpy API). Every `load_*` checks names, shapes and dtypes, naming the first tensor that does not fit
and listing missing and unknown ones; every `save_*` writes atomically (a temporary file, then a
rename), so a model fine-tuned here loads into the reference.
"""

from purenet.interop.bert import BERT, bert_config, load_bert, save_bert
from purenet.interop.gpt2 import GPT2, TINY_GPT2, gpt2_config, load_gpt2, save_gpt2
from purenet.interop.resnet import RESNET18, load_resnet18, resnet18_config, save_resnet18
from purenet.interop.vit import VIT, load_vit, save_vit, vit_config
from purenet.interop._tensors import Entry, Family, from_tensors, to_tensors

__all__ = ["load_gpt2", "save_gpt2", "gpt2_config", "TINY_GPT2", "load_bert", "save_bert", "bert_config",
           "load_vit", "save_vit", "vit_config", "load_resnet18", "save_resnet18", "resnet18_config",
           "GPT2", "BERT", "VIT", "RESNET18", "Entry", "Family", "from_tensors", "to_tensors"]
