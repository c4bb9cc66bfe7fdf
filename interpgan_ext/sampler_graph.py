"""The Langevin chain of LangevinSampler captured as one CUDA graph, then replayed (`LangevinSampler(cuda_graph=True)`).

On a GPU a training step is bound by the host, not by the device: each Langevin step (G's forward to the target
layer, the energy, their backward, the update) dispatches ~40 ops, each a launch the host issues. Captured once, the
chain's steps are one launch per call.

What a graph replays is what it read at capture: the storage of z, of q, and of G's and the energy's tensors, and the
Python state of G's forward (BatchNorm momenta, train/eval modes, autocast) and of the sampler (step size, clip).
The chain therefore works on static copies of z and q, and is captured again whenever any of the rest changes: new
shapes, a parameter moved or reallocated (`G.to(...)`), a module switched between train and eval. Parameters updated
in place (an optimizer step, `load_state_dict`) need no new capture: the replay reads their new values. Forward
hooks added to G after a capture are not in it. A G whose forward syncs with the host (`.item()`, data-dependent
shapes) cannot be captured: the sampler then warns once and runs the steps eagerly.

The noise is the caller's generator's: the graph's own generator takes its state for each replay and hands it back
after, so a graphed chain draws what the eager one draws, and leaves the generator where the eager one would.
"""
import itertools
import warnings
from contextlib import nullcontext
from typing import Callable, List, Optional

import torch

WARMUP_STEPS = 3  # eager steps on a side stream before a capture: they create cuBLAS/cuDNN handles and workspaces
# A capture costs a synchronisation and the warm-up steps: when the chain's inputs keep changing (batch sizes that
# alternate, say), graphs cost more than they save. After this many captures, fewer than two replays per capture
# ends the graphs (CaptureFailed: the sampler warns and runs eagerly).
CAPTURES_BEFORE_A_VERDICT = 4


def graphs_available(z: torch.Tensor) -> bool:
    """True where the chain at z may be captured: a CUDA tensor, not inside a compile. (A torch older than 2.5
    captures no generator but the default one: its capture fails, and the sampler runs eagerly, with a warning.)"""
    return z.is_cuda and hasattr(torch.cuda, "CUDAGraph") and not torch.compiler.is_compiling()


class CudaGraphCapture:
    """Captures `fn(n_steps)` as a CUDA graph, after warm-up runs on a side stream; `replay()` runs it again.
    `generator`, where given, is registered with the graph: each replay draws from its state at that time."""

    def __init__(self, fn: Callable[[int], list], n_steps: int, device: torch.device,
                 generator: Optional[torch.Generator]):
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            fn(WARMUP_STEPS)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # A generator other than the default one must be registered with the graph from torch 2.5; later releases
        # register it themselves, and the call is then a no-op that warns it is deprecated.
        if generator is not None and hasattr(self.graph, "register_generator_state"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.graph.register_generator_state(generator)
        stream = torch.cuda.current_stream(device)
        try:
            with torch.cuda.graph(self.graph):
                self.outputs = fn(n_steps)
        except BaseException:
            # torch.cuda.graph's exit ends the capture before it gives the stream back; when a capture that went wrong
            # makes that end fail too, its capture stream would stay the current one
            torch.cuda.set_stream(stream)
            raise

    def replay(self) -> None:
        self.graph.replay()


def default_generator(device: torch.device) -> torch.Generator:
    return torch.cuda.default_generators[device.index or 0] if device.type == "cuda" else torch.default_generator


class GraphedChain:
    """`n` steps of `sampler` on static z and q, captured on first use and whenever what they read changes.

    The Langevin noise: with a generator given, the graph draws from a generator of its own, which takes the given
    one's state for each replay and hands it back after; with none, from the device's default generator, as the eager
    chain does (G's own random ops, such as StyleGAN2's noise inputs, draw from that one either way).
    `capture` builds the graph (CudaGraphCapture; a test may give a stand-in that runs on the CPU)."""

    def __init__(self, sampler, capture=CudaGraphCapture):
        self.sampler, self.capture = sampler, capture
        self.key = None
        self.graph = None
        self.z: Optional[torch.Tensor] = None
        self.q: Optional[torch.Tensor] = None
        self.gen: Optional[torch.Generator] = None  # the graph's own generator; None: the default one
        self.captures = self.runs = 0

    def _key(self, z: torch.Tensor, q: torch.Tensor, n: int, own_generator: bool) -> tuple:
        G, energy = self.sampler.extractor.G, self.sampler.energy  # a new G or energy: their tensors are new too
        modules = list(G.modules()) + list(energy.modules())
        tensors = itertools.chain.from_iterable(itertools.chain(m.parameters(recurse=False), m.buffers(recurse=False))
                                                for m in modules)
        state = tuple((m.training, getattr(m, "momentum", None), getattr(m, "num_batches_tracked", 0) is None)
                      for m in modules)
        s = self.sampler
        return (tuple(z.shape), z.dtype, z.device, tuple(q.shape), q.device, n, own_generator,
                torch.is_autocast_enabled(), s.step_size, s.prior_weight, s.drift_clip, state,
                tuple((t.data_ptr(), t.dtype) for t in tensors))

    def _steps(self, n: int) -> List[torch.Tensor]:
        """n steps on the static z (in place); each step's energies."""
        return [self.sampler.step(self.z, self.q, self.gen) for _ in range(n)]

    def run(self, z: torch.Tensor, q: torch.Tensor, n: int, generator: Optional[torch.Generator] = None):
        """(z after n steps, [g_W at each step]); z and q are not changed. The energies are the graph's own
        tensors: the next run overwrites them. CaptureFailed where the steps cannot be captured."""
        if generator is not None and generator.device.type != z.device.type:
            raise RuntimeError(f"langevin_step: expected a generator on {z.device}, but got one on {generator.device}")
        with torch.cuda.device(z.device) if z.is_cuda else nullcontext():  # the graph's streams are z's device's
            key = self._key(z, q, n, generator is not None)
            self.runs += 1
            if key != self.key:
                if self.captures >= CAPTURES_BEFORE_A_VERDICT and self.runs < 2 * self.captures:
                    raise CaptureFailed(f"the Langevin chain's CUDA graph was captured {self.captures} times in "
                                        f"{self.runs - 1} runs: what it reads keeps changing (the batch size, G's "
                                        "parameters or modes)")
                self._capture(z, q, n, generator is not None)
                self.captures += 1
                self.key = key
            self.z.copy_(z)
            self.q.copy_(q)
            if generator is not None:
                self.gen.set_state(generator.get_state())
            self.graph.replay()
            if generator is not None:
                generator.set_state(self.gen.get_state())
        return self.z.clone(), self.graph.outputs

    def _capture(self, z, q, n, own_generator: bool):
        self.graph = self.key = None  # the old graph's memory goes back before the new capture
        self.z, self.q = torch.empty_like(z, memory_format=torch.contiguous_format), q.clone()
        self.z.copy_(z)
        self.gen = torch.Generator(z.device) if own_generator else None
        # The warm-up steps run for real: what they write into G's buffers (BatchNorm statistics outside
        # frozen_batchnorm_stats) and what they draw from the default generator are undone.
        buffers = [(b, b.clone()) for b in self.sampler.extractor.G.buffers()]
        default = default_generator(z.device)
        drawn = default.get_state()
        try:
            self.graph = self.capture(self._steps, n, z.device, self.gen)
        except Exception as e:  # a sync in G's forward: "operation not permitted when stream is capturing", ...
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CaptureFailed(f"the Langevin chain could not be captured as a CUDA graph ({why})") from e
        finally:
            default.set_state(drawn)
            for b, saved in buffers:  # through .data: a graph of the caller's that saved b stays valid
                b.data.copy_(saved)


class CaptureFailed(RuntimeError):
    """The chain's steps cannot run as a CUDA graph; the message says why."""
