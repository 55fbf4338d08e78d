"""The training routes: LoRA runs (/sdapi/v1/train/lora...) and A1111's textual-inversion routes
(/sdapi/v1/create/embedding, /sdapi/v1/train/embedding). Every hostile body is refused before
anything is queued (no training runs here): traversal in run, LoRA and embedding names, numbers
far out of range, wrong types, unknown fields, and on a server shared on the network folders
outside the data folder (403). Nothing is written outside the data folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hostile.harness import API, Case, get, nothing_outside, post, raw_json, run_case

BIG = 10**30
# A folder of one captioned picture inside the data folder (made by `dataset` below), so a
# body reaches the checks after the folder's (the checkpoint, the LoRA name, the embedding).
DATASET = "train-data/one"
LORA = "train/lora"

NAME_TRAVERSALS = {
    "dotdot": "../../evil", "url-encoded": "..%2F..%2Fevil", "absolute": "{root}/evil", "backslashes": "..\\..\\evil",
    "nul-byte": "evil\x00", "long": "x" * 5000, "dot-only": "..",
}


def lora(id: str, body, expect="4xx", mentions: tuple[str, ...] = (), **kw) -> Case:
    return post(f"train-lora-{id}", LORA, body, expect=expect, mentions=mentions, **{"then": nothing_outside, **kw})


def ti(id: str, body, expect="4xx", mentions: tuple[str, ...] = (), **kw) -> Case:
    return post(f"train-embedding-{id}", "train/embedding", body, expect=expect, mentions=mentions, **{"then": nothing_outside, **kw})


def create(id: str, body, expect="4xx", mentions: tuple[str, ...] = (), **kw) -> Case:
    return post(f"create-embedding-{id}", "create/embedding", body, expect=expect, mentions=mentions, **{"then": nothing_outside, **kw})


CASES: list[Case] = [
    # --- POST /train/lora: refused before queueing
    lora("empty-body", {}, 400, (r"Dataset folder",)),
    lora("body-is-a-list", [DATASET], 422),
    lora("body-not-json", b"{not json", 422),
    lora("folder-null-means-none", {"train_data_dir": None}, 400, (r"Dataset folder",)),
    lora("folder-missing", {"train_data_dir": "no-such-folder"}, 400, (r"does not exist",)),
    lora("folder-without-pictures", {"train_data_dir": "models/Lora"}, 400, (r"no pictures",)),
    lora("folder-is-a-file", {"train_data_dir": "styles.csv"}, 400, (r"not a folder",)),
    lora("folder-number", {"train_data_dir": 5}, 400, (r"Dataset folder",)),
    lora("folder-list", {"train_data_dir": [DATASET]}, 400, (r"Dataset folder",)),
    lora("folder-nul-byte", {"train_data_dir": "train-data/\x00one"}, 400),
    lora("folder-10000-characters", {"train_data_dir": "x" * 10_000}, 400, (r"too long",)),  # was a 500 (OSError)
    lora("folder-url-encoded", {"train_data_dir": "..%2F..%2Fevil"}, 400, (r"does not exist",)),
    lora("unknown-field", {"train_data_dir": DATASET, "bogus": 1}, 400, (r"bogus",)),
    lora("network-dim-huge", {"train_data_dir": DATASET, "network_dim": BIG}, 400, (r"Rank",)),
    lora("network-dim-zero", {"train_data_dir": DATASET, "network_dim": 0}, 400, (r"Rank",)),
    lora("steps-huge", {"train_data_dir": DATASET, "max_train_steps": BIG}, 400, (r"Max steps",)),
    lora("steps-and-epochs-zero", {"train_data_dir": DATASET, "max_train_steps": 0, "max_train_epochs": 0}, 400, (r"steps|epochs",)),
    lora("steps-word", {"train_data_dir": DATASET, "max_train_steps": "many"}, 400, (r"Max steps",)),
    lora("batch-huge", {"train_data_dir": DATASET, "train_batch_size": BIG}, 400, (r"Batch size",)),
    lora("resolution-huge", {"train_data_dir": DATASET, "resolution": BIG}, 400, (r"resolution",)),
    lora("resolution-word", {"train_data_dir": DATASET, "resolution": "big"}, 400, (r"resolution",)),
    lora("seed-negative", {"train_data_dir": DATASET, "seed": -5}, 400, (r"seed",)),
    lora("learning-rate-nan", raw_json(f'{{"train_data_dir": "{DATASET}", "learning_rate": NaN}}'), "4xx", (r"Learning rate",)),
    lora("learning-rate-infinity", raw_json(f'{{"train_data_dir": "{DATASET}", "learning_rate": Infinity}}'), "4xx", (r"Learning rate",)),
    lora("buckets-upside-down", {"train_data_dir": DATASET, "min_bucket_reso": 1024, "max_bucket_reso": 256}, 400, (r"bucket",)),
    lora("scheduler-unknown", {"train_data_dir": DATASET, "lr_scheduler": "../../x"}, 400, (r"LR scheduler",)),
    lora("precision-unknown", {"train_data_dir": DATASET, "mixed_precision": "fp8"}, 400, (r"Mixed precision",)),
    lora("optimizer-unknown", {"train_data_dir": DATASET, "optimizer_type": "SGD; rm -rf"}, 400, (r"Optimizer",)),
    lora("shuffle-word", {"train_data_dir": DATASET, "shuffle_caption": "maybe"}, 400, (r"Shuffle caption",)),
    lora("checkpoint-unknown", {"train_data_dir": DATASET, "checkpoint": "nope"}, 400, (r"checkpoint", r"nope")),
    lora("checkpoint-traversal", {"train_data_dir": DATASET, "checkpoint": "../../../outside.safetensors"}, 400, (r"checkpoint",)),
    lora("checkpoint-absolute-decoy", {"train_data_dir": DATASET, "checkpoint": "{root}/outside.safetensors"}, 400, (r"checkpoint",)),
    lora("template-without-trigger", {"train_data_dir": DATASET, "caption_template": "[trigger], x"}, 400, (r"trigger",)),
    lora("lora-file-not-trained-here", {"train_data_dir": DATASET, "output_name": "glow"}, 400, (r"glow",)),
]
CASES += [lora(f"output-name-{label}", {"train_data_dir": DATASET, "output_name": value}, 400, (r"LoRA name",))
          for label, value in NAME_TRAVERSALS.items()]
CASES += [lora(f"folder-outside-local-{label}", {"train_data_dir": value}, 400, (r"does not exist|no pictures|not a folder",))
          for label, value in {"decoy-folder": "{root}/evil", "dotdot-decoy-folder": "../evil", "secret-file": "{root}/secret.txt"}.items()]

CASES += [
    # --- GET /train/lora, GET /train/lora/{name}, POST /train/lora/{name}/interrupt
    get("train-lora-list", LORA, expect=200),
    get("train-lora-list-junk-query", LORA, params={"name": "../../x"}, expect=200),
    get("train-lora-run-unknown", f"{LORA}/nope", expect=404, mentions=(r"nope",)),
    get("train-lora-run-url-encoded-traversal", f"{LORA}/..%2F..%2Fsecret.txt", expect=404),
    get("train-lora-run-dotdot", f"{LORA}/..", expect=404),
    get("train-lora-run-percent-dotdot", f"{LORA}/%2E%2E", expect=404),
    get("train-lora-run-nul", f"{LORA}/evil%00", expect=404),
    get("train-lora-run-long", f"{LORA}/{'x' * 5000}", expect=404),
    post("train-lora-interrupt-unknown", f"{LORA}/nope/interrupt", expect=404, mentions=(r"nope",)),
    post("train-lora-interrupt-url-encoded-traversal", f"{LORA}/..%2F..%2Fevil/interrupt", expect=404),
    post("train-lora-interrupt-dotdot", f"{LORA}/%2E%2E/interrupt", expect=404),
    post("train-lora-interrupt-with-body", f"{LORA}/nope/interrupt", {"force": True}, expect=404),
    Case("train-lora-run-with-delete", "DELETE", f"{API}/{LORA}/nope", expect=405),
    get("train-lora-interrupt-with-get", f"{LORA}/nope/interrupt", expect=405),

    # --- POST /create/embedding (A1111's fields; unknown ones are ignored, as A1111 does)
    create("empty-body", {}, 400, (r"name",)),
    create("body-is-a-list", ["x"], 422),
    create("unknown-field-only", {"bogus": 1}, 400, (r"name",)),
    create("name-exists", {"name": "hostile-existing"}, 409, (r"hostile-existing", r"exists")),
    create("vectors-huge", {"name": "hostile-new", "num_vectors_per_token": BIG}, 400, (r"vectors|num_vectors_per_token",)),
    create("vectors-zero", {"name": "hostile-new", "num_vectors_per_token": 0}, 400, (r"vectors|num_vectors_per_token",)),
    create("vectors-word", {"name": "hostile-new", "num_vectors_per_token": "many"}, 400, (r"num_vectors_per_token",)),
    create("vectors-nan", raw_json('{"name": "hostile-new", "num_vectors_per_token": NaN}'), "4xx", (r"num_vectors_per_token",)),
    create("name-number", {"name": 5, "num_vectors_per_token": 0}, 400),
    create("overwrite-word", {"name": "hostile-new", "overwrite_old": "maybe"}, 400, (r"overwrite_old",)),
]


def _made_inside_then_removed(hostile, response):
    """A1111 keeps only letters, digits and `._- ` of a name: the file is made inside the
    embeddings folder (under the cleaned name), never outside; it is removed again here."""
    path = Path(response.json()["info"].split("filename: ", 1)[1])
    folder = (hostile.data / "models" / "embeddings").resolve()
    assert path.resolve().parent == folder and path.exists(), f"the embedding was written to {path}, not into {folder}"
    path.unlink()
    hostile.assert_nothing_written_outside()


# Traversal in a new embedding's name is cleaned away (as A1111 does), so these are made inside;
# a name too long for a file and one with nothing left are refused.
CASES += [create(f"name-{label}", {"name": value}, 200, then=_made_inside_then_removed)
          for label, value in NAME_TRAVERSALS.items() if label not in ("long", "dot-only")]
CASES += [create("name-long", {"name": "x" * 5000}, 400, (r"name", r"200")), create("name-dot-only", {"name": ".."}, 400, (r"name",)),
          create("name-only-slashes", {"name": "/\\/"}, 400, (r"letters or digits",))]

CASES += [
    # --- POST /train/embedding (A1111's fields)
    ti("empty-body", {}, 400, (r"embedding_name|Embedding not selected",)),
    ti("body-is-a-list", ["x"], 422),
    ti("no-folder", {"embedding_name": "tinystyle"}, 400, (r"data_root",)),
    ti("unknown-embedding", {"embedding_name": "nope", "data_root": DATASET}, 404, (r"nope",)),
    ti("embedding-traversal", {"embedding_name": "../../../outside", "data_root": DATASET}, 404, (r"not found",)),
    ti("embedding-url-encoded", {"embedding_name": "..%2F..%2Foutside", "data_root": DATASET}, 404, (r"not found",)),
    ti("folder-missing", {"embedding_name": "tinystyle", "data_root": "no-such-folder"}, 400, (r"no-such-folder|exist",)),
    ti("folder-without-pictures", {"embedding_name": "tinystyle", "data_root": "models/Lora"}, 400),
    ti("folder-outside-local-empty", {"embedding_name": "tinystyle", "data_root": "{root}/evil"}, 400),
    ti("template-traversal", {"embedding_name": "tinystyle", "data_root": DATASET, "template_filename": "../../secret.txt"}, 400,
       (r"template",)),
    ti("steps-negative", {"embedding_name": "tinystyle", "data_root": DATASET, "steps": -1}, 400, (r"steps",)),
    ti("steps-word", {"embedding_name": "tinystyle", "data_root": DATASET, "steps": "many"}, 400, (r"steps",)),
    ti("width-huge", {"embedding_name": "tinystyle", "data_root": DATASET, "training_width": BIG}, 400, (r"training_width",)),
    ti("batch-zero", {"embedding_name": "tinystyle", "data_root": DATASET, "batch_size": 0}, 400, (r"batch_size",)),
    ti("batch-list", {"embedding_name": "tinystyle", "data_root": DATASET, "batch_size": [1]}, 400, (r"batch_size",)),
    ti("dropout-nan", raw_json(f'{{"embedding_name": "tinystyle", "data_root": "{DATASET}", "tag_drop_out": NaN}}'), "4xx",
       (r"tag_drop_out",)),
]

# On a server shared on the network (--listen) a training folder outside the data folder is refused (403).
SHARED_OUTSIDE = {"dotdot": "../evil", "absolute": "{root}/evil", "tmp": "/tmp", "home": "~", "root": "/", "deep-dotdot": "train-data/../../evil"}
SHARED_CASES: list[Case] = [
    post(f"shared-train-lora-folder-{label}", LORA, {"train_data_dir": value}, 403, (r"inside the data folder",), then=nothing_outside)
    for label, value in SHARED_OUTSIDE.items()
] + [
    post(f"shared-train-embedding-folder-{label}", "train/embedding", {"embedding_name": "x", "data_root": value}, 403,
         (r"inside the data folder",), then=nothing_outside)
    for label, value in SHARED_OUTSIDE.items()
] + [
    post("shared-train-embedding-log-outside", "train/embedding", {"embedding_name": "x", "data_root": "train-data", "log_directory": "{root}/evil"},
         403, (r"log directory",), then=nothing_outside),
    post("shared-train-lora-folder-inside-missing", LORA, {"train_data_dir": "train-data/nope"}, 400, (r"does not exist",)),
    post("shared-train-lora-folder-url-encoded-is-a-name-inside", LORA, {"train_data_dir": "..%2F..%2Fevil"}, 400, (r"does not exist",)),
]


def _resolve(case: Case, hostile) -> Case:
    """Fill `{root}` (the decoys' folder) into a case's JSON body."""
    if isinstance(case.body, (dict, list)):
        text = json.dumps(case.body).replace("{root}", str(hostile.root).replace("\\", "\\\\"))
        case = Case(**{**case.__dict__, "body": json.loads(text)})
    return case


@pytest.fixture(scope="module")
def dataset(hostile):
    """One 64 px picture with its caption in <data>/train-data/one."""
    from PIL import Image

    folder = hostile.data / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (0, 128, 128)).save(folder / "a.png")
    (folder / "a.txt").write_text("a teal square\n", encoding="utf-8")
    (hostile.data / "models" / "embeddings" / "hostile-existing.pt").write_bytes(b"")  # a name that is taken
    return folder


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_training_request(hostile, dataset, group_rss, case):
    run_case(hostile, _resolve(case, hostile))


@pytest.mark.parametrize("case", [c.param() for c in SHARED_CASES])
def test_shared_server_keeps_training_folders_inside(shared_hostile, case):
    run_case(shared_hostile, _resolve(case, shared_hostile))


def test_no_run_was_started(hostile):
    """Every body above was refused: no LoRA run folder and no new embedding file exist."""
    runs = hostile.client.get(f"{API}/{LORA}").json()
    assert runs == [], f"a hostile body started a training run: {runs}"
    made = sorted(p.name for p in (hostile.data / "models" / "embeddings").iterdir() if p.stem not in ("tinystyle", "hostile-existing"))
    assert not made, f"a hostile body created embeddings: {made}"


def test_memory_is_back_after_the_training_cases(memory_check):
    memory_check("training")
