"""Model-based preprocessors: each runs end to end from weights files in the annotator folder.

The networks are controlnet_aux's own classes with random weights, written under the
lllyasviel/Annotators file names and key layouts; random weights draw noise, so these tests
check the plumbing (loading, scaling, the map's size and mode) and the missing-file message.
"""

from __future__ import annotations

import functools
import types

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("controlnet_aux")

from modules.controlnet import annotators  # noqa: E402
from modules.controlnet.preprocessors import Preprocessors  # noqa: E402


def _random_state(factory, seed: int | None) -> dict:
    """A state dict of the network's shapes filled with small random numbers (fp16, to keep files
    small), or zeros when `seed` is None (openpose: random heatmaps would find hundreds of people)."""
    with torch.device("meta"):
        model = factory()
    gen = torch.Generator().manual_seed(seed or 0)
    state = {}
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            state[name] = torch.zeros(t.shape, dtype=t.dtype)
        elif name.endswith("running_var"):
            state[name] = torch.ones(t.shape, dtype=torch.float16)
        elif seed is None:
            state[name] = torch.zeros(t.shape, dtype=torch.float16)
        else:
            state[name] = (torch.randn(t.shape, generator=gen) * 0.05).to(torch.float16)
    return state


def _networks():
    import torch.nn as nn
    from controlnet_aux.hed import ControlNetHED_Apache2
    from controlnet_aux.lineart import Generator
    from controlnet_aux.leres.leres.multi_depth_model_woauxi import RelDepthModel
    from controlnet_aux.lineart_anime import UnetGenerator
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel
    from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large
    from controlnet_aux.normalbae.nets.NNET import NNET
    from controlnet_aux.open_pose.face import FaceNet
    from controlnet_aux.open_pose.model import bodypose_model, handpose_model
    from controlnet_aux.pidi.model import pidinet
    from controlnet_aux.teed.ted import TED

    def caffe_names(state):  # the openpose files drop the first part of each key
        return {".".join(k.split(".")[1:]): v for k, v in state.items()}

    norm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    bae_args = types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet", sampling_ratio=0.4, importance_ratio=0.7)
    return {
        "body_pose_model.pth": lambda: caffe_names(_random_state(bodypose_model, None)),
        "hand_pose_model.pth": lambda: caffe_names(_random_state(handpose_model, None)),
        "facenet.pth": lambda: _random_state(FaceNet, None),
        "res101.pth": lambda: {"depth_model": {"module." + k: v for k, v in _random_state(lambda: RelDepthModel(backbone="resnext101"), 13).items()}},
        "dpt_hybrid-midas-501f0c75.pt": lambda: _random_state(lambda: DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True), 4),
        "sk_model.pth": lambda: _random_state(lambda: Generator(3, 1, 3), 5),
        "sk_model2.pth": lambda: _random_state(lambda: Generator(3, 1, 3), 6),
        "netG.pth": lambda: {"module." + k: v for k, v in _random_state(lambda: UnetGenerator(3, 1, 8, 64, norm_layer=norm, use_dropout=False), 7).items()},
        "ControlNetHED.pth": lambda: _random_state(ControlNetHED_Apache2, 8),
        "table5_pidinet.pth": lambda: {"state_dict": {"module." + k: v for k, v in _random_state(pidinet, 9).items()}},
        "scannet.pt": lambda: {"model": _random_state(lambda: NNET(bae_args), 10)},
        "mlsd_large_512_fp32.pth": lambda: _random_state(MobileV2_MLSD_Large, 11),
        "7_model.pth": lambda: _random_state(TED, 12),
    }


class WeightsFolder:
    """An annotator folder whose random-weight files are written when a test first needs them."""

    def __init__(self, folder):
        self.folder = folder
        self.networks = _networks()

    def holding(self, *filenames: str):
        for filename in filenames:
            if not (self.folder / filename).is_file():
                torch.save(self.networks[filename](), self.folder / filename)
        return self.folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> WeightsFolder:
    return WeightsFolder(tmp_path_factory.mktemp("ControlNetPreprocessor"))


@pytest.fixture(scope="module")
def weights_dir(weights):
    return weights.holding("ControlNetHED.pth", "sk_model.pth")


@pytest.fixture(scope="module")
def preprocessors(weights):
    return Preprocessors(weights.folder, cache_size=2)


def picture(width=96, height=64) -> Image.Image:
    return Image.fromarray(np.random.RandomState(0).randint(0, 255, (height, width, 3), np.uint8))


# One module per network and post-processing path (the openpose variants share one detector, and
# each openpose run costs seconds: its body network works at 368 px whatever the picture).
MODULES = ["depth_midas", "normal_midas", "depth_leres", "openpose_full", "lineart_realistic", "lineart_coarse", "lineart_anime",
           "softedge_hed", "scribble_hed", "softedge_pidinet", "scribble_pidinet", "t2ia_sketch_pidi", "softedge_teed",
           "normal_bae", "mlsd"]
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # random weights, huge logits


def test_every_model_preprocessor_is_tested_or_shares_a_tested_detector():
    tested = {annotators_key(m) for m in MODULES}
    assert tested == set(annotators.ANNOTATORS)
    assert {p.label or p.name for p in annotators.ANNOTATOR_PREPROCESSORS} >= set(MODULES)


def annotators_key(module: str) -> str:
    spec = next(p for p in annotators.ANNOTATOR_PREPROCESSORS if module in (p.name, p.label))
    return next(k for k, a in annotators.ANNOTATORS.items() if a.files == spec.weights)


# Networks of 50M to 125M parameters: seconds each to write, load and run on a busy CPU.
HEAVY = {"depth_midas", "normal_midas", "depth_leres", "openpose_full", "lineart_anime", "normal_bae"}


@pytest.mark.parametrize("module", [pytest.param(m, marks=pytest.mark.slow) if m in HEAVY else m for m in MODULES])
def test_model_preprocessor_runs_from_its_weights_files(weights, preprocessors, module):
    weights.holding(*preprocessors.get(module).weights)
    found = preprocessors.detect(module, picture(), resolution=64)
    out = found.image
    assert out.mode == "RGB"
    assert out.size == (96, 64)  # short side = the resolution, aspect kept
    assert np.asarray(out).dtype == np.uint8
    if module.startswith("openpose"):  # zero weights find nobody; the extension's JSON says so
        assert found.poses == {"people": [], "animals": [], "canvas_height": 64, "canvas_width": 96}
    else:
        assert found.poses is None


def test_pose_json_keeps_points_where_they_are_on_the_map():
    from controlnet_aux.open_pose import PoseResult
    from controlnet_aux.open_pose.body import BodyResult, Keypoint

    # the detector saw a 128x64 padded picture; the map is its left 96x64
    body = BodyResult(keypoints=[Keypoint(0.5, 0.25), None], total_score=1.0, total_parts=1)
    pose = PoseResult(body, left_hand=None, right_hand=[Keypoint(0.0, 1.0)], face=None)
    out = annotators.pose_json([pose], 64, 96, padded=(64, 128))
    person = out["people"][0]
    assert person["pose_keypoints_2d"] == pytest.approx([64 / 96, 0.25, 1.0, 0.0, 0.0, 0.0])
    assert person["hand_right_keypoints_2d"] == pytest.approx([0.0, 1.0, 1.0])
    assert person["hand_left_keypoints_2d"] is None and person["face_keypoints_2d"] is None
    assert (out["canvas_width"], out["canvas_height"]) == (96, 64)


def test_missing_weights_name_the_file_the_folder_and_the_download(tmp_path):
    empty = Preprocessors(tmp_path / "ControlNetPreprocessor")
    with pytest.raises(ValueError) as err:
        empty.run("openpose_full", picture())
    message = str(err.value)
    assert "body_pose_model.pth" in message and "ControlNetPreprocessor" in message
    assert "--download controlnet-annotator-openpose" in message
    assert [p.name for p in empty.missing_weights("openpose_full")] == ["body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"]
    assert empty.missing_weights("canny") == []


def test_weights_one_folder_down_are_found(tmp_path, weights_dir):
    # the extension keeps annotator/downloads/<annotator>/<file>
    (tmp_path / "hed").mkdir()
    (tmp_path / "hed" / "ControlNetHED.pth").write_bytes((weights_dir / "ControlNetHED.pth").read_bytes())
    found = Preprocessors(tmp_path)
    assert found.missing_weights("softedge_hed") == []
    assert found.run("softedge_hed", picture(64, 64), 64).size == (64, 64)


def test_a_file_of_the_wrong_network_is_a_readable_error(tmp_path, weights_dir):
    (tmp_path / "ControlNetHED.pth").write_bytes((weights_dir / "sk_model.pth").read_bytes())
    with pytest.raises(ValueError, match="do not fit the hed network"):
        Preprocessors(tmp_path).run("softedge_hed", picture(64, 64), 64)


def test_model_preprocessors_are_listed_with_the_extension_names(preprocessors):
    labels = preprocessors.labels()
    for label in ("depth_midas", "normal_midas", "openpose_full", "lineart_realistic", "lineart_anime", "softedge_hed",
                  "softedge_pidinet", "scribble_pidinet", "t2ia_sketch_pidi", "normal_bae", "mlsd", "softedge_teed"):
        assert label in labels
    assert preprocessors.get("depth").display_name == "depth_midas"
    assert preprocessors.get("lineart").display_name == "lineart_realistic"
    types_ = preprocessors.control_types(["control_v11p_sd15_openpose [cab727d4]"])
    assert types_["OpenPose"]["default_option"] == "openpose_full"
    assert types_["Depth"]["default_option"] == "depth_midas"
    assert types_["SoftEdge"]["default_option"] == "softedge_pidinet"
    assert preprocessors.module_detail()["mlsd"]["sliders"][1] == {"name": "MLSD Value Threshold", "value": 0.1, "min": 0.01, "max": 2.0, "step": 0.01}


def test_catalog_entries_fetch_the_files_the_annotators_read():
    from modules.models.downloadable import MODEL_FOLDERS, Catalog

    catalog = Catalog.load()
    for key, annotator in annotators.ANNOTATORS.items():
        if not annotator.download:
            continue
        entry = catalog.find(annotator.download)
        assert entry is not None, key
        fetched = [entry.filename] + [catalog.find(name).filename for name in entry.also]
        assert fetched == list(annotator.files), key
        assert {entry.folder} | {catalog.find(name).folder for name in entry.also} == {"ControlNetPreprocessor"}
        assert len(entry.sha256) == 64 and entry.size > 0
    assert "ControlNetPreprocessor" in MODEL_FOLDERS  # so `--download` may write there


def test_missing_weights_without_a_catalog_entry_say_where_they_are_published(tmp_path):
    with pytest.raises(ValueError, match="dpt_hybrid-midas-501f0c75.pt.*published at huggingface.co/lllyasviel/Annotators"):
        Preprocessors(tmp_path).run("depth_midas", picture())
