"""The model zoo: one file per model family, each a small config and a constructor returning a Layer.

Each public name is written once, in its import below; `__all__` is every name imported here. The
matched-set training of MiniDETR and MiniMaskFormer (`make_matched_step`, `fit_matched`, `make_predict`)
is training, not a model: it lives in `purenet.training` (`training/matched.py`)."""

from types import ModuleType as _ModuleType

from purenet.models.bert import BertConfig, bert, mask_tokens
from purenet.models.bert_mlm import BertMLMConfig, bert_mlm
from purenet.models.char_lm import CharLMConfig, char_lm
from purenet.models.clip import CLIPConfig, CLIPInput, clip, clip_loss, cnn_encoder
from purenet.models.detr import (BoxTruth, DETRConfig, DetrOutput, DetrTargets, average_precision, detections,
                                 detr_cost, detr_loss, detr_targets, mini_detr)
from purenet.models.gpt import GPTConfig, gpt
from purenet.models.lenet import CLASSIC, LeNetConfig, lenet5
from purenet.models.maskformer import (MaskFormerConfig, MaskFormerOutput, MaskTargets, SegmentTruth,
                                       maskformer_cost, maskformer_loss, maskformer_targets, mean_iou,
                                       mini_maskformer, segments, semantic_segmentation)
from purenet.models.mlp import mlp
from purenet.models.resnet import TORCHVISION_RESNET18, ResNetConfig, basic_block, resnet
from purenet.models.sampling import generate, sample_logits
from purenet.models.search import beam_search, greedy_search
from purenet.models.seq2seq import (LSTMSeq2SeqConfig, Seq2Seq, Seq2SeqInput, TransformerConfig, lstm_seq2seq,
                                    transformer_seq2seq)
from purenet.models.set_prediction import cnn_backbone, hungarian_match, hungarian_targets, query_decoder
from purenet.models.tied import tied_lm
from purenet.models.vit import ViTConfig, vit

__all__ = sorted(name for name, value in globals().items()
                 if not name.startswith("_") and not isinstance(value, _ModuleType))
