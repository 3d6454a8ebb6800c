import torch

from lib_seg.hooks import HookRegistry, remove_leftovers
from lib_seg.params import SegSettings
from lib_seg.session import NO_ROWS, SegSession


def test_registry_removes_everything_newest_first_even_if_one_undo_fails():
    module = torch.nn.Linear(2, 2)
    registry = HookRegistry()
    order = []
    registry.forward_pre_hook(module, lambda m, a: None)
    registry.forward_hook(module, lambda m, a, o: None)
    registry.replace(module, "forward", lambda x: x)
    registry.on_remove(lambda: order.append("first"))
    registry.on_remove(lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    registry.on_remove(lambda: order.append("last"))
    assert len(registry) == 6
    failures = registry.remove_all()
    assert len(failures) == 1 and "boom" in failures[0]
    assert order == ["last", "first"]
    assert not module._forward_hooks and not module._forward_pre_hooks and "forward" not in vars(module)
    assert len(registry) == 0


def test_replace_restores_a_previous_instance_attribute():
    class Box:
        value = "class"
    box = Box()
    box.value = "instance"
    registry = HookRegistry()
    registry.replace(box, "value", "patched")
    assert box.value == "patched"
    registry.remove_all()
    assert box.value == "instance"


def test_leftover_registries_are_cleared():
    module = torch.nn.Linear(2, 2)
    registry = HookRegistry()
    registry.forward_hook(module, lambda m, a, o: None)
    assert remove_leftovers() >= 1
    assert not module._forward_hooks


def test_session_context_closes_on_exception():
    module = torch.nn.Linear(2, 2)
    session = SegSession(SegSettings(enabled=True))
    try:
        with session:
            session.registry.forward_hook(module, lambda m, a, o: None)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert not module._forward_hooks and session.closed


def test_call_cursor_maps_chunked_calls_to_their_rows():
    session = SegSession(SegSettings(enabled=True))
    # rows: 2 cond, 2 SEG, 2 uncond; evaluated in chunks of 2, then of 4 + 2, then all at once
    session.begin_step(6, slice(2, 4))
    assert [session.begin_call(2, (8, 8)).seg for _ in range(3)] == [NO_ROWS, slice(0, 2), NO_ROWS]
    session.begin_step(6, slice(2, 4))
    assert [session.begin_call(n, (8, 8)).seg for n in (4, 2)] == [slice(2, 4), NO_ROWS]
    session.begin_step(6, slice(2, 4))
    assert session.begin_call(6, (8, 8)).seg == slice(2, 4)
    # a chunk straddling the SEG rows, and a call beyond the step's rows (not ours)
    session.begin_step(5, slice(1, 3))
    assert session.begin_call(2, (8, 8)).seg == slice(1, 2)
    assert session.begin_call(2, (8, 8)).seg == slice(0, 1)
    assert session.begin_call(2, (8, 8)).seg == NO_ROWS
    session.end_step()
    assert session.begin_call(3, (8, 8)).seg == NO_ROWS


def test_step_activity_follows_settings():
    assert not SegSession(SegSettings(enabled=False)).step_active(0, 10)
    assert not SegSession(SegSettings(enabled=True, scale=0.0)).step_active(0, 10)
    session = SegSession(SegSettings(enabled=True, start=0.5, end=1.0))
    assert [session.step_active(i, 5) for i in range(5)] == [False, False, True, True, True]
