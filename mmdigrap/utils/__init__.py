"""Small helpers shared by the package and the tools (no projection math here)."""
from .misc import markdown_table, unwrap_model
from .stats import PairedDiff, mean_std, paired_difference, t_quantile

__all__ = ['markdown_table', 'unwrap_model', 'PairedDiff', 'mean_std', 'paired_difference',
           't_quantile']
