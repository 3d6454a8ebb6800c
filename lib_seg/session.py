"""One SEG sampling pass: the settings, every patch it installed, and which batch rows are SEG rows.

Hosts extend a step's batch with SEG copies of the conditional rows, then evaluate that batch in one
UNet call or in several (chunks, or cond and uncond apart when their token lengths differ). Attention
patches only see the rows of their own call, so the session maps each call to its rows by position:
- ``begin_step(n_rows, seg)`` announces the layout of the whole step's batch,
- ``begin_call(n_rows, latent_hw)`` is called at the start of each UNet call; hosts evaluate rows in
  order, so a cursor tells which rows this call holds (A1111),
- or ``set_call(seg, latent_hw)`` when the host hands us the call's batch itself (Forge).
Attention patches read ``session.call``.
"""
from dataclasses import dataclass

from .grid import token_grid
from .guidance import step_is_active
from .hooks import HookRegistry

NO_ROWS = slice(0, 0)


@dataclass(frozen=True)
class CallRows:
    """The SEG rows of one UNet call (a slice of the call's batch) and the latent size it runs at."""
    seg: slice
    latent_hw: tuple
    text_tokens: int = 0  # text tokens ahead of a DiT's single-stream image tokens (not known here: no such model)
    copies: object = None  # lib_seg.prefix.Copies: rows of this call that copy other rows of it (shared prefix)

    @property
    def has_seg(self):
        return self.seg.stop > self.seg.start

    @property
    def perturbed(self):
        """The rows whose attention is perturbed: here the slice ``seg`` (OSEG's uncond rows are part of it)."""
        return self.seg

    def grid(self, n_tokens):
        return token_grid(self.latent_hw, n_tokens)


def has_rows(rows, n_rows=None):
    """Whether `rows` (a slice, a LongTensor of row indices, or None) names any row (of a call of n_rows rows)."""
    if rows is None:
        return False
    if isinstance(rows, slice):
        return rows.start < rows.stop and (n_rows is None or rows.stop <= n_rows)
    return rows.numel() > 0 and (n_rows is None or int(rows.max()) < n_rows)


def _copies_in(copies, start, stop):
    """The copies of a step that a call of rows [start, stop) holds whole, with their sources, relative to start;
    None when the call lacks any of them (it then computes every row)."""
    if copies is None:
        return None
    seg, source = copies.seg, copies.source
    if not (start <= seg.start and seg.stop <= stop and start <= source.start and source.stop <= stop):
        return None
    return type(copies)(slice(seg.start - start, seg.stop - start), slice(source.start - start, source.stop - start))


def _overlap(rows, start, stop):
    """The part of `rows` inside [start, stop), relative to start."""
    lo, hi = max(rows.start, start), min(rows.stop, stop)
    return slice(lo - start, hi - start) if hi > lo else NO_ROWS


class SegSession:
    def __init__(self, settings):
        self.settings = settings
        self.registry = HookRegistry()
        self.call = None
        self._step_rows = None  # (n_rows, seg slice, copies) of the current step's whole batch
        self._cursor = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False

    def close(self):
        """Remove every patch of this pass. Safe to call more than once."""
        self.end_step()
        return self.registry.remove_all()

    @property
    def closed(self):
        return len(self.registry) == 0

    def step_active(self, step, total_steps):
        s = self.settings
        return s.active and step_is_active(step, total_steps, s.start, s.end)

    def begin_step(self, n_rows, seg=NO_ROWS, copies=None):
        """The step's batch has n_rows rows; `seg` (a slice) are the rows whose attention is perturbed; `copies`
        (lib_seg.prefix.Copies with slices) says which rows are copies of which, for the shared prefix."""
        self._step_rows = (n_rows, seg, copies)
        self._cursor = 0
        self.call = None

    def end_step(self):
        self._step_rows = None
        self.call = None

    def begin_call(self, n_rows, latent_hw):
        """A UNet call of n_rows rows starts; it holds the next n_rows rows of the step's batch."""
        latent_hw = tuple(int(v) for v in latent_hw)
        if self._step_rows is None:
            self.call = CallRows(NO_ROWS, latent_hw)
            return self.call
        total, seg, copies = self._step_rows
        start, stop = self._cursor, self._cursor + n_rows
        self._cursor = stop
        # A call beyond the announced rows is not ours (e.g. another extension running the UNet): no SEG.
        rows = _overlap(seg, start, stop) if stop <= total else NO_ROWS
        self.call = CallRows(rows, latent_hw, copies=_copies_in(copies, start, stop) if stop <= total else None)
        return self.call

    def set_call(self, seg, latent_hw):
        self.call = CallRows(seg, tuple(int(v) for v in latent_hw))
        return self.call

    def end_call(self):
        self.call = None
