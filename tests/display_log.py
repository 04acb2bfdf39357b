"""A stand-in for IPython's `display` that records what a widget displays, for tests of live/static figures."""


class FakeHandle:
    """What `display(..., display_id=True)` returns: `update` is logged instead of redrawn."""

    def __init__(self, log, obj):
        self.log, self.obj = log, obj

    def update(self, obj, **kwargs):
        self.log.append(("update", self.obj, obj, kwargs))


def fake_display(log):
    """A `display` that appends ("display", obj, kwargs) to `log` and returns a handle when asked for one."""
    def display(obj, **kwargs):
        log.append(("display", obj, kwargs))
        return FakeHandle(log, obj) if kwargs.get("display_id") else None
    return display
