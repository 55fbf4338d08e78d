"""Model-based ControlNet preprocessors (depth, pose, line art, soft edges, normals, lines).

The networks and their post-processing are controlnet_aux's; this module names them as the
A1111 ControlNet extension does and loads their weights from the annotator folder
(`models/ControlNetPreprocessor`) under the file names of lllyasviel/Annotators on Hugging Face
(body_pose_model.pth, dpt_hybrid-midas-501f0c75.pt, ...), a file directly in the folder or one
folder down (the extension's `annotator/downloads/<name>/` layout). Weights are read with the
weights-only reader; nothing is downloaded here. controlnet_aux is imported on first use, so
the server starts without it and a missing package is a readable error.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from modules.controlnet.preprocessors import RESOLUTION, Detect, Preprocessor, Slider, run_padded
from modules.models.weights_file import read_weights


@dataclass(frozen=True)
class Annotator:
    """The weights files of one detector, and how to build it from their state dicts."""

    files: tuple[str, ...]
    build: Callable[[list[dict]], Any]
    download: str = ""  # the catalog entry (configs/checkpoints.json) that fetches them, where it has one
    source: str = "huggingface.co/lllyasviel/Annotators"  # where they are published


def _aux():
    import warnings

    try:
        with warnings.catch_warnings():  # its import re-registers timm models and scripts a function: noise, not news
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            import controlnet_aux  # noqa: F401  (imports every detector once)
    except ImportError as exc:
        raise ValueError("The model-based ControlNet preprocessors need the controlnet_aux package "
                         f"(pip install controlnet_aux): {exc}.") from None


def _strip(state: dict, prefix: str = "module.") -> dict:
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def _eval(module):
    module.float().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _load(factory: Callable[[], Any], state: dict, strict: bool = True):
    """The network `factory` makes, holding `state`, built without first filling it with random
    numbers (a meta-device build takes the file's tensors; DPT's random init alone takes seconds).
    A network that makes tensors the file does not hold is built the ordinary way instead."""
    import torch

    with torch.device("meta"):
        model = factory()
    model.load_state_dict(state, strict=strict, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        model = factory()
        model.load_state_dict(state, strict=strict)
    return _eval(model)


# ---- builders: state dicts -> a controlnet_aux detector ----------------------------------------

def _build_openpose(states: list[dict]):
    from controlnet_aux.open_pose import OpenposeDetector
    from controlnet_aux.open_pose import util as pose_util
    from controlnet_aux.open_pose.body import Body
    from controlnet_aux.open_pose.face import Face, FaceNet
    from controlnet_aux.open_pose.face import params as face_params
    from controlnet_aux.open_pose.hand import Hand
    from controlnet_aux.open_pose.model import bodypose_model, handpose_model

    # controlnet_aux's Body/Hand/Face read their own files; these are built from weights read safely.
    def renamed(factory, state):  # the files use the original Caffe layer names
        import torch

        with torch.device("meta"):
            return pose_util.transfer(factory(), state)

    body = Body.__new__(Body)
    body.model = _load(bodypose_model, renamed(bodypose_model, states[0]))
    hand = Hand.__new__(Hand)
    hand.model = _load(handpose_model, renamed(handpose_model, states[1]))
    face = Face.__new__(Face)
    face.inference_size, face.sigma, face.threshold = (face_params["inference_img_size"], face_params["gaussian_sigma"],
                                                       face_params["heatmap_peak_thresh"])
    face.model = _load(FaceNet, states[2])
    return OpenposeDetector(body, hand, face)


def _build_midas(states: list[dict]):
    from controlnet_aux.midas import MidasDetector
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    state = states[0]
    if "optimizer" in state and "model" in state:
        state = state["model"]
    return MidasDetector(_load(lambda: DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True), state))


def _build_leres(states: list[dict]):
    from controlnet_aux.leres import LeresDetector
    from controlnet_aux.leres.leres.multi_depth_model_woauxi import RelDepthModel

    # depth_leres only: depth_leres++ needs controlnet_aux's pix2pix refiner, which parses sys.argv.
    return LeresDetector(_load(lambda: RelDepthModel(backbone="resnext101"), _strip(states[0].get("depth_model", states[0]))), None)


def _build_lineart(states: list[dict]):
    from controlnet_aux.lineart import Generator, LineartDetector

    model = _load(lambda: Generator(3, 1, 3), states[0])
    return LineartDetector(model, model)


def _build_lineart_anime(states: list[dict]):
    import functools

    import torch.nn as nn
    from controlnet_aux.lineart_anime import LineartAnimeDetector, UnetGenerator

    norm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    return LineartAnimeDetector(_load(lambda: UnetGenerator(3, 1, 8, 64, norm_layer=norm, use_dropout=False), _strip(states[0])))


def _build_hed(states: list[dict]):
    from controlnet_aux.hed import ControlNetHED_Apache2, HEDdetector

    return HEDdetector(_load(ControlNetHED_Apache2, states[0]))


def _build_pidinet(states: list[dict]):
    from controlnet_aux.pidi import PidiNetDetector
    from controlnet_aux.pidi.model import pidinet

    state = states[0].get("state_dict", states[0])
    return PidiNetDetector(_load(pidinet, _strip(state)))


def _build_normal_bae(states: list[dict]):
    from controlnet_aux.normalbae import NormalBaeDetector
    from controlnet_aux.normalbae.nets.NNET import NNET

    args = types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet", sampling_ratio=0.4, importance_ratio=0.7)
    return NormalBaeDetector(_load(lambda: NNET(args), _strip(states[0].get("model", states[0]))))


def _build_mlsd(states: list[dict]):
    from controlnet_aux.mlsd import MLSDdetector
    from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large

    return MLSDdetector(_load(MobileV2_MLSD_Large, states[0]))


def _build_teed(states: list[dict]):
    from controlnet_aux.teed import TEEDdetector
    from controlnet_aux.teed.ted import TED

    return TEEDdetector(_load(TED, states[0]))


ANNOTATORS: types.MappingProxyType[str, Annotator] = types.MappingProxyType({
    "openpose": Annotator(("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"), _build_openpose, "controlnet-annotator-openpose"),
    "midas": Annotator(("dpt_hybrid-midas-501f0c75.pt",), _build_midas),
    "leres": Annotator(("res101.pth",), _build_leres),
    "lineart": Annotator(("sk_model.pth",), _build_lineart, "controlnet-annotator-lineart"),
    "lineart_coarse": Annotator(("sk_model2.pth",), _build_lineart, "controlnet-annotator-lineart-coarse"),
    "lineart_anime": Annotator(("netG.pth",), _build_lineart_anime, "controlnet-annotator-lineart-anime"),
    "hed": Annotator(("ControlNetHED.pth",), _build_hed, "controlnet-annotator-hed"),
    "pidinet": Annotator(("table5_pidinet.pth",), _build_pidinet),
    "normal_bae": Annotator(("scannet.pt",), _build_normal_bae),
    "mlsd": Annotator(("mlsd_large_512_fp32.pth",), _build_mlsd, "controlnet-annotator-mlsd"),
    "teed": Annotator(("7_model.pth",), _build_teed, source="huggingface.co/bdsqlsz/qinglong_controlnet-lllite (Annotators/)"),
})


def find_weights(folder: Path, filename: str) -> Path | None:
    """The file in the folder, or one folder down (the extension keeps annotator/downloads/<name>/<file>)."""
    direct = folder / filename
    if direct.is_file():
        return direct
    if folder.is_dir():
        for candidate in sorted(folder.glob(f"*/{filename}")):
            if candidate.is_file():
                return candidate
    return None


def load_detector(key: str, folder: Path, device: str) -> Any:
    """Build annotator `key` from its weights in `folder`, on `device`."""
    annotator = ANNOTATORS.get(key)
    if annotator is None:
        raise ValueError(f"Unknown annotator {key!r}; known: {', '.join(ANNOTATORS)}.")
    paths = []
    for filename in annotator.files:
        path = find_weights(folder, filename)
        if path is None:
            how = (f"download them with `--download {annotator.download}` (launch.py) or put the file there"
                   if annotator.download else f"put the file there (published at {annotator.source})")
            raise ValueError(f"The annotator weights {filename} are not in {folder}; {how}.")
        paths.append(path)
    _aux()
    states = [read_weights(p, "ControlNet annotator") for p in paths]
    try:
        detector = annotator.build(states)
    except (RuntimeError, KeyError) as exc:  # missing or unexpected keys, wrong shapes
        raise ValueError(f"The annotator weights {paths[0].name} do not fit the {key} network "
                         f"(a different or damaged file?): {str(exc).splitlines()[0]}") from None
    return detector.to(device) if device and device != "cpu" else detector


# ---- detect functions: the extension's pre/post-processing around a detector ------------------

def _square(x: np.ndarray) -> dict:
    """controlnet_aux rescales to its `detect_resolution`; the padded picture already has it."""
    side = min(x.shape[:2])
    return {"detect_resolution": side, "image_resolution": side}


def _with(key: str, **options) -> Detect:
    def detect(image, resolution, a, b, ctx):
        detector = ctx.detector(key)
        return run_padded(image, resolution, lambda x: detector(x, output_type="np", **_square(x), **options))
    return detect


def _midas_normal(image, resolution, background, b, ctx):
    detector = ctx.detector("midas")

    def normal(x):
        _, result = detector(x, bg_th=float(background), depth_and_normal=True, output_type="np", **_square(x))
        return result
    return run_padded(image, resolution, normal)


def pose_json(poses: list, height: int, width: int, padded: tuple[int, int] | None = None) -> dict:
    """Poses in the extension's JSON (OpenPose's output format): per person the flat
    [x, y, confidence] lists of body, face and hands, x and y in 0..1 of the map; missing points
    are 0, 0, 0. `padded` is the (height, width) the detector saw, when the map was cut from it."""
    sy, sx = (padded[0] / height, padded[1] / width) if padded else (1.0, 1.0)

    def flat(points):
        if not points:
            return None
        return [v for p in points for v in ((float(p.x) * sx, float(p.y) * sy, 1.0) if p is not None else (0.0, 0.0, 0.0))]

    return {"people": [{"pose_keypoints_2d": flat(pose.body.keypoints), "face_keypoints_2d": flat(pose.face),
                        "hand_left_keypoints_2d": flat(pose.left_hand), "hand_right_keypoints_2d": flat(pose.right_hand)}
                       for pose in poses],
            "animals": [], "canvas_height": height, "canvas_width": width}


def _openpose(hand: bool, face: bool, body: bool = True) -> Detect:
    def detect(image, resolution, a, b, ctx):
        from controlnet_aux.open_pose import draw_poses

        detector = ctx.detector("openpose")
        found = []

        def draw(x):
            h, w = x.shape[:2]
            poses = detector.detect_poses(x, include_hand=hand, include_face=face)
            found.append((poses, (h, w)))
            return draw_poses(poses, h, w, draw_body=body, draw_hand=hand, draw_face=face)

        result = run_padded(image, resolution, draw)
        poses, padded = found[0]
        ctx.found["poses"] = pose_json(poses, result.shape[0], result.shape[1], padded)
        return result
    return detect


def _leres(image, resolution, remove_near, remove_background, ctx):
    detector = ctx.detector("leres")
    return run_padded(image, resolution, lambda x: detector(x, thr_a=float(remove_near), thr_b=float(remove_background), boost=False,
                                                             output_type="np", **_square(x)))


def _mlsd(image, resolution, value_threshold, distance_threshold, ctx):
    detector = ctx.detector("mlsd")
    return run_padded(image, resolution, lambda x: detector(x, thr_v=float(value_threshold), thr_d=float(distance_threshold),
                                                             output_type="np", **_square(x)))


def _teed(image, resolution, safe_steps, b, ctx):
    detector = ctx.detector("teed")
    return run_padded(image, resolution, lambda x: detector(x, detect_resolution=min(x.shape[:2]), safe_steps=int(safe_steps),
                                                             output_type="np"))


def _spec(name: str, detect: Detect, annotator: str, label: str = "", tags: tuple[str, ...] = (), priority: int = 0,
          threshold_a: Slider | None = None, threshold_b: Slider | None = None, resolution: Slider | None = RESOLUTION) -> Preprocessor:
    spec = ANNOTATORS[annotator]
    return Preprocessor(name, detect, label=label, tags=tags, priority=priority, threshold_a=threshold_a, threshold_b=threshold_b,
                        resolution=resolution, weights=spec.files, download=spec.download, weights_source=spec.source)


ANNOTATOR_PREPROCESSORS: tuple[Preprocessor, ...] = (
    _spec("depth", _with("midas"), "midas", label="depth_midas", tags=("Depth",), priority=100),
    _spec("normal_map", _midas_normal, "midas", label="normal_midas", tags=("NormalMap",),
          threshold_a=Slider("Normal Background Threshold", 0.4, 0.0, 1.0)),
    _spec("depth_leres", _leres, "leres", tags=("Depth",), threshold_a=Slider("Remove Near %", 0, 0, 100, 0.1),
          threshold_b=Slider("Remove Background %", 0, 0, 100, 0.1)),
    _spec("openpose", _openpose(hand=False, face=False), "openpose", tags=("OpenPose",)),
    _spec("openpose_hand", _openpose(hand=True, face=False), "openpose", tags=("OpenPose",)),
    _spec("openpose_face", _openpose(hand=False, face=True), "openpose", tags=("OpenPose",)),
    _spec("openpose_faceonly", _openpose(hand=False, face=True, body=False), "openpose", tags=("OpenPose",)),
    _spec("openpose_full", _openpose(hand=True, face=True), "openpose", tags=("OpenPose",), priority=100),
    _spec("lineart", _with("lineart"), "lineart", label="lineart_realistic", tags=("Lineart",)),
    _spec("lineart_coarse", _with("lineart_coarse", coarse=True), "lineart_coarse", tags=("Lineart",)),
    _spec("lineart_anime", _with("lineart_anime"), "lineart_anime", tags=("Lineart",)),
    _spec("hed", _with("hed"), "hed", label="softedge_hed", tags=("SoftEdge",)),
    _spec("hed_safe", _with("hed", safe=True), "hed", label="softedge_hedsafe", tags=("SoftEdge",)),
    _spec("scribble_hed", _with("hed", scribble=True), "hed", tags=("Scribble", "SparseCtrl")),
    _spec("pidinet", _with("pidinet"), "pidinet", label="softedge_pidinet", tags=("SoftEdge",), priority=100),
    _spec("pidinet_safe", _with("pidinet", safe=True), "pidinet", label="softedge_pidisafe", tags=("SoftEdge",)),
    _spec("pidinet_scribble", _with("pidinet", scribble=True), "pidinet", label="scribble_pidinet",
          tags=("Scribble", "SparseCtrl"), priority=100),
    _spec("pidinet_sketch", _with("pidinet", apply_filter=True), "pidinet", label="t2ia_sketch_pidi",
          tags=("T2I-Adapter",)),
    _spec("softedge_teed", _teed, "teed", tags=("SoftEdge",), threshold_a=Slider("Safe Steps", 2, 0, 10, 1)),
    _spec("normal_bae", _with("normal_bae"), "normal_bae", tags=("NormalMap",), priority=100),
    _spec("mlsd", _mlsd, "mlsd", tags=("MLSD",), priority=100,
          threshold_a=Slider("MLSD Value Threshold", 0.1, 0.01, 2.0), threshold_b=Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0)),
)
