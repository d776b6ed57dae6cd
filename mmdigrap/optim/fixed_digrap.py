"""``mmdigrap.FixedDiGraP``: DiGraP with a frozen projection strength (PCGrad-style ablation)."""
import warnings
from typing import Iterable, Optional, Tuple

from torch import Tensor
from torch.optim import Optimizer

from ._checks import check_number
from .digrap import DiGraP

__all__ = ['FixedDiGraP']

NamedParams = Optional[Iterable[Tuple[str, Tensor]]]


class FixedDiGraP(DiGraP):
    r"""DiGraP with a fixed projection strength: the PCGrad-style ablation (algorithm.md §13.8).

    Where ``<g, theta - theta0> < 0`` the gradient loses ``omega`` times its component along
    ``theta - theta0``; elsewhere it is unchanged; then the base optimizer steps. omega never
    changes (``DiGraP(trainable=False, omega_init=omega)``). Unlike the authors' earlier
    ``optimizer/pcgrad.py`` the regularisation gradient is not added and the projection is over
    the whole tensor (not row-wise): it isolates what training omega brings.

    Args:
        base_optimizer: an already built optimizer.
        omega: the fixed strength, >= 0 (1 = full projection onto the plane orthogonal to
            ``theta - theta0``; > 1 over-projects and warns; 0 = the base optimizer alone).
        anchor, anchor_dtype, exclude, named_parameters: as for :class:`DiGraP`.

    Per param group: DiGraP's keys, with ``omega_init`` = the fixed omega (so
    ``paramwise_cfg=dict(custom_keys={'neck': dict(omega_init=0.5)})`` fixes another strength
    there) and ``trainable=False``.

    State per managed tensor: ``anchor`` (S), ``omega`` and two unused hyper-moments, and
    ``prev_coef`` (0-d) -- no projection buffer (lean mode is exact when omega is frozen).
    Memory beyond the base optimizer: 1P (0 for PEFT).

    Raises:
        ValueError: ``omega`` negative, not a number or not finite.
    """

    method = 'digrap_fixed'

    def __init__(self, base_optimizer: Optimizer, *, omega: float = 1.0,
                 anchor: str = 'pretrained', anchor_dtype=None, exclude: Iterable[str] = (),
                 named_parameters: NamedParams = None):
        omega = check_number('FixedDiGraP', 'omega', omega, 0.0,
                             'use omega=1.0 for a full projection (0 = no projection)')
        if omega == 0:
            warnings.warn('FixedDiGraP: omega=0 never projects; this is the base optimizer '
                          'alone. Use omega=1.0 for the full projection.', UserWarning,
                          stacklevel=2)
        elif omega > 1:
            warnings.warn(f'FixedDiGraP: omega={omega} > 1 over-projects (pushes the update '
                          'towards theta0); the paper keeps omega in [0, 1].', UserWarning,
                          stacklevel=2)
        super().__init__(base_optimizer, mu=0.0, omega_max=max(1.0, omega), omega_init=omega,
                         trainable=False, store_projection=False, anchor=anchor,
                         anchor_dtype=anchor_dtype, exclude=exclude,
                         named_parameters=named_parameters)

    def extra_repr(self) -> str:
        return f'omega={self.omega_init}'
