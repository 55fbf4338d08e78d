"""The checkpoint list, the selected checkpoint and the one loaded model.

Owned by the app object and used only from the job worker for loading (so a switch never
happens mid-generation); listing and hashing are safe from any thread. Switching drops every
reference to the old model before loading the new one, so RAM and VRAM are given back
(A1111's best-known leak).

The *selected* checkpoint is A1111's `sd_model_checkpoint` setting (the page's dropdown, the
API's options). A job may ask for another one (the API's override_settings); each job makes
sure of its own model when it starts, so a queue of jobs for different models never runs one
on another's model.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Collection

from modules.generation.speed import SpeedOptions
from modules.models import tiny  # light: it imports torch only when it builds the model
from modules.models.catalog import CheckpointInfo, HashCache, find_checkpoints, resolve
from modules.models.hints import ModelHints

if TYPE_CHECKING:
    from modules.generation.devices import DeviceSettings
    from modules.models.flow_loader import PartFolders
    from modules.models.loaded import LoadedModel

log = logging.getLogger(__name__)

MAX_HELD = 2  # models held beside the active one: a job's refiner and its hires checkpoint

TINY_NOTICE = (
    "Using the tiny test model with random weights: it draws coloured noise, not pictures. "
    "Put a Stable Diffusion checkpoint (.safetensors) in models/Stable-diffusion/ and press refresh."
)


@dataclass(frozen=True)
class ActiveModel:
    info: CheckpointInfo
    model: LoadedModel
    hints: ModelHints = ModelHints()

    @property
    def is_tiny_random(self) -> bool:
        return self.info.path.name == tiny.FILE_NAME


class ModelManager:
    def __init__(
        self,
        ckpt_dirs: tuple[Path, ...],
        configs_dir: Path,
        devices: Callable[[], "DeviceSettings"],
        hashes: HashCache,
        extra_ckpt: Path | None = None,
        builtin: tuple[Path, ...] = (),
        parts: "PartFolders | None" = None,
    ):
        """`devices` is called once, on first use: probing CUDA imports torch, which the page
        should not wait for. `builtin` checkpoints ship with the app (the demo model): always
        listed, wherever the models folder is, and loaded at start only when the user has no
        checkpoint of their own. `parts`: where Flux/SD3 files without their text encoders or VAE
        find them (models/text_encoder, models/VAE)."""
        self.ckpt_dirs = ckpt_dirs
        self.builtin = tuple(Path(p) for p in builtin)
        self.configs_dir = configs_dir
        self.parts = parts
        self._device_factory = devices
        self._devices: DeviceSettings | None = None
        self.hashes = hashes
        self.extra_ckpt = extra_ckpt
        self._lock = threading.Lock()
        self._checkpoints: list[CheckpointInfo] = []
        self._active: ActiveModel | None = None
        # A job's refiner and hires checkpoint, held beside the active one by path, the one asked for last at the end.
        self._others: dict[Path, ActiveModel] = {}
        self._places: dict[Path, str | None] = {}  # where each is on a plan that keeps models whole (place_of)
        self._selected: Path | None = None  # A1111's sd_model_checkpoint: what jobs without their own choice use
        self._unload_listeners: list[Callable[[], None]] = []
        self._learned_hints: dict[str, ModelHints] = {}  # by file name, from Ray workers that loaded it
        self.speed = SpeedOptions()  # model-wide speed options (use_speed); a change reloads the model before its next job
        self._loaded_speed: SpeedOptions | None = None  # what the loaded model was built with
        self.refresh()

    @property
    def devices(self) -> "DeviceSettings":
        with self._lock:
            if self._devices is None:
                self._devices = self._device_factory()
            return self._devices

    # -- listing -------------------------------------------------------------------------

    def refresh(self) -> list[CheckpointInfo]:
        dirs = list(self.ckpt_dirs) + ([self.extra_ckpt] if self.extra_ckpt else []) + list(self.builtin)
        found = find_checkpoints(dirs, self.hashes)
        with self._lock:
            self._checkpoints = found
        return found

    @property
    def checkpoints(self) -> list[CheckpointInfo]:
        with self._lock:
            return list(self._checkpoints)

    def titles(self) -> list[str]:
        return [c.title for c in self.checkpoints]

    def find(self, query: str) -> CheckpointInfo | None:
        """By title, name or hash (A1111's lookups), or by path (what `--ckpt` gives)."""
        try:
            path = Path(query).expanduser()
            real = path.resolve() if path.exists() else None
        except (OSError, RuntimeError, ValueError):  # too long for the file system, ~nosuchuser, a NUL byte: not a path
            real = None
        if real is not None:
            for info in self.checkpoints:
                if info.path.resolve() == real:
                    return info
        return resolve(query, self.checkpoints)

    def _startup_rank(self, info: CheckpointInfo) -> int:
        """0: the user's own checkpoint, 1: shipped with the app (the demo), 2: the tiny
        random-weights model."""
        if info.path.name == tiny.FILE_NAME:
            return 2
        return 1 if info.path.resolve() in {p.resolve() for p in self.builtin} else 0

    def startup_order(self) -> list[CheckpointInfo]:
        """Checkpoints in the order start-up tries them: the user's own, then the shipped
        demo model, and the tiny random-weights model only as a last resort."""
        return sorted(self.checkpoints, key=self._startup_rank)

    def has_user_checkpoint(self) -> bool:
        """Whether the user has a checkpoint of their own (the demo and tiny models do not
        count): without one, first start fetches the default checkpoint as A1111 does."""
        return any(self._startup_rank(info) == 0 for info in self.checkpoints)

    def add_unload_listener(self, listener: Callable[[], None]) -> None:
        """Called when the active model is dropped: whoever caches objects built on it
        must let go, or the old weights stay in memory through the switch."""
        self._unload_listeners.append(listener)

    def hash_all(self) -> None:
        """Fill in every checkpoint's hash (slow for big files; run it off the request path)."""
        for info in self.checkpoints:
            self.hashes.sha256(info.path, compute=True)
        self.refresh()

    def ensure_default(self) -> None:
        """With no checkpoint at all, write the tiny random model so the UI can start offline."""
        if self.checkpoints:
            return
        target = self.ckpt_dirs[0] / tiny.FILE_NAME
        log.warning("No checkpoint found in %s: writing the tiny test model (random weights) to %s.", self.ckpt_dirs[0], target)
        tiny.write_tiny_checkpoint(target, self.configs_dir)
        self.refresh()

    # -- the loaded model ------------------------------------------------------------------

    def hints(self) -> ModelHints:
        """The page's guide, examples and defaults for the model in use: the loaded one's, or
        with Ray workers (nothing loaded here) what a worker that loaded the selected one said."""
        if self._active is not None:
            return self._active.hints
        current = self.current
        return self._learned_hints.get(current.filename, ModelHints()) if current is not None else ModelHints()

    def learn_hints(self, filename: str, data: dict) -> None:
        """A Ray worker loaded `filename` and read these hints from its config folder."""
        try:
            self._learned_hints[filename] = ModelHints.parse(data)
        except ValueError:
            pass

    @property
    def active(self) -> ActiveModel | None:
        return self._active

    def require(self, query: str) -> CheckpointInfo:
        """A checkpoint by title, name, hash or path, or a ValueError that lists the choices."""
        info = self.find(query)
        if info is None:
            known = ", ".join(self.titles()) or "none"
            raise ValueError(f"Checkpoint not found: '{query}'. Available: {known}.")
        return info

    @property
    def selected(self) -> CheckpointInfo | None:
        """A1111's sd_model_checkpoint: the checkpoint jobs submitted now run on unless they
        ask for another."""
        if self._selected is None:
            return None
        return next((c for c in self.checkpoints if c.path == self._selected), None)

    @property
    def current(self) -> CheckpointInfo | None:
        """What to show as the checkpoint in use: the selected one, else the loaded one (an
        API job may have loaded another for itself)."""
        return self.selected or (self._active.info if self._active is not None else None)

    def select(self, query: str) -> CheckpointInfo | None:
        """Make a checkpoint the selected one now, before it is loaded, so jobs submitted from
        now on are pinned to it. Returns the previous selection, to go back to if it will
        not load (see `reselect`)."""
        info = self.require(query)
        previous = self.selected
        self._selected = info.path
        return previous

    def reselect(self, failed: CheckpointInfo, previous: CheckpointInfo | None) -> None:
        """`failed` would not load: select `previous` again, unless someone chose another since."""
        if self._selected == failed.path:
            self._selected = previous.path if previous is not None else None

    def pin(self, query: str | None = None) -> str | None:
        """The checkpoint a job submitted now will run on, as a path: `query`, else the
        selected one. Recorded with the job, it holds through other users' switches and
        through a restart."""
        if query:
            return str(self.require(query).path)
        return str(self._selected) if self._selected is not None else None

    def ensure(self, query: str | None = None) -> ActiveModel:
        """The model a job runs on: `query` (what `pin` gave), else the selected checkpoint,
        else whatever is loaded. Loads only when it is not the active one already; never
        changes the selection."""
        target = query or self.pin()
        if target:
            return self.load(target, select=False)
        if self._active is not None and not self._speed_current():  # new speed options: reload it
            return self.load(str(self._active.info.path), select=False)
        return self._active or self.load()

    def load(self, query: str | None = None, select: bool = True) -> ActiveModel:
        """Load a checkpoint by title, name or hash (the first in start-up order if None),
        freeing the old one first. `select` makes it the selected checkpoint too."""
        info = self.require(query) if query else next(iter(self.startup_order()), None)
        if info is None:
            raise ValueError("No checkpoint found: put a .safetensors file in models/Stable-diffusion/.")
        if self._active is not None and self._active.info.path == info.path and self._speed_current():
            if select:
                self._selected = info.path
            return self._active
        previous = self._active.info if self._active is not None else None
        self.unload()  # free the old weights first: two big models may not fit side by side
        try:
            self._active = self._load(info)
        except Exception as exc:  # broken file, out of memory...: go back to what the user had
            if previous is not None:
                log.warning("Going back to %s", previous.title)
                try:
                    self._active = self._load(previous)
                except Exception as again:
                    log.error("Could not reload %s either: %s", previous.title, again)
            if isinstance(exc, ValueError):
                raise
            raise ValueError(f"Could not load checkpoint {info.title}: {type(exc).__name__}: {exc}") from exc
        finally:
            self.refresh()
        if select:
            self._selected = info.path
        if self._active.is_tiny_random:
            log.warning(TINY_NOTICE)
        return self._active

    def ensure_other(self, query: str, keep: "Collection[Path]" = ()) -> ActiveModel:
        """A checkpoint a job uses beside its own (A1111's refiner, the hires checkpoint): the
        active model when it is that one, else loaded and held beside it. Up to two are held (a
        job may use both a refiner and a different hires checkpoint); a third drops one the job
        does not use (`keep`: the paths of those it does), so a running job never loses a model
        it still calls. On an offloading memory plan (--medvram, --lowvram, or the plan chosen
        from the VRAM) their parts take turns on the GPU with the active model's, so whichever
        model is idle waits in system RAM. On a plan that keeps models whole, each stays whole
        on the GPU when the card has room for it beside the others, else they take turns as
        with --medvram (see `_place_other`)."""
        info = self.require(query)
        if self._active is not None and self._active.info.path == info.path:
            return self._active
        held = self._others.get(info.path)
        if held is not None and self._speed_current():
            self._others[info.path] = self._others.pop(info.path)  # the one asked for last
            self._place_other(info.path)
            return held
        if held is not None:  # built with other speed options
            self.drop_other(info.path)
        wanted = {Path(p) for p in keep} | {info.path}
        while len(self._others) >= MAX_HELD:
            self.drop_other(next((p for p in self._others if p not in wanted), next(iter(self._others))))
        self._others[info.path] = self._load(info, beside=self._active)
        self._places[info.path] = None
        self._place_other(info.path)
        return self._others[info.path]

    @property
    def others(self) -> tuple[ActiveModel, ...]:
        """The models held beside the active one, the one asked for last at the end."""
        return tuple(self._others.values())

    @property
    def other(self) -> ActiveModel | None:
        """The held model asked for last (None when none is held)."""
        return next(reversed(self._others.values()), None)

    def place_of(self, path: Path) -> str | None:
        """Where a held model is on a plan that keeps models whole: "gpu" (whole, beside the
        active one), "turns" (it takes turns with the active one, as with --medvram) or "ram"
        (parked); None when it is not held, on an offloading plan (its turns were set at load)
        or off CUDA."""
        return self._places.get(Path(path))

    @property
    def other_place(self) -> str | None:
        """`place_of` the held model asked for last."""
        other = self.other
        return self.place_of(other.info.path) if other is not None else None

    def held_on_gpu(self) -> int:
        """Bytes of the held models' weights whole on the GPU beside the active one (0 when they
        take turns, wait in RAM or none is held): room an untiled VAE decode no longer has."""
        from modules.generation.offload import weight_bytes

        return sum(weight_bytes(m.model) for path, m in self._others.items() if self._places.get(path) == "gpu")

    def _free_vram(self) -> int | None:
        """Bytes the CUDA device can still give (its free memory plus torch's reusable cache);
        None off CUDA, where the models share the system's memory and both simply stay."""
        device = self.devices.device
        if device.type != "cuda":
            return None
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)

    def _place_other(self, path: Path) -> None:
        """Put a held model where it runs, on a plan that keeps its family whole. It stays whole
        on the GPU when the free VRAM (with the active model and any other held one there)
        holds its weights plus the family's working memory or an untiled 1-megapixel decode,
        whichever is more (devices.FAMILIES; the tiled-VAE cap was set for one model on the
        card); else all the models take turns as on the "model" plan, so the idle ones wait in
        system RAM (SDXL's base 6.5 GiB and refiner ~6 GiB do not fit a 12-16 GB card together;
        A1111 keeps the idle checkpoint in RAM too). Once some take turns, another joins them."""
        other, active, devices = self._others[path], self._active, self.devices
        if devices.memory.offload_for(other.model.arch) != "none":
            self._places[path] = None
            return
        if self._places.get(path) in ("gpu", "turns"):
            return
        from modules.generation.devices import DECODE_GIB_PER_MP, FAMILIES, GIB, family
        from modules.generation.offload import keep_whole, offload, weight_bytes

        free = self._free_vram()
        if free is None:
            keep_whole(other.model, devices.device)
            return
        need = FAMILIES[family(other.model.arch)]
        scale = 2.0 if devices.dtype.itemsize >= 4 else 1.0
        decode = DECODE_GIB_PER_MP * (2.0 if devices.vae_dtype.itemsize >= 4 else 1.0)
        turns = "turns" in self._places.values()
        if active is None or (not turns and weight_bytes(other.model) + max(need.working * scale, decode) * GIB <= free):
            keep_whole(other.model, devices.device)
            self._places[path] = "gpu"
            return
        if not turns:
            log.info("%s and %s do not fit the GPU together: they take turns, the idle one waiting in system RAM.",
                     active.info.title, other.info.title)
            offload(active.model, devices.device, "model")  # the active model's parts go to RAM until they run
        for held, place in list(self._places.items()):  # those whole on the GPU join the turns too: the card has no room for all
            if held == path or place == "gpu":
                offload(self._others[held].model, devices.device, "model", beside=active.model)
                self._places[held] = "turns"

    def park_other(self, keep: "Collection[Path]" = ()) -> None:
        """A job that does not use a held model sends it to system RAM instead of leaving it on
        the GPU (`keep`: the paths of the held models the job uses), and once none takes turns,
        the active model goes whole again (on a plan that keeps models whole; with offloading
        their turns send them home anyway). Kept in RAM rather than dropped, as A1111 keeps an
        idle checkpoint (sd_checkpoints_keep_in_cpu): users switch the refiner on and off between
        jobs, and moving ~6 GiB back to the GPU is faster than reading the file again; RAM is
        what it took while it was loaded anyway."""
        kept = {Path(p) for p in keep}
        idle = [p for p, place in self._places.items() if place in ("gpu", "turns") and p not in kept]
        if not idle:
            return
        from modules.generation.devices import free_memory
        from modules.generation.offload import keep_whole

        devices = self.devices
        had_turns = "turns" in self._places.values()
        for path in idle:
            keep_whole(self._others[path].model, "cpu")
            self._places[path] = "ram"
        if had_turns and "turns" not in self._places.values() and self._active is not None:
            keep_whole(self._active.model, devices.device)
        free_memory(devices.device)

    def drop_other(self, path: Path | None = None, restore: bool = True) -> None:
        """Free a held model (`path`; every one when None); if the last ones taking turns with
        the active model are gone, it goes whole onto the GPU again (`restore`; not when it is
        being dropped too)."""
        paths = [p for p in self._others if path is None or p == Path(path)]
        if not paths:
            return
        from modules.generation.devices import free_memory
        from modules.generation.offload import keep_whole, leave

        had_turns = "turns" in self._places.values()
        for p in paths:
            model = self._others.pop(p).model
            if self._places.pop(p, None) == "turns":
                keep_whole(model, "cpu")  # its last part to run leaves the GPU before the active one comes back
            leave(model)
        free_memory(self.devices.device)
        if had_turns and "turns" not in self._places.values() and restore and self._active is not None:
            keep_whole(self._active.model, self.devices.device)

    def _speed_current(self) -> bool:
        """Whether the loaded model was built with the model-wide speed options asked for now."""
        return self._loaded_speed == self.speed.model_part()

    def use_speed(self, options: "SpeedOptions") -> None:
        """New speed options (Settings > Optimizations, or the flags): TF32 switches at once;
        the others apply when a model loads, so the loaded one reloads before the next job."""
        from modules.generation.speed import set_tf32

        self.speed = options
        if self._devices is not None:
            set_tf32(self._devices.device, options.tf32)

    def _apply_speed(self, model, devices: "DeviceSettings") -> None:
        from dataclasses import replace

        from modules.generation.speed import apply, set_tf32

        options = self.speed
        if options.compile != "none" and devices.memory.offload_for(model.arch) != "none":
            log.warning("torch.compile is not used with --medvram/--lowvram: the offload hooks move weights between the model's parts.")
            options = replace(options, compile="none")
        if options.compile != "none" and options.fp8_for(model.arch):
            log.warning("torch.compile is not used with FP8 weight storage: casting each layer's weights breaks the compiled graph at every layer.")
            options = replace(options, compile="none")
        set_tf32(devices.device, options.tf32)
        applied = apply(model, options)
        if applied:
            log.info("Speed options: %s", ", ".join(applied))
        self._loaded_speed = self.speed.model_part()

    def _load(self, info: CheckpointInfo, beside: ActiveModel | None = None) -> ActiveModel:
        import torch

        from modules.generation.devices import apply_attention
        from modules.models.loader import load_checkpoint

        info = self.hashes.attach(info)
        devices = self.devices
        log.info("Loading %s on %s", info.title, devices.describe())
        # --medvram/--lowvram (given or chosen from the VRAM, per family): load into system RAM;
        # offload() then moves parts in while they run (or, for a family the plan keeps whole, all of it).
        # A model loaded beside the active one goes to RAM first: _place_other decides whether it fits the GPU.
        where = torch.device("cpu") if devices.offloads or beside is not None else devices.device
        model = load_checkpoint(info.path, configs_dir=self.configs_dir, device=where, dtype=devices.dtype, vae_dtype=devices.vae_dtype,
                                parts=self.parts)
        apply_attention(model.unet, devices)
        self._apply_speed(model, devices)
        if beside is not None and devices.memory.offload_for(model.arch) == "none":
            pass  # a plan that keeps it whole: ensure_other places it
        elif devices.offloads:
            from modules.generation.offload import offload

            offload(model, devices.device, devices.memory.offload_for(model.arch), beside=beside.model if beside is not None else None)
        return ActiveModel(info, model, ModelHints.read(model.extra.get("config_folder")))

    def unload(self) -> None:
        self.drop_other(restore=False)
        if self._active is None:
            return
        from modules.generation.devices import free_memory

        self._active = None
        for listener in self._unload_listeners:
            listener()
        free_memory(self.devices.device)
