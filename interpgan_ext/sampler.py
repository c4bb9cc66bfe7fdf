"""Feature capture at a named layer, and the Langevin sampler of SPEC §4."""
import warnings
from contextlib import contextmanager
from typing import Callable, Optional

import torch
from torch import nn

from .ops import langevin_step
from .sampler_graph import CaptureFailed, GraphedChain, graphs_available


class _StopForward(Exception):
    """Raised by the capture hook to end G's forward at the target layer."""


def _version(t) -> Optional[int]:
    """t's version counter (in-place writes move it); None where there is none (inference tensors, non-tensors)."""
    return t._version if isinstance(t, torch.Tensor) and not t.is_inference() else None


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module at dotted path `name`; a clear error lists the valid names otherwise."""
    modules = dict(model.named_modules())
    if name not in modules:
        names = [n for n in modules if n]
        raise KeyError(f"no layer named {name!r} in {type(model).__name__}; layers: {', '.join(names[:40])}"
                       + (" ..." if len(names) > 40 else ""))
    return modules[name]


class FeatureExtractor:
    """Runs G and returns the output f of one layer. With `stop=True` the forward ends there (G is not
    run past the target layer, which the energy does not need).

    A full forward (`images_and_features`) runs the modules after the layer too, and one of them may overwrite the
    layer's output in place (`nn.ReLU(inplace=True)` after a BatchNorm chosen as the layer): f would then be that
    module's output, while `features`, which stops at the layer, reads the layer's own. So the first full forward
    keeps a copy of f and checks whether the output was written afterwards; if it was, every later one copies f too
    (`copy_output`), else none does."""

    def __init__(self, G: nn.Module, layer: str):
        self.G, self.layer_name = G, layer
        self.layer = get_layer(G, layer)
        self.copy_output: Optional[bool] = None  # unknown until the first full forward

    @contextmanager
    def _hook(self, store: dict, stop: bool, edit: Optional[Callable] = None, copy: bool = False):
        def hook(module, inputs, output):
            if edit is not None:
                output = edit(output)
            store["f"] = output.clone() if copy and isinstance(output, torch.Tensor) else output
            store["calls"] = store.get("calls", 0) + 1
            if stop:
                raise _StopForward
            # a full forward goes on: images_and_features then checks whether a later module wrote the output
            store["output"], store["version"] = output, _version(output)
            return output

        handle = self.layer.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def features(self, z: torch.Tensor, *args, edit: Optional[Callable] = None, **kwargs) -> torch.Tensor:
        store = {}
        with self._hook(store, stop=True, edit=edit):
            try:
                self.G(z, *args, **kwargs)
            except _StopForward:
                pass
        if "f" not in store:
            raise RuntimeError(f"layer {self.layer_name!r} was not called in G's forward")
        return store["f"]

    def images_and_features(self, z: torch.Tensor, *args, model: Optional[nn.Module] = None, **kwargs):
        """G(z) and the target layer's output from one full forward; `model` runs it instead of G (e.g. G
        wrapped in DistributedDataParallel: the hook sits on the shared layer either way).

        The layer must run once per forward. A module that G calls twice (shared weights) has two outputs, and
        `features`, which stops at the first, would train on another f than this: a ValueError instead."""
        store = {}
        with self._hook(store, stop=False, copy=self.copy_output is not False):
            x = (model or self.G)(z, *args, **kwargs)
        calls = store.get("calls", 0)
        if calls != 1:
            raise ValueError(f"layer {self.layer_name!r} ran {calls} times in one forward of G; the target layer "
                             "must run exactly once (choose a module that G calls once)")
        written = store["version"] is not None and _version(store["output"]) != store["version"]
        if self.copy_output is None:
            self.copy_output = written
        elif written and not self.copy_output:  # G wrote it in place this time only (data-dependent control flow)
            raise RuntimeError(f"layer {self.layer_name!r}: its output was overwritten in place later in G's forward, "
                               "and not in the first forward; set copy_output = True on this FeatureExtractor")
        return x, store["f"]


class LangevinSampler:
    """T Langevin steps on z under log P = g_W(f_G(z)) - prior_weight * ||z||^2 / 2 (SPEC §4).

    Each step runs G up to the target layer only, takes d g_W / dz by autograd, and applies the fused
    `langevin_step`. G's parameters get no gradient.
    """

    def __init__(self, G: nn.Module, layer: str, energy, steps: int = 10, step_size: float = 0.1,
                 prior_weight: float = 1.0, drift_clip: Optional[float] = 1.0, cuda_graph: bool = False):
        if steps < 0 or step_size < 0:
            raise ValueError(f"LangevinSampler: steps and step_size must be >= 0, got {steps}, {step_size}")
        self.extractor = FeatureExtractor(G, layer)
        self.energy, self.steps, self.step_size = energy, steps, step_size
        self.prior_weight, self.drift_clip = prior_weight, drift_clip
        # cuda_graph: on a GPU, the steps without an edit run as one captured CUDA graph (sampler_graph.py)
        if cuda_graph and not isinstance(energy, nn.Module):
            raise ValueError(f"LangevinSampler: cuda_graph=True needs the energy as an nn.Module (a replay reads the "
                             f"tensors it held at capture, so they are tracked), got {type(energy).__name__}")
        self.cuda_graph = cuda_graph
        self._graphed = None

    @property
    def uses_cuda_graph(self) -> bool:
        """True once the chain has run as a CUDA graph (and has not fallen back to running eagerly)."""
        return self._graphed is not None and self._graphed.graph is not None

    def energy_grad(self, z: torch.Tensor, q: torch.Tensor, edit: Optional[Callable] = None):
        """(d g_W / dz, g_W) at z, from a forward of G up to the layer."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            return self.energy_grad_of(self.extractor.features(z, edit=edit), z, q, retain_graph=False)

    def energy_grad_of(self, f: torch.Tensor, z: torch.Tensor, q: torch.Tensor, retain_graph: bool = True):
        """(d g_W / dz, g_W) from features f that a forward of G at z has already computed, with its graph kept
        (z requires grad). By default the graph is retained, for the caller's own backward."""
        g = self.energy(f, q)
        (grad,) = torch.autograd.grad(g.sum(), z, retain_graph=retain_graph)
        return grad, g.detach()

    def step(self, z: torch.Tensor, q: torch.Tensor, generator: Optional[torch.Generator] = None,
             edit: Optional[Callable] = None, first=None) -> torch.Tensor:
        """One step on z, in place; returns g_W at z. `first`: (grad, g) at z where the caller has them."""
        grad, g = first if first is not None else self.energy_grad(z, q, edit)
        langevin_step(z, grad.to(z.dtype), self.step_size, self.prior_weight, self.drift_clip, generator=generator,
                      out=z)
        return g

    def sample(self, z: torch.Tensor, q: torch.Tensor, generator: Optional[torch.Generator] = None,
               edit: Optional[Callable] = None, return_energies: bool = False, first=None):
        """z after `steps` steps (a new tensor). With return_energies, also g_W at each step [T, B].

        `first`: (grad, g) at z, where the caller has them (`energy_grad_of`: the trainer takes them from its own
        forward of G); the first step then runs no forward of its own."""
        z = z.detach().clone()
        energies = []
        if first is not None and self.steps > 0:
            energies.append(self.step(z, q, generator, first=first))
        left = self.steps - len(energies)
        if left and self.cuda_graph and edit is None and graphs_available(z):
            z, graphed = self._run_graphed(z, q, left, generator)
            energies += graphed
            left = self.steps - len(energies)
        for _ in range(left):
            energies.append(self.step(z, q, generator, edit))
        if return_energies:
            return z, torch.stack(energies) if energies else torch.empty(0, z.shape[0])
        return z

    def _run_graphed(self, z, q, n, generator):
        """(z after n graphed steps, their energies), or (z, []) after a warning where the steps cannot run as a graph
        (G's forward cannot be captured, or must be captured again at almost every call): the sampler then runs
        eagerly from there on."""
        if self._graphed is None:
            self._graphed = GraphedChain(self)
        try:
            return self._graphed.run(z, q, n, generator)
        except CaptureFailed as e:
            self.cuda_graph, self._graphed = False, None
            warnings.warn(f"LangevinSampler: {e}; it runs eagerly from now on")
            return z, []
