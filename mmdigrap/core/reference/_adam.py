"""The hand-written Adam direction shared by the baseline references (Kingma & Ba 2015)."""
import math

__all__ = ['adam_direction']


def adam_direction(p, g, m, v, k, lr, betas, eps):
    """Update Adam's moments in place and return the step ``d_p`` (theta~ = p - d_p)."""
    b1, b2 = betas
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = v.sqrt() / math.sqrt(1 - b2 ** k) + eps
    return (lr / (1 - b1 ** k)) * m / denom
