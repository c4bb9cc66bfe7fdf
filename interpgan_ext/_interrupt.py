"""Stop requests for long loops: SIGINT (Ctrl-C) and SIGTERM (a cluster's preemption, `kill`) ask the loop to stop
at the end of the current step, so that it can save a consistent checkpoint, instead of killing it mid-step.

The first Ctrl-C puts the previous handler back, so a second one interrupts at once (for when a step is too long to
wait for). Repeated SIGTERMs are absorbed: schedulers send SIGKILL after their grace period anyway.
Handlers can only be installed from the main thread; elsewhere the loop runs without them, as before.
"""
import signal
import sys
import threading


class StopRequests:
    """Context manager; `.signal_name` is None until a stop is requested, then "SIGINT" or "SIGTERM"."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                previous = signal.signal(sig, self._handle)
                self._previous[sig] = signal.SIG_DFL if previous is None else previous  # None: set outside Python
        return self

    def _handle(self, signum, frame):
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            again = "; press Ctrl-C again to stop at once, without saving" if signum == signal.SIGINT else ""
            print(f"\n{self.signal_name} received: finishing this step, then saving a checkpoint{again}",
                  file=sys.stderr, flush=True)
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, self._previous[signal.SIGINT])

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        return False
