"""An injected clock (wall and monotonic alike) that tests move by hand: ``clock.t += 5``."""


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t
