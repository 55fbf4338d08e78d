"""Tiny random-weight interrogation models in the real layouts, written where the catalog puts
the real ones: models/BLIP (BLIP caption weights + BERT vocab.txt), models/CLIP (CLIP weights),
models/deepbooru (a WD14-style ONNX tagger + its selected_tags.csv)."""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

# A BERT-style vocab: the special tokens BLIP's tokenizer needs, then a few words.
WORDS = ["a", "picture", "of", "red", "blue", "square", "circle", "on", "white", "background", "cat", "dog", "the", "with", "and"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# (name, category) rows of the tagger: 9 rating, 0 general, 4 character (the WD14 csv's codes).
TAGS = [("general", 9), ("sensitive", 9), ("1girl", 0), ("red_hair", 0), ("smile", 0), ("solo", 0), ("hatsune_miku", 4),
        ("^_^", 0), ("looking_(at)_viewer", 0), ("blue_sky", 0)]


def write_blip(folder: Path, name: str = "blip-image-captioning-large.safetensors", seed: int = 0) -> Path:
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + WORDS
    (folder / "bert-base-uncased-vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    torch.manual_seed(seed)
    config = BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1, image_size=32, patch_size=16),
        text_config=dict(vocab_size=len(vocab) + 2, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1,
                         max_position_embeddings=64, encoder_hidden_size=32, bos_token_id=len(vocab), sep_token_id=3, pad_token_id=0,
                         eos_token_id=3),
    )
    return _save(BlipForConditionalGeneration(config), folder / name)


def write_clip(folder: Path, name: str = "clip-vit-large-patch14.safetensors", seed: int = 0) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPModel

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1, max_position_embeddings=77),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1, image_size=32, patch_size=16),
        projection_dim=16,
    )
    return _save(CLIPModel(config), folder / name)


def _save(model, path: Path) -> Path:
    """The model's own safetensors file (as the hub has it), under the catalog's file name."""
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        model.save_pretrained(tmp)
        shutil.move(str(Path(tmp) / "model.safetensors"), path)
    return path


def write_tagger(folder: Path, scores: list[float], stem: str = "wd-v1-4-moat-tagger-v2", size: int = 32) -> Path:
    """An ONNX graph in WD14's interface (NHWC float32 BGR 0-255 in, sigmoid scores out) whose
    output is `scores` exactly, whatever the picture, so the expected tags are known."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    assert len(scores) == len(TAGS)
    logits = np.log(np.clip(np.array(scores, dtype=np.float32), 1e-6, 1 - 1e-6) / (1 - np.clip(np.array(scores, dtype=np.float32), 1e-6, 1 - 1e-6)))
    nodes = [
        helper.make_node("ReduceMean", ["input_1:0", "axes"], ["mean"], keepdims=0),  # (batch,) from the picture: a real data path
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Unsqueeze", ["nothing", "one"], ["column"]),
        helper.make_node("Add", ["column", "logits"], ["raw"]),
        helper.make_node("Sigmoid", ["raw"], ["predictions_sigmoid"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_wd14",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", len(TAGS)])],
        [numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "axes"), numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
         numpy_helper.from_array(np.array([1], dtype=np.int64), "one"), numpy_helper.from_array(logits[None, :], "logits")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = folder / f"{stem}.onnx"
    onnx.save(model, str(path))
    with open(folder / f"{stem}.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag_id", "name", "category", "count"])
        for index, (name, category) in enumerate(TAGS):
            writer.writerow([1000 + index, name, category, 100 - index])
    return path
