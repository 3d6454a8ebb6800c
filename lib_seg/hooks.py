"""Every patch the extension makes goes through a HookRegistry, and one call takes them all back.

Hosts differ in what they patch (torch module hooks, instance attributes, WebUI callbacks, a cloned
UNet patcher), but all of it must be gone after a generation, also when it raised or was interrupted.
"""
import weakref

_MISSING = object()
# Registries that still hold patches; a new generation can clear what a crashed one left behind.
_LIVE = weakref.WeakSet()


class HookRegistry:
    def __init__(self, name="seg"):
        self.name = name
        self._undo = []  # (description, undo function), newest last

    def __len__(self):
        return len(self._undo)

    def on_remove(self, undo, what="callback"):
        """Register an arbitrary undo function, run by remove_all()."""
        self._undo.append((what, undo))
        _LIVE.add(self)

    def forward_pre_hook(self, module, fn, **kwargs):
        handle = module.register_forward_pre_hook(fn, **kwargs)
        self.on_remove(handle.remove, f"forward pre-hook on {type(module).__name__}")
        return handle

    def forward_hook(self, module, fn, **kwargs):
        handle = module.register_forward_hook(fn, **kwargs)
        self.on_remove(handle.remove, f"forward hook on {type(module).__name__}")
        return handle

    def replace(self, obj, attr, value):
        """Set obj.attr = value; undo restores the previous instance attribute, or deletes ours so the
        class attribute shows through again (the host may swap class-level methods meanwhile)."""
        previous = vars(obj).get(attr, _MISSING) if hasattr(obj, "__dict__") else getattr(obj, attr, _MISSING)
        setattr(obj, attr, value)

        def undo():
            if previous is _MISSING:
                if attr in vars(obj):
                    delattr(obj, attr)
            else:
                setattr(obj, attr, previous)

        self.on_remove(undo, f"{type(obj).__name__}.{attr}")

    def remove_all(self):
        """Undo everything, newest first. One failing undo does not stop the others; failures are
        returned (and printed) rather than raised, since this runs in `finally` blocks."""
        failures = []
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as error:  # keep going: a half-removed patch set is the worst outcome
                failures.append(f"{what}: {error!r}")
        _LIVE.discard(self)
        for failure in failures:
            print(f"[SEG] could not remove {failure}")
        return failures


def remove_leftovers():
    """Remove patches of registries that were never closed (a host path that skipped our cleanup)."""
    count = 0
    for registry in list(_LIVE):
        count += len(registry)
        registry.remove_all()
    return count
